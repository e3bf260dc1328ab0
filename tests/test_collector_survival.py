"""What the collector must survive without changing or breaking the training run."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import collectors.collector as collector_module
from collector_helpers import DEVICES, SmallCNN, mlp, read_scalars, train
from collectors import CollectorConfig, watch
from collectors.grad_stats import LayerNorms
from logformat import tags as T

# Every hook fires on every step: the hardest case for "changes nothing".
EVERYTHING = dict(every=2, histogram_every=2, noise_window=2)


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make_model", [mlp, SmallCNN], ids=["mlp", "bn-cnn"])
def test_attached_run_is_bit_identical(tmp_path, digits, deterministic, make_model, device):
    X, y = (t.to(device) for t in digits)
    torch.manual_seed(0)
    plain = train(make_model().to(device), X, y, steps=30)
    torch.manual_seed(0)
    watched = train(
        make_model().to(device), X, y, steps=30, collector=lambda m, o: watch(m, o, tmp_path, **EVERYTHING)
    )
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs with the collector attached"
    assert read_scalars(tmp_path)[T.TRAIN_LOSS]  # and it did record
    assert json.loads((tmp_path / "run.json").read_text())["collector_errors"] == []


def test_hook_error_is_reported_once_and_training_goes_on(tmp_path, digits, monkeypatch):
    X, y = digits

    def broken(*args, **kwargs):
        raise ValueError("histogram exploded")

    monkeypatch.setattr(collector_module, "pack_histogram", broken)
    torch.manual_seed(0)
    plain = train(mlp(), X, y, steps=12)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning) as caught:
        watched = train(mlp(), X, y, steps=12, collector=lambda m, o: watch(m, o, tmp_path, **EVERYTHING))
    ours = [w for w in caught if "TrainScope" in str(w.message)]
    assert len(ours) == 1 and "histogram exploded" in str(ours[0].message)
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)
    data = json.loads((tmp_path / "run.json").read_text())
    assert len(data["collector_errors"]) == 1 and "histograms: ValueError" in data["collector_errors"][0]
    assert sorted(read_scalars(tmp_path)[T.TRAIN_LOSS]) == list(range(12))  # the rest kept recording


def test_error_in_norms_does_not_reach_training(tmp_path, digits, monkeypatch):
    X, y = digits
    monkeypatch.setattr(LayerNorms, "tensor_norms", lambda self, tensors: 1 / 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(mlp(), X, y, steps=8, collector=lambda m, o: watch(m, o, tmp_path, every=2))
    assert len([w for w in caught if "TrainScope" in str(w.message)]) == 1
    assert len(read_scalars(tmp_path)[T.TRAIN_LOSS]) == 8


def _hook_counts(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    module_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return module_hooks + len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks)


def test_close_removes_every_hook_even_mid_sample(tmp_path, digits):
    X, y = digits
    model, hook_before = mlp(), sys.excepthook
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    collector = watch(model, opt, tmp_path, every=1)
    assert _hook_counts(model, opt) > 0 and sys.excepthook != hook_before
    loss = F.cross_entropy(model(X[:32]), y[:32])
    loss.backward()
    opt.step()
    collector.step(loss=loss)  # re-arms the activation hooks for step 1
    collector.close()
    collector.close()  # safe twice
    assert _hook_counts(model, opt) == 0
    assert sys.excepthook == hook_before
    collector.step(loss=loss)  # a step after close is ignored, not an error


def test_no_memory_growth_over_thousands_of_steps(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=10, histogram_every=50, flush_steps=100)

    def live_tensors() -> int:
        gc.collect()
        with warnings.catch_warnings():  # isinstance() pokes deprecated lazy module attributes
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    counts = {}
    for step in range(3000):
        idx = torch.randint(0, len(X), (32,))
        opt.zero_grad()
        out = model(X[idx])
        loss = F.cross_entropy(out, y[idx])
        loss.backward()
        opt.step()
        collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx])
        if step in (999, 2999):
            collector.flush(wait=True)
            counts[step] = live_tensors()
    collector.close()
    assert counts[2999] <= counts[999] + 5, counts


@pytest.mark.parametrize("device", DEVICES)
def test_amp_grad_scaler_skipped_steps_are_marked_not_errors(tmp_path, digits, device):
    X, y = (t.to(device) for t in digits)
    model = mlp().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    # float16 autocast with a large initial scale: the first steps overflow and GradScaler
    # skips them, halving the scale each time, as in any real AMP run.
    scaler = torch.amp.GradScaler(device, init_scale=2.0**24)
    collector = watch(model, opt, tmp_path, scaler=scaler, every=2)
    for step in range(40):
        idx = torch.arange(step * 32, step * 32 + 32, device=device) % len(X)
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.float16):
            out = model(X[idx])
            loss = F.cross_entropy(out.float(), y[idx])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        collector.step(loss=loss, outputs=out, targets=y[idx])
    collector.close()
    scalars = read_scalars(tmp_path)
    skipped = sorted(scalars[T.STEP_SKIPPED])
    scales = scalars[T.LOSS_SCALE]  # recorded after scaler.update(): it halves exactly on skipped steps
    previous = {0: 2.0**24, **{k: scales[k - 1] for k in range(1, 40)}}
    assert skipped and skipped == [k for k in range(40) if scales[k] < previous[k]]
    for step in skipped:
        assert not torch.isfinite(torch.tensor(scalars[T.GRAD_GLOBAL_NORM][step]))
    assert all(torch.isfinite(torch.tensor(v)) for s, v in scalars[T.GRAD_GLOBAL_NORM].items() if s not in skipped)
    assert sorted(scalars[T.TRAIN_ACC]) == list(range(40))
    assert collector.errors == []


def test_gradient_accumulation_reads_the_accumulated_gradient(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=2, batch_size=4 * 16)
    expected_norm, expected_dead = {}, {}
    for step in range(6):
        opt.zero_grad()
        total = 0.0
        for micro in range(4):
            idx = torch.arange(micro * 16, micro * 16 + 16) + step * 64
            if micro == 0 and step % 2 == 0:
                with torch.no_grad():
                    expected_dead[step] = float((torch.relu(model[0](X[idx])).amax(0) <= 0).float().mean())
            loss = F.cross_entropy(model(X[idx]), y[idx]) / 4
            loss.backward()
            total += loss.item()
        expected_norm[step] = float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
        opt.step()
        collector.step(loss=total)
    collector.close()
    scalars = read_scalars(tmp_path)
    for step, norm in expected_norm.items():
        assert scalars[T.GRAD_GLOBAL_NORM][step] == pytest.approx(norm, rel=1e-5)
    for step, dead in expected_dead.items():  # the first micro-batch of a sampled step
        assert scalars[T.dead_fraction_tag("1")][step] == pytest.approx(dead)
    assert T.STEP_SKIPPED not in scalars
    assert json.loads((tmp_path / "run.json").read_text())["batch_size"] == 64


def test_eval_passes_are_not_recorded_as_training(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=2)
    expected = {}
    for step in range(4):
        idx = torch.arange(step * 64, step * 64 + 64)
        opt.zero_grad()
        out = model(X[idx])
        if step % 2 == 0:
            with torch.no_grad():
                expected[step] = float((torch.relu(model[0](X[idx])).amax(0) <= 0).float().mean())
        loss = F.cross_entropy(out, y[idx])
        loss.backward()
        opt.step()
        collector.step(loss=loss, outputs=out, targets=y[idx])
        model.eval()  # a validation pass while the next (sampled) step's hooks are armed
        with torch.no_grad():
            val_out = model(torch.full_like(X[:100], -5.0))  # would make every ReLU unit dead
            collector.log_validation(loss=F.cross_entropy(val_out, y[:100]), acc=0.5)
        model.train()
    collector.close()
    scalars = read_scalars(tmp_path)
    assert scalars[T.dead_fraction_tag("1")] == pytest.approx(expected)
    assert sorted(scalars[T.VAL_LOSS]) == [0, 1, 2, 3] and scalars[T.VAL_ACC][3] == 0.5
    assert sorted(scalars[T.TRAIN_LOSS]) == [0, 1, 2, 3]


class PartlyFrozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)
        self.unused = nn.Linear(32, 10)  # in the optimizer, never in the graph
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.frozen(x)))


def test_frozen_and_unused_parameters(tmp_path, digits):
    X, y = digits
    torch.manual_seed(0)
    collect = lambda m, o: watch(m, o, tmp_path, every=2, histogram_every=2)  # noqa: E731
    train(PartlyFrozen(), X, y, steps=6, collector=collect)
    scalars = read_scalars(tmp_path)
    assert T.grad_norm_tag("head") in scalars
    assert T.grad_norm_tag("frozen") not in scalars and T.grad_norm_tag("unused") not in scalars
    assert scalars[T.update_ratio_tag("unused")][0] == 0.0  # in the optimizer, never moved
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["collector_errors"] == []
    assert {layer["name"]: layer["trainable"] for layer in data["model"]["layers"]} == {
        "frozen": False, "head": True, "unused": True,
    }


def test_crash_inside_the_context_manager_is_recorded(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(RuntimeError, match="data loader died"):
        with watch(model, opt, tmp_path) as collector:
            for step in range(5):
                loss = F.cross_entropy(model(X[:32]), y[:32])
                loss.backward()
                opt.step()
                collector.step(loss=loss)
            raise RuntimeError("data loader died")
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["status"] == "crashed" and "data loader died" in data["status_reason"]
    assert data["steps"] == 5
    assert sorted(read_scalars(tmp_path)[T.TRAIN_LOSS]) == list(range(5))


_SCRIPT = """
import sys, torch, torch.nn.functional as F
from collectors import watch
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
collector = watch(model, opt, sys.argv[1])
for _ in range(3):
    loss = F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,)))
    loss.backward(); opt.step(); opt.zero_grad()
    collector.step(loss=loss)
{ending}
"""


@pytest.mark.parametrize(
    "ending, status, reason",
    [
        ("raise KeyError('missing column')", "crashed", "KeyError"),
        ("pass  # forgot close()", "finished", "close() was not called"),
        ("collector.close()", "finished", None),
    ],
    ids=["uncaught-exception", "no-close", "close"],
)
def test_run_status_when_the_process_ends(tmp_path, ending, status, reason):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_SCRIPT).format(ending=ending))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    data = json.loads((tmp_path / "run" / "run.json").read_text())
    assert data["status"] == status, proc.stderr
    assert (reason is None and data["status_reason"] is None) or reason in data["status_reason"]
    assert sorted(read_scalars(tmp_path / "run")[T.TRAIN_LOSS]) == [0, 1, 2]
    if status == "crashed":
        assert "KeyError: 'missing column'" in proc.stderr  # the user's traceback still prints


def test_config_is_validated():
    with pytest.raises(ValueError, match="every"):
        CollectorConfig(every=0)
    with pytest.raises(TypeError):
        watch(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1), "x", config=CollectorConfig(), every=3)


def test_odd_step_arguments_cost_nothing_else(tmp_path, digits):
    """Tuples, dicts and token ids in step() are ignored; the loss is still recorded."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=1)
    for step in range(4):
        out = model(X[:32])
        loss = F.cross_entropy(out, y[:32])
        loss.backward()
        opt.step()
        collector.step(loss=loss, outputs=(out,), targets={"y": y[:32]}, inputs=y[:32])
    collector.close()
    scalars = read_scalars(tmp_path)
    assert collector.errors == []
    assert sorted(scalars[T.TRAIN_LOSS]) == [0, 1, 2, 3]
    assert T.TRAIN_ACC not in scalars and T.LABEL_ENTROPY not in scalars
    # input statistics come from the model's forward when step() has no usable inputs
    assert scalars[T.INPUT_MEAN][0] == pytest.approx(float(X[:32].mean()))
    assert scalars[T.INPUT_STD][0] == pytest.approx(float(X[:32].std(correction=0)))


def test_accuracy_leaves_out_ignored_labels(tmp_path, digits):
    """Token-style targets: -100 (cross-entropy's ignore_index) is neither right nor wrong,
    and a batch with no valid label records no accuracy rather than 0."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path)
    expected = {}
    for step in range(3):
        xb, yb = X[step * 40 : step * 40 + 40], y[step * 40 : step * 40 + 40].clone()
        yb[: (10, 0, 40)[step]] = -100
        out = model(xb)
        loss = F.cross_entropy(out, yb) if step < 2 else out.sum() * 0
        loss.backward()
        opt.step()
        opt.zero_grad()
        valid = yb >= 0
        if valid.any():
            expected[step] = ((out.argmax(1) == yb) & valid).sum().item() / valid.sum().item()
        collector.step(loss=loss, outputs=out, targets=yb)
    collector.close()
    acc = read_scalars(tmp_path)[T.TRAIN_ACC]
    assert acc.keys() == expected.keys() == {0, 1}
    assert acc == pytest.approx(expected)
