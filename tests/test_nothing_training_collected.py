"""nothing_training from run.json's facts, on real runs the collector wrote: a small MLP on
digits with every parameter frozen, and one whose optimizer was built over another model's
parameters. Neither logs a gradient or an update per layer (the collector measures the
layers the optimizer updates: none), so the model summary is the evidence; the flat loss
is its symptom, listed under it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from collector_helpers import mlp
from torch import nn

from trainscope.analyzers.diagnose import Diagnosis, diagnose_run
from trainscope.analyzers.reading import read_logdir
from trainscope.collectors import watch

STEPS = 300
BATCH = 64
VAL = 400  # the last examples, held out


def _train(
    log_dir, model: nn.Module, opt: torch.optim.Optimizer, X, y, watched: nn.Module | None = None
) -> Diagnosis:
    """SGD steps on shuffled digits through the collector (watching `watched`, the model by
    default), a validation every 50 steps; the diagnosis.

    A frozen model's loss does not require grad: backward() is skipped then, as a loop
    that survives the bug does (optimizer.step() with no gradients does nothing)."""
    collector = watch(
        watched or model, opt, log_dir, {"batch_size": BATCH, "lr": 0.05}, every=10, stats_budget=None
    )
    g = torch.Generator().manual_seed(0)
    xt, yt, xv, yv = X[:-VAL], y[:-VAL], X[-VAL:], y[-VAL:]
    for step in range(STEPS):
        idx = torch.randint(0, len(xt), (BATCH,), generator=g)
        opt.zero_grad()
        out = model(xt[idx])
        loss = F.cross_entropy(out, yt[idx])
        if loss.requires_grad:
            loss.backward()
        opt.step()
        collector.step(loss=loss, outputs=out, targets=yt[idx], inputs=xt[idx])
        if step % 50 == 49:
            with torch.no_grad():
                logits = model(xv)
                acc = (logits.argmax(1) == yv).float().mean().item()
                collector.log_validation(loss=F.cross_entropy(logits, yv).item(), acc=acc)
    collector.close()
    return diagnose_run(read_logdir(log_dir).runs["."])


def _assert_root_of_the_plateau(report: Diagnosis, says: str) -> None:
    [root] = [f for f in report.findings if f.rule == "nothing_training"]
    assert root.severity == "critical" and root.caused_by is None, root
    assert says in root.title, root.title
    assert report.findings[0] is root
    plateau = [f for f in report.findings if f.rule == "loss_plateau"]
    assert plateau and all(f.caused_by == "nothing_training" for f in plateau), [
        (f.rule, f.caused_by) for f in report.findings
    ]
    # Nothing else is a root at warning or above: the flat loss has one cause.
    assert [f.rule for f in report.roots if f.severity != "info"] == ["nothing_training"], [
        (f.rule, f.severity, f.caused_by) for f in report.findings
    ]


def test_every_parameter_frozen_is_the_root(tmp_path, digits):
    X, y = digits
    model = mlp()
    model.requires_grad_(False)  # a freeze loop whose name filter matched everything
    report = _train(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), X, y)
    _assert_root_of_the_plateau(report, "every parameter is frozen (requires_grad=False)")


def test_an_optimizer_over_another_models_parameters_is_the_root(tmp_path, digits):
    X, y = digits
    opt = torch.optim.SGD(mlp(seed=1).parameters(), lr=0.05, momentum=0.9)
    model = mlp()  # re-created after the optimizer was built
    report = _train(tmp_path, model, opt, X, y)
    _assert_root_of_the_plateau(report, "the optimizer holds none of this model's parameters")


def test_a_frozen_submodule_watched_while_its_head_trains_is_no_finding(tmp_path, digits):
    """The collector was shown the frozen backbone alone; the head outside it trains and the loss
    falls: the facts do not describe what trains, and nothing_training says nothing."""
    X, y = digits
    backbone = mlp()[:4].requires_grad_(False)
    torch.manual_seed(0)
    model = nn.Sequential(backbone, nn.Linear(32, 10))
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9)
    report = _train(tmp_path, model, opt, X, y, watched=backbone)
    assert "nothing_training" not in {f.rule for f in report.findings}, [f.title for f in report.findings]
