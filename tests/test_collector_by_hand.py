"""`watch(model)` without an optimizer: a loop that updates the parameters by hand, as
PyTorch's word-language-model example does (clip, then ``p.data.add_(p.grad, alpha=-lr)``,
the learning rate divided by 4 when validation stalls), on generated text.

The gradients are read at `step()`, each sampled step's update from a copy of the
weights taken at the `step()` before, the learning rate from ``step(lr=...)``; checked
against a direct computation.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from collector_helpers import generated_text, read_scalars
from torch import nn

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.reading import read_logdir
from trainscope.collectors import watch
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

STEPS = 60
BPTT = 16  # tokens per sequence
BATCH = 16
CLIP = 0.25  # the example's
SAMPLED = [0, 10, 20, 30, 40, 50]


def generated_ids(chars: int = 8000, seed: int = 0) -> tuple[torch.Tensor, int]:
    text = generated_text(chars, seed)
    alphabet = sorted(set(text))
    return torch.tensor([alphabet.index(c) for c in text]), len(alphabet)


IDS, VOCABULARY = generated_ids()


class RNNModel(nn.Module):
    """The example's model, small: embedding, LSTM, decoder (logits flattened to (tokens, vocabulary))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Embedding(VOCABULARY, 32)
        self.rnn = nn.LSTM(32, 48, batch_first=True)
        self.decoder = nn.Linear(48, VOCABULARY)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(self.encoder(ids))
        return self.decoder(output).reshape(-1, VOCABULARY)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    starts = torch.randint(0, len(IDS) - BPTT - 1, (BATCH,), generator=g).tolist()
    data = torch.stack([IDS[s : s + BPTT] for s in starts])
    targets = torch.stack([IDS[s + 1 : s + BPTT + 1] for s in starts]).reshape(-1)
    return data, targets


def train_by_hand(log_dir, seen: dict) -> None:
    model = RNNModel()
    collector = watch(model, log_dir=log_dir, every=10, stats_budget=None)
    lr = 5.0
    for step in range(STEPS):
        data, targets = batch(step)
        model.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        if step in (10, 11):  # what the collector should find, computed here directly
            weight = model.decoder.weight
            seen[step] = {
                "grad": torch.linalg.vector_norm(
                    torch.cat([weight.grad.flatten(), model.decoder.bias.grad])
                ).item(),
                "before": torch.cat([weight.detach().flatten(), model.decoder.bias.detach()]).clone(),
            }
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        if step == 10:
            after = torch.cat([model.decoder.weight.detach().flatten(), model.decoder.bias.detach()])
            before = seen[10]["before"]
            seen[10]["ratio"] = (
                torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before)
            ).item()
        collector.step(loss, outputs=output, targets=targets, lr=lr)
        if step == 29:
            lr /= 4.0  # the example anneals when the validation loss stops falling
            collector.log_validation(loss=loss.item() + 0.1)
    collector.close()


def test_a_loop_without_an_optimizer_records_gradients_updates_and_lr(tmp_path):
    seen: dict = {}
    train_by_hand(tmp_path, seen)
    scalars = read_scalars(tmp_path)

    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(STEPS))
    assert T.STEP_SKIPPED not in scalars  # no optimizer is not a skipped step
    for layer in ("encoder", "rnn", "decoder"):
        assert len(scalars[T.grad_norm_tag(layer)]) == STEPS, layer
        assert sorted(scalars[T.update_ratio_tag(layer)]) == SAMPLED, layer
        assert sorted(scalars[T.weight_norm_tag(layer)]) == SAMPLED, layer
    # The gradients as the update used them (clipped here, by the loop itself).
    for step in (10, 11):
        assert scalars[T.grad_norm_tag("decoder")][step] == pytest.approx(seen[step]["grad"], rel=1e-4)
    assert max(scalars[T.GRAD_GLOBAL_NORM].values()) <= CLIP * (1 + 1e-4)
    # The update of a sampled step: the weights at its step() against those at the step() before.
    assert scalars[T.update_ratio_tag("decoder")][10] == pytest.approx(seen[10]["ratio"], rel=1e-4)
    lrs = scalars[T.LR]
    assert lrs[0] == lrs[29] == 5.0 and lrs[30] == lrs[59] == 1.25
    assert len(scalars[T.TRAIN_ACC]) == STEPS
    assert scalars[T.VAL_LOSS].keys() == {29}

    run_json = json.loads((tmp_path / RJ.RUN_JSON).read_text())
    assert run_json[RJ.K_OPTIMIZER]["type"] == "by hand"
    assert run_json[RJ.K_STATUS] == RJ.STATUS_FINISHED
    assert [layer["name"] for layer in run_json[RJ.K_MODEL]["layers"]] == ["encoder", "rnn", "decoder"]


def test_a_loop_without_an_optimizer_is_diagnosed(tmp_path):
    train_by_hand(tmp_path, {})
    run = read_logdir(tmp_path).runs["."]
    report = diagnose_run(run)
    skipped = {s.rule for s in report.skipped}
    assert "lr_too_low" not in skipped and "lr_too_high" not in skipped  # update ratios and lr are there
    assert math.isfinite(run.scalar(T.update_ratio_tag("rnn")).values[-1])
