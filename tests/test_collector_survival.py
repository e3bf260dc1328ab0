"""What the collector must survive without changing or breaking the training run."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from collector_helpers import (
    DEVICES,
    SmallCNN,
    assert_same_weights,
    mlp,
    read_histograms,
    read_scalars,
    train,
)
from torch import nn

import trainscope.collectors.collector as collector_module
from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.rules import ALL_RULES
from trainscope.collectors import CollectorConfig, activations, watch
from trainscope.collectors.grad_stats import LayerNorms
from trainscope.logformat import tags as T

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
    assert_same_weights(plain, watched)
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


def test_an_error_keeping_the_logits_costs_the_accuracy_not_the_step(tmp_path, digits, monkeypatch):
    """Keeping a step's logits for its accuracy runs under its own error part on quiet
    steps too (`_record_quiet_step`): when it fails, the accuracy falls back to being
    measured at once on statistics steps, and loss and step time go on every step."""
    from trainscope.collectors.deferred_accuracy import DeferredAccuracy

    X, y = digits
    keep = DeferredAccuracy.keep

    def keep_failing_from_step_13(self, packet, outputs, targets):
        if packet.step >= 13:
            raise RuntimeError("cannot keep these")
        return keep(self, packet, outputs, targets)

    monkeypatch.setattr(DeferredAccuracy, "keep", keep_failing_from_step_13)
    settings = {"stats_budget": None, "stats_every": 10, "noise_scale": False, "flush_steps": 5}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(mlp(), X, y, steps=40, collector=lambda m, o: watch(m, o, tmp_path, **settings))
    ours = [str(w.message) for w in caught if "TrainScope" in str(w.message)]
    assert len(ours) == 1 and "accuracy by reference" in ours[0]
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.TRAIN_LOSS]) == sorted(scalars[T.STEP_SECONDS]) == list(range(40))
    # kept and read at the flushes after steps 4 and 9; 10-12 were kept when keeping was
    # switched off, and are not read; from then on measured at once, on statistics steps
    assert sorted(scalars[T.TRAIN_ACC]) == [*range(10), 20, 30]


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
    assert all(
        torch.isfinite(torch.tensor(v)) for s, v in scalars[T.GRAD_GLOBAL_NORM].items() if s not in skipped
    )
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


def test_clipped_run_records_the_norm_before_clipping_when_given(tmp_path, digits):
    """`clip_grad_norm_` hides an explosion from a norm read at optimizer.step(); the
    norm it returns, passed as grad_norm (tensor or float), is recorded on every step,
    while per-layer norms stay those the optimizer applied."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    max_norm = 0.1
    collector = watch(model, opt, tmp_path, stats_budget=None, stats_every=4)
    before = {}
    for step in range(16):
        opt.zero_grad()
        loss = F.cross_entropy(model(X[step * 32 : step * 32 + 32]), y[step * 32 : step * 32 + 32])
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        before[step] = total.item()
        opt.step()
        given = None if step >= 12 else total if step % 2 else total.item()
        collector.step(loss=loss, grad_norm=given)
    collector.close()
    scalars = read_scalars(tmp_path)
    assert min(before.values()) > 2 * max_norm  # every step was clipped
    recorded = scalars[T.GRAD_GLOBAL_NORM]
    assert sorted(recorded) == list(range(12)) + [12]  # given on 0-11; measured on statistics steps
    assert [recorded[s] for s in range(12)] == pytest.approx([before[s] for s in range(12)], rel=1e-6)
    assert recorded[12] == pytest.approx(max_norm, rel=1e-4)  # measured: after clipping
    for step in (0, 4, 8, 12):  # the layers' norms are after clipping, given or not
        layers = [scalars[T.grad_norm_tag(name)][step] for name in ("0", "2", "4")]
        assert sum(v * v for v in layers) ** 0.5 == pytest.approx(max_norm, rel=1e-4)
    assert collector.errors == []


@pytest.mark.parametrize("pass_norm", [False, True], ids=["clipped-norm", "norm-before-clipping"])
def test_exploding_rule_on_a_clipped_run(tmp_path, digits, pass_norm):
    """End to end: the norm read after clipping sits at max_norm, and the rule says so
    instead of calling the run healthy; given the norm before clipping, it judges it."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, tmp_path) as collector:
        for step in range(80):
            opt.zero_grad()
            idx = torch.arange(step * 16, step * 16 + 32) % len(X)
            loss = F.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            total = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()
            collector.step(loss=loss, grad_norm=total if pass_norm else None)
    run = read_logdir(tmp_path).runs["."]
    diagnosis = diagnose_run(
        run, tuple((rule, fn) for rule, fn in ALL_RULES if rule == "exploding_gradients")
    )
    skipped = {s.rule: s.reason for s in diagnosis.skipped}
    if pass_norm:
        assert skipped == {} and diagnosis.findings == ()
    else:
        assert "sits at the same maximum, 0.1, on 100% of the steps" in skipped["exploding_gradients"]


def test_a_quiet_step_runs_no_tensor_op(tmp_path, digits):
    """Between statistics and sampled steps the collector computes nothing on the
    device: on a launch-bound GPU step each kernel it added would cost ~1%. The ops of
    optimizer.step() + collector.step() are those of a plain optimizer.step(), but for
    detach (a view: no kernel)."""
    X, y = digits

    def ops_of_a_step(model: nn.Module, opt: torch.optim.Optimizer, collector=None) -> Counter:
        xb, yb = X[:32], y[:32]
        opt.zero_grad()
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            opt.step()
            if collector is not None:
                collector.step(loss=loss, outputs=out, targets=yb, inputs=xb)
        return Counter(
            e.name for e in prof.events() if e.name.startswith("aten::") and e.name != "aten::detach"
        )

    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    plain_model = mlp()
    plain_opt = sgd(plain_model)
    ops_of_a_step(plain_model, plain_opt)  # momentum buffers are created on the first step
    plain = ops_of_a_step(plain_model, plain_opt)
    model = mlp()
    opt = sgd(model)
    collector = watch(model, opt, tmp_path, stats_budget=None, stats_every=4)
    counts = [ops_of_a_step(model, opt, collector) for _ in range(9)]
    collector.close()
    assert plain and counts[7] == plain  # 7: no statistics (every 4th), outside the noise window
    assert counts[8] - plain  # 8: a statistics step, which does compute


# What reading a device value on the host dispatches (`.item()`, `float(t)`, `bool(t)`),
# and ops whose output size depends on values: on a GPU each waits for the device.
HOST_READS = {
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique2",
}


def _host_reads(prof: torch.profiler.profile) -> Counter:
    """HOST_READS called from Python. One inside another op is that op's CPU kernel at
    work (`std` over a whole CPU tensor reads its result back; on a GPU it is a kernel)."""
    return Counter(
        e.name
        for e in prof.events()
        if e.name in HOST_READS and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))
    )


def test_no_step_reads_a_device_value_on_the_host_between_flushes(tmp_path, digits):
    """On a GPU, a host read of a device value stalls the step until the device catches
    up. test_collector_cuda.py checks that with CUDA's sync debug mode where a GPU is
    lent; this checks the same on every CPU run, by the ops dispatched: no step of a
    watched run (statistics, sampled, histogram and noise-window steps included) runs
    one that a plain step does not."""
    X, y = digits

    def host_reads_of_steps(
        model: nn.Module, opt: torch.optim.Optimizer, steps: int, collector=None
    ) -> list[Counter]:
        per_step = []
        for step in range(steps):
            idx = torch.arange(step * 32, step * 32 + 32)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                opt.zero_grad()
                out = model(X[idx])
                loss = F.cross_entropy(out, y[idx])
                loss.backward()
                opt.step()
                if collector is not None:
                    collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx])
            per_step.append(_host_reads(prof))
        return per_step

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    plain = host_reads_of_steps(model, opt, 4)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    collector = watch(
        model, opt, tmp_path, every=4, histogram_every=4, noise_window=3, flush_steps=10**6, flush_seconds=1e9
    )
    watched = host_reads_of_steps(model, opt, 12, collector)
    collector.close()
    assert plain == [Counter()] * 4, (
        "the training step itself reads device values: the collector's would not stand out"
    )
    assert watched == [Counter()] * 12
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.dead_fraction_tag("1")]) == [0, 4, 8]  # the sampled work did run
    assert sorted(read_histograms(tmp_path)[T.hist_weight_tag("0")]) == [0, 4, 8]
    assert T.GRAD_NOISE_SCALE in scalars


# Statistics on every step; none after the first step and nothing sampled: quiet steps,
# which take a path of their own (`Collector._record_quiet_step`).
EVERY_STEP_READS, QUIET_STEPS = {}, {"stats_every": 1000, "noise_scale": False}


@pytest.mark.parametrize("settings", [EVERY_STEP_READS, QUIET_STEPS], ids=["statistics_steps", "quiet_steps"])
def test_loss_changed_in_place_after_step_is_dropped_and_reported(tmp_path, digits, settings):
    """The loss is kept by reference until the flush: one changed in place after step()
    is not written wrong, it is dropped and reported once, and losses are copied after."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, flush_steps=1000, flush_seconds=1e9, **settings)
    true_loss = {}

    def train_and_spoil_the_loss() -> None:
        for step in range(6):
            opt.zero_grad()
            loss = F.cross_entropy(model(X[step * 32 : step * 32 + 32]), y[step * 32 : step * 32 + 32])
            loss.backward()
            opt.step()
            true_loss[step] = loss.item()
            collector.step(loss=loss)
            if step >= 2:
                with torch.no_grad():
                    loss.mul_(100.0)  # what no loop should do, done after step() from step 2 on
        collector.close()

    with pytest.warns(RuntimeWarning, match="train/loss of step 2 was changed in place"):
        train_and_spoil_the_loss()
    recorded = read_scalars(tmp_path)[T.TRAIN_LOSS]
    assert sorted(recorded) == [0, 1, 3, 4, 5]  # caught at step 3: copied from then on
    assert recorded == pytest.approx({s: true_loss[s] for s in recorded}, rel=1e-6)
    assert len(collector.errors) == 1


def test_loss_changed_after_the_last_step_is_caught_at_the_flush(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path)
    for _step in range(2):
        loss = F.cross_entropy(model(X[:32]), y[:32])
        loss.backward()
        opt.step()
        collector.step(loss=loss)
    with torch.no_grad():
        loss.zero_()
    with pytest.warns(RuntimeWarning, match="train/loss of step 1 was changed in place"):
        collector.close()
    assert sorted(read_scalars(tmp_path)[T.TRAIN_LOSS]) == [0]


def test_a_value_that_cannot_be_read_costs_only_itself(tmp_path, digits):
    """A value the flush cannot read (here a tensor without data; on a GPU, memory that
    CUDA graphs took back) is left out and reported once; the rest of that flush and
    every later flush are written. It used to fail the flush, and every one after it."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=2, flush_steps=3, flush_seconds=1e9)

    def train_logging_a_tensor_without_data() -> None:
        for step in range(10):
            opt.zero_grad()
            out = model(X[step * 32 : step * 32 + 32])
            loss = F.cross_entropy(out, y[step * 32 : step * 32 + 32])
            loss.backward()
            opt.step()
            collector.step(loss=loss, outputs=out, targets=y[step * 32 : step * 32 + 32])
            if step in (3, 7):
                collector.log_scalars({"val/probe": torch.empty((), device="meta"), "val/kept": float(step)})
        collector.close()

    with pytest.warns(RuntimeWarning, match="val/probe of step 3 could not be read") as caught:
        train_logging_a_tensor_without_data()
    assert len([w for w in caught if "TrainScope" in str(w.message)]) == 1
    assert len(collector.errors) == 1 and collector.errors[0].startswith("reading val/probe: ")
    scalars = read_scalars(tmp_path)
    assert "val/probe" not in scalars
    assert scalars["val/kept"] == {3: 3.0, 7: 7.0}
    for tag in (T.TRAIN_LOSS, T.TRAIN_ACC, T.GRAD_GLOBAL_NORM):
        assert sorted(scalars[tag]) == list(range(10)), tag
    assert sorted(scalars[T.update_ratio_tag("0")]) == [0, 2, 4, 6, 8]


def test_a_closure_optimizer_records_the_gradients_its_step_starts_from(tmp_path, digits):
    """L-BFGS runs the forward and backward pass inside `step(closure)`, several times a
    step. The gradient norms recorded are those of the closure's first call, at the
    weights the step starts from, like any optimizer's (read when the step begins, they
    would be the step before's, or none); the closure given by position or by keyword;
    weights bit-identical to a run without the collector."""
    X, y = digits
    first_norms: dict[int, float] = {}
    calls_per_step: list[int] = []

    def run(log_dir=None) -> nn.Module:
        torch.manual_seed(0)
        model = mlp()
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4, history_size=5)
        collector = watch(model, opt, log_dir, every=3) if log_dir else None
        for step in range(6):
            xb, yb = X[step * 64 : step * 64 + 64], y[step * 64 : step * 64 + 64]
            calls = []

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                if not calls:
                    norms = torch.stack([p.grad.double().norm() for p in model.parameters()])
                    first_norms[step] = norms.norm().item()
                calls.append(1)
                return loss

            loss = opt.step(closure) if step % 2 else opt.step(closure=closure)
            calls_per_step.append(len(calls))
            if collector is not None:
                collector.step(loss=loss)
        if collector is not None:
            collector.close()
            assert collector.errors == []
        return model

    plain = run()
    watched = run(tmp_path)
    assert_same_weights(plain, watched)
    assert max(calls_per_step) > 1  # the closure did run several times within a step
    scalars = read_scalars(tmp_path)
    assert scalars[T.GRAD_GLOBAL_NORM] == pytest.approx(first_norms, rel=1e-5)
    assert sorted(scalars[T.update_ratio_tag("0")]) == [0, 3]


def test_several_optimizers_are_watched_as_one(tmp_path, digits):
    """Two optimizers train one model (SGD the first layer, Adam the rest, as Muon and
    AdamW split a model between them): every layer's gradient norm is read before
    either steps, its update ratio spans the whole step (also one where only one of
    them steps), each optimizer's learning rate is recorded and run.json names both;
    weights bit-identical to a run without the collector."""
    X, y = digits
    expected: dict[int, dict[str, float]] = {}

    def layer_norms(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        return {
            layer: torch.cat([tensors[f"{layer}.weight"].reshape(-1), tensors[f"{layer}.bias"]])
            .double()
            .norm()
            .item()
            for layer in ("0", "2", "4")
        }

    def run(log_dir=None) -> nn.Module:
        model = mlp()
        params = dict(model.named_parameters())
        sgd = torch.optim.SGD([params["0.weight"], params["0.bias"]], lr=0.05, momentum=0.9)
        adam = torch.optim.Adam([p for name, p in params.items() if not name.startswith("0.")], lr=1e-3)
        collector = watch(model, [sgd, adam], log_dir, every=3) if log_dir else None
        for step in range(7):
            xb, yb = X[step * 64 : step * 64 + 64], y[step * 64 : step * 64 + 64]
            sgd.zero_grad()
            adam.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            grads = layer_norms({name: p.grad for name, p in params.items()})
            before = {name: p.detach().clone() for name, p in params.items()}
            sgd.step()
            if step % 2 == 0:  # on odd steps, one optimizer does not step (sampled step 3 among them)
                adam.step()
            deltas = layer_norms({name: p.detach() - before[name] for name, p in params.items()})
            weights = layer_norms(before)
            expected[step] = {T.grad_norm_tag(layer): value for layer, value in grads.items()} | {
                T.update_ratio_tag(layer): deltas[layer] / weights[layer] for layer in deltas
            }
            if collector is not None:
                collector.step(loss=loss)
        if collector is not None:
            collector.close()
            assert collector.errors == []
        return model

    plain = run()
    watched = run(tmp_path)
    assert_same_weights(plain, watched)
    scalars = read_scalars(tmp_path)
    for step, values in expected.items():
        for tag, value in values.items():
            if tag.startswith(T.UPDATE_RATIO_PREFIX) and step % 3:
                assert step not in scalars[tag]  # sampled steps only
            else:
                assert scalars[tag][step] == pytest.approx(value, rel=1e-4), (tag, step)
    assert scalars[T.lr_tag(0)][6] == pytest.approx(0.05) and scalars[T.lr_tag(1)][6] == pytest.approx(1e-3)
    optimizer = json.loads((tmp_path / "run.json").read_text())["optimizer"]
    assert optimizer["type"] == "SGD+Adam"
    assert [group["optimizer"] for group in optimizer["param_groups"]] == ["SGD", "Adam"]


def test_sparse_gradients_are_measured_like_dense_ones(tmp_path):
    """`nn.Embedding(sparse=True)` gives a sparse gradient, a row once per lookup: its norm
    is that of the dense gradient (repeats summed), histograms count its zeros, the noise
    window sums it. Before, the first norm raised (no sparse kernel) and every gradient
    statistic was off for the rest of the run."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16, sparse=True), nn.Flatten(), nn.Linear(80, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    collector = watch(model, opt, tmp_path, every=3, histogram_every=3, noise_window=2, batch_size=8)
    dense_norms = {}
    for step in range(12):
        x, y = torch.randint(0, 50, (8, 5)), torch.randint(0, 10, (8,))
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        dense_norms[step] = model[0].weight.grad.to_dense().norm().item()
        opt.step()
        collector.step(loss=loss)
    collector.close()
    assert collector.errors == []
    scalars = read_scalars(tmp_path)
    assert scalars[T.grad_norm_tag("0")] == pytest.approx(dense_norms, rel=1e-5)
    assert T.GRAD_NOISE_SCALE in scalars
    assert sorted(read_histograms(tmp_path)[T.hist_grad_tag("0")]) == [0, 3, 6, 9]


def test_an_error_is_reported_in_one_line(tmp_path, digits, monkeypatch):
    """torch's dispatcher errors list every backend an operator has, pages of it: the
    warning and run.json get the first line."""

    def fail(*args: object, **kwargs: object) -> None:
        first = "Could not run 'aten::x' with arguments from the 'Sparse' backend.\n"
        raise NotImplementedError(first + "Backend: registered at ...\n" * 500)

    monkeypatch.setattr(collector_module.LayerNorms, "tensor_norms", fail)
    X, y = digits
    with pytest.warns(RuntimeWarning, match="Could not run 'aten::x'"):
        train(mlp(), X, y, steps=2, collector=lambda m, o: watch(m, o, tmp_path))
    errors = json.loads((tmp_path / "run.json").read_text())["collector_errors"]
    assert len(errors) == 1 and "\n" not in errors[0] and len(errors[0]) < 400
    assert errors[0].startswith("gradients: NotImplementedError: Could not run 'aten::x' with arguments")


@pytest.mark.parametrize("unfreeze", ["requires_grad", "add_param_group"])
def test_layers_unfrozen_during_the_run_are_measured_from_the_next_sample(tmp_path, digits, unfreeze):
    """Fine-tuning trains the head first and unfreezes the body later, by switching its
    `requires_grad` back on (its parameters already in the optimizer) or by adding them
    to the optimizer then. The body's layers are measured from the next sampled step on,
    values as torch computes them; run.json lists them."""
    X, y = digits
    model = mlp()
    body = [model[0], model[2]]
    for layer in body:
        layer.requires_grad_(False)
    held = model.parameters() if unfreeze == "requires_grad" else model[4].parameters()
    opt = torch.optim.SGD(held, lr=0.05)
    collector = watch(model, opt, tmp_path, every=3)
    expected = {}
    for step in range(9):
        if step == 4:
            for layer in body:
                layer.requires_grad_(True)
            if unfreeze == "add_param_group":
                opt.add_param_group({"params": [p for layer in body for p in layer.parameters()], "lr": 0.01})
        opt.zero_grad()
        loss = F.cross_entropy(model(X[step * 32 : step * 32 + 32]), y[step * 32 : step * 32 + 32])
        loss.backward()
        if model[0].weight.grad is not None:
            expected[step] = torch.cat([model[0].weight.grad.reshape(-1), model[0].bias.grad]).norm().item()
        opt.step()
        collector.step(loss=loss)
    collector.close()
    assert collector.errors == []
    scalars = read_scalars(tmp_path)
    assert sorted(expected) == [4, 5, 6, 7, 8]
    assert scalars[T.grad_norm_tag("0")] == pytest.approx({s: expected[s] for s in (6, 7, 8)}, rel=1e-5)
    assert sorted(scalars[T.update_ratio_tag("0")]) == [6]
    assert sorted(scalars[T.update_ratio_tag("4")]) == [0, 3, 6]
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["collector"]["layers"] == ["0", "2", "4"]


class _ThreeFunctionalReLUs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 48), nn.Linear(48, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_a_layer_unfrozen_during_the_run_is_checked_for_dead_functional_relus_at_its_input(tmp_path, digits):
    """An `F.relu` is found at the input of the trained layer that follows it. A layer
    frozen at attach is no such candidate; unfrozen, it is one from the next sample on
    (the activation hooks are made anew), and the earlier finds are kept."""
    X, y = digits
    model = _ThreeFunctionalReLUs()
    model.fc3.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=3)
    for step in range(9):
        if step == 4:
            model.fc3.requires_grad_(True)
        xb, yb = X[step * 32 : step * 32 + 32], y[step * 32 : step * 32 + 32]
        if step == 6:
            with torch.no_grad():  # units of fc3's input that are zero for the whole batch
                dead_at_fc3 = (F.relu(model.fc2(F.relu(model.fc1(xb)))) == 0).all(0).float().mean().item()
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        collector.step(loss=loss)
    collector.close()
    assert collector.errors == []
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.dead_fraction_tag("fc2")]) == [0, 3, 6]
    assert scalars[T.dead_fraction_tag("fc3")] == {6: pytest.approx(dead_at_fc3)}
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["model"]["activations"]["relu_functional_at_input_of"] == ["fc2", "fc3"]


def _events_per_step(log_dir, tag: str) -> dict[int, int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    counts: dict[int, int] = {}
    for event in acc.Scalars(tag):
        counts[event.step] = counts.get(event.step, 0) + 1
    return counts


def test_a_resumed_run_goes_on_in_its_log_dir(tmp_path, digits):
    """Training resumed from a checkpoint of step 10 passes start_step=10: the curves go
    on where they stopped, each step once, in the same run, with nothing reported."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def train_steps(steps: range, collector) -> None:
        for step in steps:
            opt.zero_grad()
            loss = F.cross_entropy(model(X[step * 32 : step * 32 + 32]), y[step * 32 : step * 32 + 32])
            loss.backward()
            opt.step()
            collector.step(loss=loss)
        collector.close()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_steps(range(10), watch(model, opt, tmp_path, every=5))
        started = json.loads((tmp_path / "run.json").read_text())["start_time"]
        resumed = watch(model, opt, tmp_path, every=5, start_step=10)
        train_steps(range(10, 20), resumed)
    assert _events_per_step(tmp_path, T.TRAIN_LOSS) == {step: 1 for step in range(20)}
    assert sorted(read_scalars(tmp_path)[T.update_ratio_tag("0")]) == [0, 5, 10, 15]
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["steps"] == 20 and data["start_time"] == started and data["collector_errors"] == []


def test_a_second_run_started_over_in_a_used_log_dir_is_reported(tmp_path, digits):
    """A notebook cell run again writes a second run from step 0 into the first one's
    log dir: readers would show one run with every step twice. Said once; recorded."""
    X, y = digits
    train(mlp(), X, y, steps=3, collector=lambda m, o: watch(m, o, tmp_path))
    with pytest.warns(RuntimeWarning, match="already holds a run \\(finished, 3 steps\\)"):
        train(mlp(), X, y, steps=3, collector=lambda m, o: watch(m, o, tmp_path))
    errors = json.loads((tmp_path / "run.json").read_text())["collector_errors"]
    assert len(errors) == 1 and errors[0].startswith("log dir: ValueError:")


def test_a_lazy_model_is_mapped_once_its_parameters_have_shapes(tmp_path, digits):
    """`nn.LazyLinear` gets its parameters' shapes in the first forward pass: watch()
    before it raised ValueError (a shape asked of an uninitialized parameter), breaking
    the script at attach. The layers are mapped at the first step: gradient norms from
    step 0, against direct computation; activations from the next sampled step."""
    X, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(10))
    expected = {}

    def measure(step, model, xb, yb, out):
        expected[step] = torch.cat([p.grad.reshape(-1) for p in model[0].parameters()]).norm().item()

    train(model, X, y, steps=6, on_step=measure, collector=lambda m, o: watch(m, o, tmp_path, every=2))
    scalars = read_scalars(tmp_path)
    assert scalars[T.grad_norm_tag("0")] == pytest.approx(expected, rel=1e-5)
    assert sorted(scalars[T.update_ratio_tag("2")]) == [0, 2, 4]
    assert sorted(scalars[T.dead_fraction_tag("1")]) == [2, 4]
    data = json.loads((tmp_path / "run.json").read_text())
    assert [layer["name"] for layer in data["model"]["layers"]] == ["0", "2"]
    assert len(data["init_check"]) == 2 and data["collector_errors"] == []


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
        "frozen": False,
        "head": True,
        "unused": True,
    }


def test_what_is_not_a_model_or_an_optimizer_is_refused_in_one_line(tmp_path):
    model = mlp()
    with pytest.raises(TypeError, match="takes the model as a torch.nn.Module, got OrderedDict"):
        watch(model.state_dict(), torch.optim.SGD(model.parameters(), lr=0.1), tmp_path)
    with pytest.raises(TypeError, match="takes a torch.optim.Optimizer or a list of them, got dict: the"):
        watch(model, {"sgd": torch.optim.SGD(model.parameters(), lr=0.1)}, tmp_path)
    with pytest.raises(TypeError, match="got an empty list"):
        watch(model, [], tmp_path)


class DelegatingOptimizer(torch.optim.Optimizer):
    """Built as Accelerate's `AcceleratedOptimizer` is: an Optimizer subclass that skips
    `Optimizer.__init__` (so it holds no step hooks) and hands every call to the
    optimizer it wraps."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        return self.optimizer.step(closure)


def test_an_optimizer_wrapper_is_watched_through_to_the_optimizer_it_wraps(tmp_path, digits):
    """Registering hooks on such a wrapper raised AttributeError inside watch(), and its
    step() never runs hooks: the collector hooks the wrapped optimizer instead."""
    X, y = digits
    model = mlp()
    opt = DelegatingOptimizer(torch.optim.SGD(model.parameters(), lr=0.05))
    collector = watch(model, opt, tmp_path, every=2)
    for step in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(X[step * 32 : step * 32 + 32]), y[step * 32 : step * 32 + 32])
        loss.backward()
        opt.step()
        collector.step(loss=loss)
    collector.close()
    assert collector.errors == []
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.GRAD_GLOBAL_NORM]) == [0, 1, 2, 3] and T.STEP_SKIPPED not in scalars
    assert sorted(scalars[T.update_ratio_tag("0")]) == [0, 2]
    assert json.loads((tmp_path / "run.json").read_text())["optimizer"]["type"] == "SGD"


def test_an_optimizer_of_another_model_is_reported_and_the_rest_recorded(tmp_path, digits):
    """A likely slip (the optimizer of another model, or one made before the parameters
    were replaced): nothing per layer can be measured, which is said once, in the
    warning and run.json; loss, learning rate and step time are still recorded."""
    X, y = digits
    other_optimizer = torch.optim.SGD(mlp(seed=1).parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="the optimizer updates none of the model's trainable parameters"):
        train(mlp(), X, y, steps=4, collector=lambda model, _: watch(model, other_optimizer, tmp_path))
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.TRAIN_LOSS]) == [0, 1, 2, 3] and sorted(scalars[T.lr_tag(0)]) == [0, 1, 2, 3]
    assert not any(tag.startswith("grad/") for tag in scalars)
    data = json.loads((tmp_path / "run.json").read_text())
    assert len(data["collector_errors"]) == 1 and data["collector_errors"][0].startswith("layers: ValueError")


def test_crash_inside_the_context_manager_is_recorded(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(RuntimeError, match="data loader died"):
        with watch(model, opt, tmp_path) as collector:
            for _step in range(5):
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
from trainscope.collectors import watch
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
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
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
        watch(
            nn.Linear(2, 2),
            torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1),
            "x",
            config=CollectorConfig(),
            every=3,
        )


def test_odd_step_arguments_cost_nothing_else(tmp_path, digits):
    """Tuples, dicts and token ids in step() are ignored; the loss is still recorded."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=1)
    for _step in range(4):
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


def test_the_input_batch_is_measured_once_per_sample(tmp_path, digits, monkeypatch):
    """The forward's input hook is for loops that give step() no inputs: while they give
    one, it is off (the same moments were computed twice per sample); a loop that stops
    giving one gets the hook back from the next sample on."""
    calls = []
    moments = activations.input_moments
    monkeypatch.setattr(activations, "input_moments", lambda x: calls.append(1) or moments(x))
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, every=2)
    for step in range(12):
        xb = X[step * 32 : step * 32 + 32] + step  # each batch's mean tells the steps apart
        out = model(xb)
        loss = F.cross_entropy(out, y[:32])
        loss.backward()
        opt.step()
        opt.zero_grad()
        collector.step(loss=loss, outputs=out, targets=y[:32], inputs=xb if step < 6 else None)
    collector.close()
    # samples at 0, 2, 4 with inputs (the hook only at 0, before step() was seen to get
    # any); at 6 the hook was still off; at 8 and 10 it measured again
    assert len(calls) == 3
    means = read_scalars(tmp_path)[T.INPUT_MEAN]
    assert sorted(means) == [0, 2, 4, 8, 10]
    for step, mean in means.items():
        assert mean == pytest.approx(float((X[step * 32 : step * 32 + 32] + step).mean()))


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
