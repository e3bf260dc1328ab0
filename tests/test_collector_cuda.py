"""The collector on a GPU: the same records as torch computes, and no host sync between
flushes (bit-identical weights and AMP on CUDA: `test_collector_survival.py`).
Skipped where no CUDA device exists.

`torch.cuda.set_sync_debug_mode("error")` turns every synchronizing call (`.item()`,
a blocking copy, `nonzero`, ...) into an error.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from collector_helpers import SmallCNN, mlp, read_scalars, train
from collectors import watch
from logformat import tags as T

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def cuda_digits(digits):
    return tuple(t.cuda() for t in digits)


def test_steps_between_flushes_do_not_sync(tmp_path, cuda_digits):
    X, y = cuda_digits
    model = SmallCNN().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=True)
    # Sample and histogram often, so the sampled paths run inside the checked window.
    collector = watch(model, opt, tmp_path, every=4, histogram_every=4, noise_window=3, flush_steps=10**6, flush_seconds=1e9)

    def step(i: int) -> None:
        idx = torch.arange(i * 64, i * 64 + 64, device="cuda") % X.shape[0]
        opt.zero_grad()
        out = model(X[idx])
        loss = F.cross_entropy(out, y[idx])
        loss.backward()
        opt.step()
        collector.step(loss=loss, outputs=out, targets=y[idx], inputs=X[idx])

    for i in range(8):  # first use builds small cached index tensors on the device
        step(i)
    collector.flush()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(8, 40):
            step(i)
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
        layer = lambda n: torch.cat([grads[f"{n}.weight"].reshape(-1), grads[f"{n}.bias"]]).norm().item()
        expected[step] = {
            T.grad_norm_tag(n): layer(n) for n in "024"
        } | {
            T.GRAD_GLOBAL_NORM: torch.cat([g.reshape(-1) for g in grads.values()]).norm().item(),
            T.TRAIN_ACC: (out.argmax(1) == yb).double().mean().item(),
            T.TRAIN_LOSS: F.cross_entropy(out, yb).item(),
        }

    train(mlp().cuda(), X, y, steps=20, on_step=measure, collector=lambda m, o: watch(m, o, tmp_path))
    scalars = read_scalars(tmp_path)
    for step, values in expected.items():
        for tag, value in values.items():
            assert scalars[tag][step] == pytest.approx(value, rel=1e-5), (tag, step)

