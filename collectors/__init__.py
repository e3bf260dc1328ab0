"""Collectors: instrument a PyTorch training loop with one call.

from trainscope.collectors import watch
collector = watch(model, optimizer, log_dir="runs/exp1", hparams={"batch_size": 64})
...
collector.step(loss=loss, outputs=out, targets=y, inputs=x)
"""

from trainscope.collectors.collector import Collector, watch
from trainscope.collectors.config import CollectorConfig

__all__ = ["Collector", "CollectorConfig", "watch"]
