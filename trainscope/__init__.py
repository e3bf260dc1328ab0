"""TrainScope: training-run diagnostics and advice for PyTorch.

One import namespace for everything a user installs::

    from trainscope import watch            # the collector (needs torch)
    from trainscope.analyzers import ...    # readers and rules (no torch, no UI)

and one command, ``trainscope dashboard [LOGDIR]`` / ``trainscope diagnose LOGDIR``.

In the repository the parts keep their own top-level folders (``collectors/``,
``analyzers/``, ``logformat/``, ``sample_runs/``, ``app/``); the package build maps
them under ``trainscope`` (pyproject.toml), so nothing but ``trainscope`` lands in
site-packages and a user's own ``collectors`` package cannot clash with ours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainscope.collectors import Collector, CollectorConfig, watch

__all__ = ["Collector", "CollectorConfig", "watch"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The collector imports torch; reading logs and the dashboard do not need it, so it
    # is imported only when asked for.
    if name in __all__:
        from trainscope import collectors

        return getattr(collectors, name)
    raise AttributeError(f"module 'trainscope' has no attribute {name!r}")
