"""Small real models and a training loop for the collector tests, plus an event-file reader.

The reader here is TensorBoard's own EventAccumulator: the collector's files must be
readable by the standard tool, independent of this project's analyzers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# cuBLAS is deterministic only with a fixed workspace, set before its first use (tests run
# after every module is imported).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# For tests that must hold on both: CUDA where a device exists.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    ),
]

# The words of the generated text the language-model tests train on.
WORDS = ("the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "red", "big", "and", "fox", "hid")


def generated_text(chars: int, seed: int = 0) -> str:
    """Sentences of random words, at least `chars` characters: a language with structure to
    learn (a character model can learn the words), the same every run."""
    rng = random.Random(seed)
    sentences: list[str] = []
    total = 0
    while total < chars:
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + ". ")
        total += len(sentences[-1])
    return "".join(sentences)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


class FunctionalReLUNet(nn.Module):
    """ReLU called as a function: no module to hook."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 48)
        self.fc2 = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x.view(-1, 1, 8, 8))))
        return self.fc(x.flatten(1))


def train(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch: int = 64,
    lr: float = 0.05,
    collector=None,
    seed: int = 0,
    on_step: Callable[[int, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> nn.Module:
    """Plain SGD+momentum over shuffled digits; `on_step(step, model, xb, yb, out)` runs after backward."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if collector is not None:
        collector = collector(model, opt)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        xb, yb = X[idx], y[idx]
        opt.zero_grad()
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        if on_step is not None:
            on_step(step, model, xb, yb, out)
        opt.step()
        if collector is not None:
            collector.step(loss=loss, outputs=out, targets=yb, inputs=xb)
    if collector is not None:
        collector.close()
    return model


def assert_same_weights(plain: nn.Module, watched: nn.Module) -> None:
    """Bit for bit: the collector must not change what a run computes."""
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs with the collector attached"


def read_scalars(log_dir: str | Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def read_histograms(log_dir: str | Path) -> dict[str, dict[int, object]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return {tag: {e.step: e.histogram_value for e in acc.Histograms(tag)} for tag in acc.Tags()["histograms"]}


def diagnosed_by_the_cli(log_dir: str | Path) -> dict:
    """The command line's JSON report of `log_dir` (``python -m analyzers LOG_DIR --json``),
    run as a user would, in a process of its own."""
    out = subprocess.run(
        [sys.executable, "-m", "analyzers", str(log_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
