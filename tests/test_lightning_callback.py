"""The Lightning callback on the real Lightning `Trainer` (CPU), a small MLP on digits.

What `watch()` records must come out of a loop the user does not own: per-layer
gradient norms read before `gradient_clip_val` clips them, update ratios, activations,
accuracy from the module's logits, validation metrics from what the module logs,
skipped AMP steps and accumulated steps; beside Lightning's own logger in one run dir,
which the analyzers read as one run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

L = pytest.importorskip("lightning.pytorch")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from collector_helpers import diagnosed_by_the_cli, read_scalars  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from trainscope.analyzers.reading import read_logdir  # noqa: E402
from trainscope.collectors.lightning_callback import TrainScopeCallback  # noqa: E402
from trainscope.logformat import runjson as RJ  # noqa: E402
from trainscope.logformat import tags as T  # noqa: E402

LAYERS = ("net.0", "net.2", "net.4")
CLIP = 0.05  # far below the norms of this model's gradients: every step is clipped


class DigitsModule(L.LightningModule):
    def __init__(self, lr: float = 0.1, inf_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)
        )
        self.clipped_norms: list[float] = []  # what the optimizer got, after clipping

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        if self.hparams.inf_at is not None and self.global_step == self.hparams.inf_at:
            loss = loss * float("inf")  # the GradScaler finds inf gradients and skips this step
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def loaders(digits, batch: int = 32) -> tuple[DataLoader, DataLoader]:
    X, y = digits
    g = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(X[:1400], y[:1400]), batch_size=batch, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(X[1400:], y[1400:]), batch_size=200)
    return train, val


def fit(tmp_path: Path, digits, module: DigitsModule, *, steps: int, **trainer_args) -> TrainScopeCallback:
    callback = TrainScopeCallback(every=10, stats_budget=None)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=steps,
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        val_check_interval=20,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **trainer_args,
    )
    trainer.fit(module, *loaders(digits))
    return callback


def collector_scalars(callback: TrainScopeCallback) -> dict[str, dict[int, float]]:
    """The collector's own event file only (Lightning's logger writes beside it)."""
    return read_scalars(callback.collector.event_file)


@pytest.mark.parametrize("logger", ["tensorboard", "csv"])
def test_a_lightning_run_records_what_watch_records_and_is_diagnosed(tmp_path, digits, logger):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    module = DigitsModule()
    logs = (TensorBoardLogger if logger == "tensorboard" else CSVLogger)(tmp_path)
    callback = fit(tmp_path, digits, module, steps=60, gradient_clip_val=CLIP, logger=logs)
    log_dir = Path(callback.collector.log_dir)
    assert log_dir == tmp_path / "lightning_logs" / "version_0"  # beside Lightning's logger
    scalars = collector_scalars(callback)

    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(60))  # one point per optimizer step
    for layer in LAYERS:
        assert len(scalars[T.grad_norm_tag(layer)]) == 60
        assert sorted(scalars[T.update_ratio_tag(layer)]) == [0, 10, 20, 30, 40, 50]
        assert sorted(scalars[T.weight_norm_tag(layer)]) == [0, 10, 20, 30, 40, 50]
    assert set(scalars[T.dead_fraction_tag("net.1")]) == {0, 10, 20, 30, 40, 50}
    assert set(scalars[T.saturated_fraction_tag("net.3")]) == {0, 10, 20, 30, 40, 50}
    assert len(scalars[T.TRAIN_ACC]) == 60  # from the module's logits and the batch's labels
    assert scalars[T.LR][0] == pytest.approx(0.1)
    # Read in on_before_optimizer_step: before clipping, so far above the clip.
    assert min(scalars[T.GRAD_GLOBAL_NORM].values()) > 5 * CLIP
    # Validation every 20 steps (not the sanity check), from what the module logs.
    assert sorted(scalars[T.VAL_LOSS]) == [19, 39, 59]
    assert sorted(scalars[T.VAL_ACC]) == [19, 39, 59]
    assert all(0.0 <= v <= 1.0 for v in scalars[T.VAL_ACC].values())

    run_json = json.loads((log_dir / RJ.RUN_JSON).read_text())
    assert run_json[RJ.K_STATUS] == RJ.STATUS_FINISHED
    assert run_json[RJ.K_STEPS] == 60
    assert run_json[RJ.K_HPARAMS]["lr"] == 0.1  # save_hyperparameters()
    assert run_json[RJ.K_BATCH_SIZE] == 32
    assert not module._forward_hooks  # the callback's and the collector's hooks are gone

    # Lightning's own log (events, or metrics.csv and hparams.yaml) and ours: one run.
    runs = read_logdir(tmp_path).runs
    assert list(runs) == ["lightning_logs/version_0"]
    assert runs["lightning_logs/version_0"].source == "trainscope"
    report = diagnosed_by_the_cli(tmp_path)
    assert [r["run"] for r in report["runs"]] == ["lightning_logs/version_0"]
    skipped = {s["rule"] for s in report["runs"][0]["skipped"]}
    for rule in ("vanishing_gradients", "dead_relu", "saturated_activations", "overfitting", "lr_too_low"):
        assert rule not in skipped, rule  # per-layer norms, activations, validations, update ratios


def test_the_update_ratio_is_the_optimizer_step(tmp_path, digits):
    """‖Δw‖/‖w‖ of a sampled step against a direct computation: SGD's first step
    (no momentum yet) moves each weight by lr times its clipped gradient."""
    module = DigitsModule(lr=0.1)
    weights = {}

    class Snapshot(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 0:
                weights["before"] = [p.detach().clone() for p in pl_module.net[0].parameters()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 1:
                weights.setdefault("after", [p.detach().clone() for p in pl_module.net[0].parameters()])

    callback = TrainScopeCallback(every=10, stats_budget=None)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        callbacks=[Snapshot(), callback],
        accelerator="cpu",
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    trainer.fit(module, loaders(digits)[0])
    before, after = weights["before"], weights["after"]
    delta = math.sqrt(sum(((a - b) ** 2).sum().item() for a, b in zip(after, before)))
    norm = math.sqrt(sum((b**2).sum().item() for b in before))
    ratio = collector_scalars(callback)[T.update_ratio_tag("net.0")][0]
    assert ratio == pytest.approx(delta / norm, rel=1e-4)


def test_accumulated_batches_are_one_step(tmp_path, digits):
    callback = fit(tmp_path, digits, DigitsModule(), steps=10, accumulate_grad_batches=4)
    scalars = collector_scalars(callback)
    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(10))  # optimizer steps, not batches
    assert T.STEP_SKIPPED not in scalars  # every recorded step stepped
    run_json = json.loads((Path(callback.collector.log_dir) / RJ.RUN_JSON).read_text())
    assert run_json[RJ.K_BATCH_SIZE] == 4 * 32  # the optimizer step's batch
    assert run_json[RJ.K_HPARAMS]["accumulate_grad_batches"] == 4
    # The step's loss is the mean of its micro-batches' (Lightning divides each by 4).
    assert 1.0 < scalars[T.TRAIN_LOSS][0] < 4.0  # ln 10 = 2.3 at the start


def test_a_step_the_grad_scaler_skips_is_marked(tmp_path, digits):
    from lightning.pytorch.plugins.precision import MixedPrecision

    amp = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    callback = fit(tmp_path, digits, DigitsModule(inf_at=5), steps=12, plugins=[amp])
    scalars = collector_scalars(callback)
    assert scalars[T.STEP_SKIPPED] == {5: 1.0}
    assert math.isinf(scalars[T.GRAD_GLOBAL_NORM][5]) or math.isnan(scalars[T.GRAD_GLOBAL_NORM][5])
    assert T.LOSS_SCALE in scalars  # the precision plugin's scaler was handed to watch()
    assert scalars[T.LOSS_SCALE][5] == scalars[T.LOSS_SCALE][4] / 2  # halved by the inf step
