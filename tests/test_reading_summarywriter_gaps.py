"""Honest gaps in logs written by the real ``torch.utils.tensorboard.SummaryWriter`` (issue 21):
an ``add_hparams`` side run is no phantom run, and what the tool does not draw (images,
text, histograms under names no chart reads, the model graph) is listed once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainscope.analyzers.cli import main
from trainscope.analyzers.reading import read_logdir
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

torch = pytest.importorskip("torch")
from torch.utils.tensorboard import SummaryWriter  # noqa: E402


def _train_and_log(log_dir, lr: float, extras: bool) -> None:
    """A real small model trained for 20 steps, logged the way SummaryWriter users do."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    writer = SummaryWriter(str(log_dir))
    for step in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        writer.add_scalar("train/loss", loss.item(), step)
        if extras and step % 10 == 0:
            writer.add_histogram("fc1_weights", model[0].weight, step)
            writer.add_image("inputs", np.random.rand(3, 8, 8), step)
            writer.add_text("notes", f"step {step}", step)
    if extras:
        writer.add_graph(model, x)
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    writer.add_hparams({"lr": lr, "optimizer": "sgd"}, {"hparam/accuracy": accuracy})
    writer.close()


def test_the_add_hparams_side_run_is_folded_into_its_run(tmp_path):
    _train_and_log(tmp_path / "a", 0.1, extras=False)
    _train_and_log(tmp_path / "b", 0.01, extras=False)
    assert len([p for p in (tmp_path / "a").iterdir() if p.is_dir()]) == 1  # the side run SummaryWriter wrote
    runs = read_logdir(tmp_path).runs
    assert list(runs) == ["a", "b"]
    for name, lr in (("a", 0.1), ("b", 0.01)):
        run = runs[name]
        assert run.meta[RJ.K_HPARAMS] == {"lr": lr, "optimizer": "sgd"}
        assert len(run.scalars[T.TRAIN_LOSS]) == 20 and len(run.unmapped["hparam/accuracy"]) == 1
        assert run.problems == () and run.not_shown == {}


def test_a_run_with_nothing_but_add_hparams_is_one_run(tmp_path):
    writer = SummaryWriter(str(tmp_path / "sweep0"))
    writer.add_hparams({"lr": 0.3}, {"hparam/loss": 0.5})
    writer.close()
    runs = read_logdir(tmp_path).runs
    assert list(runs) == ["sweep0"] and runs["sweep0"].meta[RJ.K_HPARAMS] == {"lr": 0.3}


def test_what_is_not_drawn_is_listed_once(tmp_path):
    _train_and_log(tmp_path / "a", 0.1, extras=True)
    run = read_logdir(tmp_path).runs["a"]
    assert run.not_shown == {
        "(model graph)": "graph",
        "fc1_weights": "histogram",
        "inputs": "image",
        "notes/text_summary": "text",
    }
    assert run.problems == ()


def test_the_cli_lists_it_once_in_text_and_json(tmp_path, capsys):
    _train_and_log(tmp_path / "a", 0.1, extras=True)
    assert main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.count("logged, not shown:") == 1
    assert (
        "inputs (image)" in text and "notes/text_summary (text)" in text and "fc1_weights (histogram)" in text
    )
    assert main([str(tmp_path), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["not_shown"]["inputs"] == "image"
