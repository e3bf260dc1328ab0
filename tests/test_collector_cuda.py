"""The collector on a GPU: the same records as torch computes, no host sync between
flushes, and every loss under CUDA graphs (bit-identical weights and AMP on CUDA:
`test_collector_survival.py`). Skipped where no CUDA device exists.

`torch.cuda.set_sync_debug_mode("error")` turns every synchronizing call (`.item()`,
a blocking copy, `nonzero`, ...) into an error.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from collector_helpers import SmallCNN, mlp, read_scalars, train

from trainscope.collectors import watch
from trainscope.logformat import tags as T

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def cuda_digits(digits):
    return tuple(t.cuda() for t in digits)


def _train_step(model, opt, X, y, i: int, collector=None) -> None:
    """Step `i` over a batch of 64 digits on the device, recorded if a collector is given."""
    idx = torch.arange(i * 64, i * 64 + 64, device="cuda") % X.shape[0]
    opt.zero_grad()
    out = model(X[idx])
    loss = F.cross_entropy(out, y[idx])
    loss.backward()
    opt.step()
    if collector is not None:
        collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx])


def test_steps_between_flushes_do_not_sync(tmp_path, cuda_digits):
    X, y = cuda_digits
    model = SmallCNN().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True)
    # Sample and histogram often, so the sampled paths run inside the checked window.
    collector = watch(
        model, opt, tmp_path, every=4, histogram_every=4, noise_window=3, flush_steps=10**6, flush_seconds=1e9
    )
    for i in range(8):  # first use builds small cached index tensors on the device
        _train_step(model, opt, X, y, i, collector)
    collector.flush()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(8, 40):
            _train_step(model, opt, X, y, i, collector)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    collector.close()
    assert collector.errors == []
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(40))
    assert sorted(scalars[T.dead_fraction_tag("act")]) == list(range(0, 40, 4))
    assert sorted(scalars[T.update_ratio_tag("fc")]) == list(range(0, 40, 4))


def test_recorded_values_match_torch_on_cuda(tmp_path, cuda_digits):
    """Per-layer gradient norms (`_foreach_norm` on the device, folded on the host) and
    accuracy (counted on the device, divided on the host) against direct computation."""
    X, y = cuda_digits
    expected: dict[int, dict[str, float]] = {}

    def measure(step, model, xb, yb, out):
        grads = {name: p.grad.double() for name, p in model.named_parameters()}

        def layer(n: str) -> float:
            return torch.cat([grads[f"{n}.weight"].reshape(-1), grads[f"{n}.bias"]]).norm().item()

        expected[step] = {T.grad_norm_tag(n): layer(n) for n in "024"} | {
            T.GRAD_GLOBAL_NORM: torch.cat([g.reshape(-1) for g in grads.values()]).norm().item(),
            T.TRAIN_ACC: (out.argmax(1) == yb).double().mean().item(),
            T.TRAIN_LOSS: F.cross_entropy(out, yb).item(),
        }

    train(mlp().cuda(), X, y, steps=20, on_step=measure, collector=lambda m, o: watch(m, o, tmp_path))
    scalars = read_scalars(tmp_path)
    for step, values in expected.items():
        for tag, value in values.items():
            assert scalars[tag][step] == pytest.approx(value, rel=1e-5), (tag, step)


def _train_with_cuda_graphs(log_dir, X, y, steps: int = 12) -> tuple[object, dict[int, float]]:
    """Digits with the loss computed inside torch.compile(mode="reduce-overhead"), as a
    Hugging Face model computes it inside forward: the loss is an output of a CUDA graph,
    whose memory the next step's replay writes again."""
    model = mlp().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    @torch.compile(mode="reduce-overhead")
    def loss_of(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(xb), yb)

    collector = watch(model, opt, log_dir, flush_steps=1000, flush_seconds=1e9)
    losses = {}
    for step in range(steps):
        idx = (torch.arange(64, device="cuda") + step * 64) % X.shape[0]
        opt.zero_grad()
        loss = loss_of(X[idx], y[idx])
        loss.backward()
        opt.step()
        losses[step] = loss.item()
        collector.step(loss=loss)
    collector.close()
    return collector, losses


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_loss_from_cuda_graphs_is_copied_and_every_one_arrives(tmp_path, cuda_digits):
    from trainscope.collectors.cuda_graphs import cuda_graphs_run_on

    collector, losses = _train_with_cuda_graphs(tmp_path, *cuda_digits)
    assert cuda_graphs_run_on(torch.device("cuda", torch.cuda.current_device()))  # the graphs did run
    assert collector.errors == []
    assert read_scalars(tmp_path)[T.TRAIN_LOSS] == pytest.approx(losses, rel=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_loss_overwritten_by_cuda_graphs_is_caught_where_they_go_unseen(tmp_path, cuda_digits, monkeypatch):
    """Should the graphs go unseen (torch internals changed), the loss kept by reference
    is overwritten by the next replay, and reading it raises: that one loss is dropped and
    reported, later losses are copied, and the flush still writes everything else."""
    monkeypatch.setattr("trainscope.collectors.collector.cuda_graphs_run_on", lambda device: False)
    with pytest.warns(RuntimeWarning, match=r"train/loss of step \d+ was overwritten"):
        collector, losses = _train_with_cuda_graphs(tmp_path, *cuda_digits)
    assert len(collector.errors) == 1
    scalars = read_scalars(tmp_path)
    recorded = scalars[T.TRAIN_LOSS]
    assert len(recorded) == len(losses) - 1
    assert recorded == pytest.approx({step: losses[step] for step in recorded}, rel=1e-6)
    assert sorted(scalars[T.GRAD_GLOBAL_NORM]) == sorted(losses)


def _sharded_steps(tmp_path, X, y, watched: bool, steps: int = 24) -> tuple[list[str], object]:
    """A model sharded with `fully_shard` on a one-rank NCCL group, trained `steps`
    steps under `set_sync_debug_mode("warn")` after 8 warm-up steps: the sync warnings
    raised (FSDP's own included) and the collector, if `watched`."""
    import warnings

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model = SmallCNN().cuda()
        for module in (model.conv, model.fc):
            fully_shard(module)
        fully_shard(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True)
        settings = {
            "every": 4,
            "histogram_every": 4,
            "noise_window": 3,
            "flush_steps": 10**6,
            "flush_seconds": 1e9,
        }
        collector = watch(model, opt, tmp_path / "run", **settings) if watched else None
        for i in range(8):
            _train_step(model, opt, X, y, i, collector)
        if collector is not None:
            collector.flush()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for i in range(8, 8 + steps):
                    _train_step(model, opt, X, y, i, collector)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        if collector is not None:
            collector.close()
        return [str(w.message) for w in caught if "synchroniz" in str(w.message)], collector
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_nccl_available(), reason="needs NCCL")
def test_a_sharded_model_s_steps_between_flushes_add_no_sync(tmp_path, cuda_digits):
    """FSDP may synchronize on its own; the collector, measuring each rank's shards,
    must add no synchronization of its own between flushes."""
    plain, _ = _sharded_steps(tmp_path / "plain", *cuda_digits, watched=False)
    syncs, collector = _sharded_steps(tmp_path / "watched", *cuda_digits, watched=True)
    assert collector.errors == []
    assert len(syncs) == len(plain), syncs[:3]
    scalars = read_scalars(tmp_path / "watched" / "run")
    assert sorted(scalars[T.shard_tag(0, T.ShardSquares.GRAD, "fc")]) == list(range(32))
