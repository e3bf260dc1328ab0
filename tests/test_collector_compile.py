"""A `torch.compile`d model records what the eager model records, on every sampled step.

Two ways a compiled model could go wrong without anything failing: its layers named
through the compiled wrapper (`_orig_mod.0`, so a compiled run's tags match no eager
run's), and the activation hooks traced into the compiled graph once, guarded only on
how many hooks a module has, so that the hooks armed for later sampled steps replay
the first one's trace and their results never arrive. And one way it could cost every
step: hooks kept out of the graph break it where they sit, and the broken graph then
runs on the steps between samples too. The collector runs the sampled steps eagerly
instead; each test here fails on one of the three.

`aot_eager` traces with dynamo as every backend does, then runs eager kernels: the
values must equal the eager model's. `inductor` (it builds C++ on CPU) is run where a
compiler exists.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from collector_helpers import (
    FunctionalReLUNet,
    assert_same_weights,
    mlp,
    read_histograms,
    read_scalars,
    train,
)

from trainscope.collectors import watch
from trainscope.logformat import tags as T

# Raised from inside torch while it compiles, not by anything here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

SETTINGS = {"every": 5, "histogram_every": 10, "noise_window": 2}
STEPS = 30
SAMPLED = set(range(0, STEPS, SETTINGS["every"]))

needs_cpp = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
    reason="inductor builds C++ on CPU",
)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class _Sequential(torch.nn.Sequential):
    """A Sequential whose forward is not torch.nn's own: `Module.compile()` on a bare
    torch.nn class compiles nothing (dynamo does not start tracing in torch.nn's code)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


def _compiled(model: torch.nn.Module, how: str, backend: str) -> torch.nn.Module:
    if how == "torch.compile":
        return torch.compile(model, backend=backend)
    if type(model) is torch.nn.Sequential:
        model = _Sequential(*model)  # the same layers under the same names
    model.compile(backend=backend)  # in place: the module keeps its class and names
    return model


def _watched(log_dir, **settings):
    return lambda model, optimizer: watch(model, optimizer, log_dir, **{**SETTINGS, **settings})


@pytest.mark.parametrize("how", ["torch.compile", "Module.compile"])
@pytest.mark.parametrize("make_model", [mlp, FunctionalReLUNet], ids=["relu-tanh-modules", "functional-relu"])
def test_compiled_model_records_what_the_eager_model_records(tmp_path, digits, make_model, how):
    X, y = digits
    torch.manual_seed(0)
    train(make_model(), X, y, steps=STEPS, collector=_watched(tmp_path / "eager"))
    torch.manual_seed(0)
    train(
        _compiled(make_model(), how, "aot_eager"),
        X,
        y,
        steps=STEPS,
        collector=_watched(tmp_path / "compiled"),
    )

    eager, compiled = read_scalars(tmp_path / "eager"), read_scalars(tmp_path / "compiled")
    assert sorted(compiled) == sorted(eager)
    activation_tags = [tag for tag in eager if tag.startswith("act/")]
    assert activation_tags
    for tag in activation_tags:
        assert set(compiled[tag]) == SAMPLED, f"{tag}: sampled steps missing"
    for tag, values in eager.items():
        if tag != T.STEP_SECONDS:
            assert compiled[tag] == pytest.approx(values, rel=1e-5, abs=1e-7), tag
    assert read_histograms(tmp_path / "compiled").keys() == read_histograms(tmp_path / "eager").keys()


def test_compiled_run_is_bit_identical_with_the_collector_attached(tmp_path, digits):
    X, y = digits
    torch.manual_seed(0)
    plain = train(torch.compile(mlp(), backend="aot_eager"), X, y, steps=STEPS)
    torch._dynamo.reset()
    watched = train(
        torch.compile(mlp(), backend="aot_eager"), X, y, steps=STEPS, collector=_watched(tmp_path)
    )
    assert_same_weights(plain, watched)


@needs_cpp
def test_inductor_compiled_model(tmp_path, digits):
    """Inductor: every signal on every sampled step, values as eager's up to rounding
    (its kernels round tanh unlike eager's, and the sampled steps run eagerly)."""
    X, y = digits
    torch.manual_seed(0)
    train(mlp(), X, y, steps=STEPS, collector=_watched(tmp_path / "eager"))
    torch.manual_seed(0)
    train(torch.compile(mlp()), X, y, steps=STEPS, collector=_watched(tmp_path / "compiled"))
    eager, compiled = read_scalars(tmp_path / "eager"), read_scalars(tmp_path / "compiled")
    assert sorted(compiled) == sorted(eager)
    for tag, values in eager.items():
        if tag.startswith("act/"):
            assert set(compiled[tag]) == SAMPLED, f"{tag}: sampled steps missing"
        if tag != T.STEP_SECONDS:
            assert compiled[tag] == pytest.approx(values, rel=1e-3, abs=1e-5), tag


def _counting_backend() -> tuple[Callable[..., object], list[int]]:
    """A dynamo backend that runs each graph as traced, and how often each graph it
    compiled was run (one entry per graph)."""
    calls: list[int] = []

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        index = len(calls)
        calls.append(0)

        def run(*args: torch.Tensor) -> object:
            calls[index] += 1
            return graph.forward(*args)

        return run

    return counting_backend, calls


def _graph_calls_per_step(tmp_path, X, y, watched: bool, how: str = "torch.compile") -> tuple[int, list[int]]:
    """Graphs compiled, and compiled graphs run in each step."""
    backend, calls = _counting_backend()
    model = _compiled(mlp(), how, backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, optimizer, tmp_path, **SETTINGS) if watched else None
    per_step = []
    for _step in range(4 * SETTINGS["every"]):
        before = sum(calls)
        optimizer.zero_grad()
        out = model(X[:64])
        loss = F.cross_entropy(out, y[:64])
        loss.backward()
        optimizer.step()
        if collector is not None:
            collector.step(loss=loss, outputs=out, targets=y[:64])
        per_step.append(sum(calls) - before)
    if collector is not None:
        collector.close()  # while the next step, a sampled one, is armed
    before = sum(calls)
    model(X[:64])
    per_step.append(sum(calls) - before)
    return len(calls), per_step


def test_steps_between_samples_run_the_whole_compiled_graph(tmp_path, digits):
    """Sampled steps run eagerly; every other step runs the one graph a plain compiled
    run runs, compiled once (no recompile per sampled step, no graph broken by hooks),
    and after `close()` the model runs compiled again."""
    X, y = digits
    plain_graphs, plain_calls = _graph_calls_per_step(tmp_path / "plain", X, y, watched=False)
    torch._dynamo.reset()
    graphs, calls = _graph_calls_per_step(tmp_path / "watched", X, y, watched=True)
    assert plain_graphs == graphs == 1 and set(plain_calls) == {1}
    sampled_steps_run = [0 if step % SETTINGS["every"] == 0 else 1 for step in range(len(calls) - 1)]
    assert calls == sampled_steps_run + [1], "close() leaves compiled code compiled"


def test_without_compiler_stances_hooks_are_kept_out_of_the_graph(tmp_path, digits, monkeypatch):
    """Before torch 2.6 there is no `set_stance`: the hooks then run outside the graph
    (it breaks there), and the values still arrive on every sampled step."""
    monkeypatch.delattr(torch.compiler, "set_stance")
    X, y = digits
    torch.manual_seed(0)
    train(mlp(), X, y, steps=STEPS, collector=_watched(tmp_path / "eager"))
    torch.manual_seed(0)
    train(
        torch.compile(mlp(), backend="aot_eager"),
        X,
        y,
        steps=STEPS,
        collector=_watched(tmp_path / "compiled"),
    )
    eager, compiled = read_scalars(tmp_path / "eager"), read_scalars(tmp_path / "compiled")
    for tag in (tag for tag in eager if tag.startswith("act/")):
        assert compiled[tag] == pytest.approx(eager[tag], rel=1e-5, abs=1e-7), tag


def test_two_watched_compiled_models_leave_compiled_code_compiled(tmp_path, digits):
    """Two compiled models, each watched (a GAN's generator and discriminator), sample on
    the same steps and disarm one after the other: compiled code must run compiled
    again once both are done, not stay eager with the stance the second found."""
    X, y = digits
    backend, calls = _counting_backend()
    pairs = []
    for name in ("first", "second"):
        model = torch.compile(mlp(), backend=backend)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        pairs.append((model, optimizer, watch(model, optimizer, tmp_path / name, **SETTINGS)))
    per_step = []
    for _step in range(2 * SETTINGS["every"] + 1):
        before = sum(calls)
        for model, optimizer, _ in pairs:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X[:64]), y[:64])
            loss.backward()
            optimizer.step()
        for _, _, collector in pairs:
            collector.step(loss=loss)
        per_step.append(sum(calls) - before)
    for _, _, collector in pairs:
        collector.close()
    assert per_step == [0 if step % SETTINGS["every"] == 0 else 2 for step in range(len(per_step))]
    for name in ("first", "second"):
        assert set(read_scalars(tmp_path / name)[T.dead_fraction_tag("1")]) == {0, 5, 10}


@pytest.mark.parametrize("how", ["torch.compile", "Module.compile"])
def test_code_run_between_steps_stays_compiled(tmp_path, digits, how):
    """Only the sampled step's forward runs eagerly: a validation pass of the watched
    model, or another compiled model, run between the step before and the sampled step
    runs compiled. (The stance is process-wide; held from one step() to the next, it
    made both eager, a validation pass every 50 steps on every sampled step's eve.)"""
    X, y = digits
    backend, calls = _counting_backend()
    model = _compiled(mlp(), how, backend)
    other = _compiled(mlp(seed=1), how, backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    compiled_call = model._compiled_call_impl  # Module.compile's, which a sampled step wraps
    collector = watch(model, optimizer, tmp_path, **SETTINGS)
    graphs_run_between = []
    for _step in range(2 * SETTINGS["every"] + 1):
        optimizer.zero_grad()
        out = model(X[:64])
        loss = F.cross_entropy(out, y[:64])
        loss.backward()
        optimizer.step()
        collector.step(loss=loss, outputs=out, targets=y[:64])
        before = sum(calls)
        model.eval()
        with torch.no_grad():
            model(X[64:128])
        model.train()
        other(X[:64])
        graphs_run_between.append(sum(calls) - before)
    collector.close()
    assert model._compiled_call_impl is compiled_call
    assert graphs_run_between == [2] * len(graphs_run_between)
    assert set(read_scalars(tmp_path)[T.dead_fraction_tag("1")]) == {0, 5, 10}


def test_a_model_trained_past_its_compiled_wrapper_is_measured_from_the_next_sample(tmp_path, digits):
    """watch(torch.compile(model)) hooks the wrapper; a loop that calls `model` itself
    never goes through it. The first sampled step shows that, and the later ones hook
    the layers as for any model."""
    X, y = digits
    model = mlp()
    compiled = torch.compile(model, backend="aot_eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(compiled, optimizer, tmp_path, **SETTINGS)
    for _step in range(STEPS):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[:64]), y[:64])
        loss.backward()
        optimizer.step()
        collector.step(loss=loss)
    collector.close()
    assert set(read_scalars(tmp_path)[T.dead_fraction_tag("1")]) == SAMPLED - {0}


@pytest.mark.parametrize("how", ["torch.compile", "Module.compile"])
def test_a_hook_that_fails_to_register_leaves_compiled_code_compiled(tmp_path, digits, monkeypatch, how):
    """An error while arming is reported (the activations switch off), and the steps
    after it run compiled: a stance set before the hooks must still be released. (Where
    the compiled wrapper's own hooks hold the stance, the first step runs compiled too.)"""

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no hooks here")

    monkeypatch.setattr(torch.nn.Module, "register_forward_hook", refuse)
    X, y = digits
    backend, graph_calls = _counting_backend()  # compiled in place too (not so on a bare Sequential)
    _compiled(mlp(), how, backend)(X[:8])
    assert graph_calls == [1]
    with pytest.warns(RuntimeWarning, match="no hooks here"):
        _, calls = _graph_calls_per_step(tmp_path, X, y, watched=True, how=how)
    assert calls == [int(how == "torch.compile")] + [1] * (len(calls) - 1)


def test_cuda_graph_trees_are_found_where_torch_keeps_them(monkeypatch):
    """On a device where torch.compile runs CUDA graphs (mode="reduce-overhead") the loss
    is copied at step(), not kept by reference: a replay overwrites it. Finding them reads
    torch internals (`collectors.cuda_graphs`); this checks, in the torch installed, that
    they are where it looks. The loss itself is checked on a GPU (test_collector_cuda.py)."""
    from trainscope.collectors.cuda_graphs import cuda_graphs_run_on

    trees = pytest.importorskip("torch._inductor.cudagraph_trees")
    containers = trees.get_obj(trees.local, "tree_manager_containers")
    monkeypatch.delitem(containers, 0, raising=False)
    cuda0 = torch.device("cuda", 0)
    assert not cuda_graphs_run_on(cuda0)
    monkeypatch.setitem(containers, 0, trees.TreeManagerContainer(0))
    assert not cuda_graphs_run_on(cuda0)  # a container, but no graph recorded in it
    monkeypatch.setattr(containers[0], "tree_manager", object())
    assert cuda_graphs_run_on(cuda0)
    assert not cuda_graphs_run_on(torch.device("cuda", 1))
    assert not cuda_graphs_run_on(torch.device("cpu"))
