"""The training loop of the sample runs: the plain loop a user writes, with the collector attached.

One loop for every case. Most faults live in the case's data, model, initialization
or optimizer settings; the few that live in the loop a user writes are named fields
of `Case`, each honoured at one marked line here: no ``optimizer.zero_grad()``
(`Case.zero_grad`), gradient clipping (`Case.clip_grad_norm`; what
``clip_grad_norm_`` returns is passed to the collector as ``grad_norm``, as its
docs ask) and single steps at a multiple of the learning rate (`Case.lr_pulse_steps`,
set before the step as a schedule sets it, so ``opt/lr`` records it).

A language model's logits (B, T, vocab) and targets (B, T) go to the loss, the
accuracy and the collector flattened, as ``logits.view(-1, V)`` and ``y.view(-1)``
(`as_loss_takes`): what a user of such a model passes; ``inputs`` are the token ids.

Deterministic: fixed seeds and one CPU thread, so the same case gives the same
numbers on the same machine, bit for bit (wall times aside).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainscope.collectors import watch
from trainscope.logformat import runjson as RJ
from trainscope.sample_runs.cases import Case
from trainscope.sample_runs.data import Split, load

CASE_JSON = "case.json"


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    step: int  # optimizer steps done so far
    train_loss: float  # mean batch loss over the epoch
    train_acc: float
    val_loss: float
    val_acc: float


@dataclass
class TrainResult:
    case: str
    log_dir: Path
    steps: int = 0
    seconds: float = 0.0
    epochs: list[EpochResult] = field(default_factory=list)
    stopped: str | None = None  # why training ended early, if it did

    @property
    def last(self) -> EpochResult | None:
        return self.epochs[-1] if self.epochs else None


@contextmanager
def deterministic() -> Iterator[None]:
    """One CPU thread while inside: the runs must come out the same, bit for bit, every time.

    With one thread every CPU kernel these models use (linear, conv, batch norm,
    pooling, cross-entropy) sums in a fixed order, so ``torch.use_deterministic_algorithms``
    adds nothing here (and importing what it pulls in costs two seconds). The thread
    count is process-wide, so it is restored on exit: a test that generates runs must
    not change how the rest of the test session computes.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_case_json(case: Case, log_dir: Path) -> None:
    """``case.json``: what was injected, and which rules must fire (the analyzers' ground truth)."""
    data = {"fault": case.fault, "expect": list(case.expect)}
    (log_dir / CASE_JSON).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_case_json(run_dir: str | os.PathLike[str]) -> dict:
    return json.loads((Path(run_dir) / CASE_JSON).read_text(encoding="utf-8"))


def steps_per_epoch(case: Case, split: Split) -> int:
    return -(-int(split.y_train.shape[0]) // case.batch_size)


def _loader(split: Split, case: Case, generator: torch.Generator) -> DataLoader:
    dataset = TensorDataset(split.x_train, split.y_train)
    shuffle = not case.data.sorted_by_class  # the unshuffled case keeps its sorted order
    return DataLoader(dataset, batch_size=case.batch_size, shuffle=shuffle, generator=generator)


def as_loss_takes(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) as cross-entropy takes them: a classifier's (N, C) and (N,) as they
    are, a language model's (B, T, V) and (B, T) flattened to (B*T, V) and (B*T,)."""
    if out.dim() == 3:
        return out.view(-1, out.shape[-1]), y.view(-1)
    return out, y


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(loss, accuracy) on the whole validation split, in eval mode (dropout off, BN running stats)."""
    model.eval()
    out, y = as_loss_takes(model(x), y)
    model.train()
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def _set_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    """Every group's learning rate set to its base times `factor`, as a schedule sets it before a step."""
    for group, lr in zip(optimizer.param_groups, base_lrs):
        group["lr"] = lr * factor


def train_case(
    case: Case,
    log_dir: str | os.PathLike[str],
    *,
    duration_seconds: float = 0.0,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainResult:
    """Train `case` with the collector attached, writing the run (and case.json) into `log_dir`.

    `duration_seconds` > 0 paces training to take about that long (a sleep after each
    step) so that a dashboard can be watched while it runs. Ctrl-C ends the run cleanly:
    the collector is closed, run.json says where it stopped, and KeyboardInterrupt is
    raised again. Seeds, threads and kernels are fixed inside and restored after
    (`deterministic`, and a forked global RNG for the model's initialization).
    """
    with deterministic(), torch.random.fork_rng(devices=[]):
        return _train(case, Path(log_dir), duration_seconds, on_epoch)


def _train(
    case: Case, log_dir: Path, duration_seconds: float, on_epoch: Callable[[EpochResult], None] | None
) -> TrainResult:
    """The training loop itself (see `train_case`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    write_case_json(case, log_dir)
    torch.manual_seed(case.seed)
    split = load(case.data, case.seed)
    model = case.model(split)
    optimizer = case.optim.build(model)
    loader = _loader(split, case, torch.Generator().manual_seed(case.seed))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    step_seconds = duration_seconds / (steps_per_epoch(case, split) * case.epochs)
    hparams = {
        "case": case.name,
        "dataset": case.data.dataset,
        "num_classes": split.num_classes,
        "batch_size": case.batch_size,
        "epochs": case.epochs,
        **case.optim.hparams(),
    }
    collector = watch(
        model,
        optimizer,
        log_dir,
        hparams,
        run_name=case.name,
        # Every step, whatever it costs: the runs must come out the same on every machine.
        stats_budget=None,
        every=case.every,
        histogram_every=case.histogram_every,
        stats_every=case.stats_every,
    )
    result = TrainResult(case.name, log_dir)
    started = time.perf_counter()
    try:
        for epoch in range(1, case.epochs + 1):
            loss_sum, correct, seen = 0.0, 0, 0
            for xb, yb in loader:
                if case.lr_pulse_steps:  # fault: single steps at lr_pulse_factor times the learning rate
                    pulse = result.steps in case.lr_pulse_steps
                    _set_lr(optimizer, base_lrs, case.lr_pulse_factor if pulse else 1.0)
                if case.zero_grad:  # fault: Case.zero_grad=False never clears them
                    optimizer.zero_grad()
                out, yb = as_loss_takes(model(xb), yb)
                loss = F.cross_entropy(out, yb)
                loss.backward()
                grad_norm = None
                if case.clip_grad_norm is not None:  # fault: Case.clip_grad_norm=0.0 zeroes every gradient
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), case.clip_grad_norm)
                optimizer.step()
                collector.step(loss=loss, outputs=out, targets=yb, inputs=xb, grad_norm=grad_norm)
                result.steps += 1
                loss_sum += float(loss.detach()) * yb.shape[0]
                correct += int((out.detach().argmax(1) == yb).sum())
                seen += yb.shape[0]
                if step_seconds > 0:
                    time.sleep(step_seconds)
            val_loss, val_acc = evaluate(model, split.x_val, split.y_val)
            collector.log_validation(loss=val_loss, acc=val_acc)
            record = EpochResult(epoch, result.steps, loss_sum / seen, correct / seen, val_loss, val_acc)
            result.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if case.stop_when_nonfinite and not math.isfinite(record.train_loss):
                # What a user does on seeing NaN: stop. Running on would only write more NaN.
                result.stopped = f"train loss non-finite in epoch {epoch}; stopped"
                break
    except KeyboardInterrupt:
        result.stopped = f"interrupted (Ctrl-C) after {result.steps} steps"
        collector.close(RJ.STATUS_FINISHED, result.stopped)
        raise
    except BaseException as exc:
        collector.close(RJ.STATUS_CRASHED, f"{type(exc).__name__}: {exc}")
        raise
    else:
        collector.close(RJ.STATUS_FINISHED, result.stopped)
    finally:
        result.seconds = time.perf_counter() - started
    return result
