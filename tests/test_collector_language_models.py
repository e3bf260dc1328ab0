"""A language model's (batch, tokens, vocabulary) logits, trained for real: a character
model on generated text, in the two ways loops hand over its labels.

nanoGPT style: ``x, y = ids[:, :-1], ids[:, 1:]``, the labels already shifted. Hugging
Face style: the labels are the input ids (padding as -100), and the logits of token t
predict the label of token t + 1. The collector tells them apart by the inputs it sees
(the model's forward on a sampled step, or step()'s `inputs=`); where it sees none it
records no accuracy and says why once.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from collector_helpers import DEVICES, generated_text, read_scalars
from torch import nn

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.facts import input_kind, num_classes
from trainscope.analyzers.reading import read_logdir
from trainscope.collectors import watch
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

STEPS = 30
BATCH = 8
LENGTH = 32  # tokens a sequence: not the vocabulary's size (which would read as (batch, classes, length))
# Statistics every 3rd step and a sample every 5th: steps 1, 2, 4, 7... take the quiet
# path, and a flush every 7 steps reads the kept logits of several shapes of step.
SETTINGS = {"stats_budget": None, "stats_every": 3, "every": 5, "flush_steps": 7}
STATISTICS_TAGS = (T.INPUT_MEAN, T.INPUT_STD, T.LABEL_ENTROPY, T.LABEL_ENTROPY_SEEN)


TEXT = generated_text(6000)
ALPHABET = sorted(set(TEXT))
VOCABULARY = len(ALPHABET)
IDS = torch.tensor([ALPHABET.index(c) for c in TEXT])


def windows(step: int, length: int) -> torch.Tensor:
    """`BATCH` windows of `length` tokens of the text, at offsets drawn for `step`."""
    g = torch.Generator().manual_seed(step)
    starts = torch.randint(0, len(IDS) - length, (BATCH,), generator=g)
    return torch.stack([IDS[s : s + length] for s in starts.tolist()])


class CharModel(nn.Module):
    """Embedding, a GRU (causal: token t sees tokens up to t) and a linear head: ~2,300 parameters."""

    def __init__(self, vocabulary: int = VOCABULARY, width: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocabulary, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, vocabulary)

    def forward(
        self, ids: torch.Tensor | None = None, *, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden, _ = self.gru(self.emb(ids if ids is not None else input_ids))
        return self.head(hidden)  # (batch, tokens, vocabulary)


class DictInputModel(CharModel):
    """Called with a batch dictionary: the input ids are not the model's first argument."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(batch["ids"])


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    valid = labels != -100
    return (logits.argmax(-1) == labels)[valid].float().mean().item()


def nanogpt_step(model: nn.Module, step: int, device: str) -> dict:
    """Labels already shifted: the logits of token t predict y[t] = ids[t + 1]."""
    ids = windows(step, LENGTH + 1).to(device)
    x, y = ids[:, :-1], ids[:, 1:]
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, VOCABULARY), y.reshape(-1))
    return {"loss": loss, "outputs": logits, "targets": y, "expected": _accuracy(logits, y)}


def padded(ids: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face's padding: the pad id in the input, ignore_index (-100) in the labels.
    Row i ends in i % 4 padded places."""
    ids, labels = ids.clone(), ids.clone()
    for row in range(ids.shape[0]):
        pad = (row + step) % 4
        if pad:
            ids[row, -pad:] = ALPHABET.index(" ")
            labels[row, -pad:] = -100
    return ids, labels


def hugging_face_step(model: nn.Module, step: int, device: str, keyword: bool = False) -> dict:
    """Labels are the input ids: the model (here the loss) shifts them."""
    ids, labels = padded(windows(step, LENGTH).to(device), step)
    logits = model(input_ids=ids) if keyword else model(ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCABULARY), labels[:, 1:].reshape(-1))
    return {
        "loss": loss,
        "outputs": logits,
        "targets": labels,
        "expected": _accuracy(logits[:, :-1], labels[:, 1:]),
    }


def train(log_dir, step_fn, *, model: nn.Module | None = None, device: str = "cpu", accumulate: int = 1):
    """Train `STEPS` Adam steps; each step hands step() the last micro-batch's logits and
    labels. Returns the collector and each step's accuracy as computed at the step."""
    torch.manual_seed(0)
    model = (model or CharModel()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    collector = watch(model, opt, log_dir, **SETTINGS)
    expected = {}
    for step in range(STEPS):
        opt.zero_grad()
        for micro in range(accumulate):
            out = step_fn(model, step * accumulate + micro, device)
            (out["loss"] / accumulate).backward()
        opt.step()
        expected[step] = out["expected"]
        collector.step(loss=out["loss"], outputs=out["outputs"], targets=out["targets"])
    collector.close()
    return collector, expected


def run_json(log_dir) -> dict:
    return json.loads((log_dir / RJ.RUN_JSON).read_text())


def skip_reasons(log_dir) -> dict[str, str]:
    (run,) = read_logdir(log_dir).runs.values()
    return {skipped.rule: skipped.reason for skipped in diagnose_run(run).skipped}


STYLES = {
    "nanogpt": (nanogpt_step, 1),
    "hugging-face": (hugging_face_step, 1),
    "hugging-face-input_ids=": (lambda m, s, d: hugging_face_step(m, s, d, keyword=True), 1),
    "hugging-face-accumulating-2": (hugging_face_step, 2),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("style", STYLES)
def test_a_language_model_gets_token_accuracy_and_the_vocabulary(tmp_path, style, device):
    """Every step's train/acc is the share of labelled tokens whose next token the
    logits got right, however the loop shifts the labels; the vocabulary is run.json's
    num_classes (chance level ln V for the rules), the input is token ids, and neither
    an input scale nor a label mix is recorded for tokens."""
    step_fn, accumulate = STYLES[style]
    collector, expected = train(tmp_path, step_fn, device=device, accumulate=accumulate)
    scalars = read_scalars(tmp_path)
    assert scalars[T.TRAIN_ACC] == pytest.approx(expected, abs=1e-6)
    assert max(expected.values()) > 0.3  # it learnt something: a wrong shift would read near chance
    meta = run_json(tmp_path)
    assert meta[RJ.K_NUM_CLASSES] == VOCABULARY
    assert meta[RJ.K_INPUT_KIND] == RJ.INPUT_TOKENS
    assert not set(STATISTICS_TAGS) & set(scalars)
    assert collector.errors == []


def test_the_rules_say_why_they_cannot_judge_a_language_model(tmp_path):
    """Rules that need an input scale or a label mix say why they do not apply, rather
    than that a tag is missing; the analyzers read the vocabulary and the input kind."""
    train(tmp_path, nanogpt_step)
    (run,) = read_logdir(tmp_path).runs.values()
    assert num_classes(run) == VOCABULARY and input_kind(run) == RJ.INPUT_TOKENS
    reasons = skip_reasons(tmp_path)
    assert "integer token ids" in reasons["unnormalized_inputs"]
    assert "targets are tokens" in reasons["unshuffled_data"]


def dict_input_step(model: nn.Module, step: int, device: str) -> dict:
    out = nanogpt_step(lambda x: model({"ids": x}), step, device)  # type: ignore[arg-type]
    out["inputs_if_given"] = windows(step, LENGTH + 1)[:, :-1]
    return out


def test_unseen_input_ids_give_no_accuracy_and_say_why_once(tmp_path):
    """The model called with a dict: its input ids are not seen, so whether the labels
    are shifted cannot be told. No train/acc (not one against a guessed token), said
    once; the vocabulary is still known, and the loss recorded every step."""
    with pytest.warns(RuntimeWarning, match="input is not seen") as warned:
        collector, _ = train(tmp_path, dict_input_step, model=DictInputModel())
    assert len([w for w in warned if "input is not seen" in str(w.message)]) == 1
    scalars = read_scalars(tmp_path)
    assert T.TRAIN_ACC not in scalars
    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(STEPS))
    assert len(collector.errors) == 1 and collector.errors[0].startswith("token accuracy")
    meta = run_json(tmp_path)
    assert meta[RJ.K_ERRORS] == collector.errors
    assert meta[RJ.K_NUM_CLASSES] == VOCABULARY and meta[RJ.K_INPUT_KIND] is None


def test_input_ids_given_to_step_tell_the_shift(tmp_path):
    """The same loop, passing the input ids as step(inputs=...): accuracy every step."""
    torch.manual_seed(0)
    model = DictInputModel()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    collector = watch(model, opt, tmp_path, **SETTINGS)
    expected = {}
    for step in range(STEPS):
        opt.zero_grad()
        out = dict_input_step(model, step, "cpu")
        out["loss"].backward()
        opt.step()
        expected[step] = out["expected"]
        collector.step(
            loss=out["loss"], outputs=out["outputs"], targets=out["targets"], inputs=out["inputs_if_given"]
        )
    collector.close()
    assert read_scalars(tmp_path)[T.TRAIN_ACC] == pytest.approx(expected, abs=1e-6)
    assert run_json(tmp_path)[RJ.K_INPUT_KIND] == RJ.INPUT_TOKENS
    assert collector.errors == []


class LastCharacterModel(CharModel):
    """Reads a window and predicts the character after it: one label per sequence."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(ids)[:, -1]  # (batch, vocabulary)


def test_one_label_per_token_sequence_keeps_its_label_mix(tmp_path):
    """Token ids in, one label per sequence out (a text classifier's shape): the labels'
    mix across a batch is about how it was drawn, so label entropy is recorded."""
    torch.manual_seed(0)
    model = LastCharacterModel()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    collector = watch(model, opt, tmp_path, **SETTINGS)
    for step in range(10):
        ids = windows(step, LENGTH + 1)
        opt.zero_grad()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits, ids[:, -1])
        loss.backward()
        opt.step()
        collector.step(loss=loss, outputs=logits, targets=ids[:, -1])
    collector.close()
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.LABEL_ENTROPY]) == [0, 5]
    assert T.INPUT_MEAN not in scalars
    assert run_json(tmp_path)[RJ.K_INPUT_KIND] == RJ.INPUT_TOKENS


class FrameTagger(nn.Module):
    """Features in, a label per position out: (batch, frames, classes) logits whose
    labels are not the input, so not shifted by the model."""

    def __init__(self, features: int = VOCABULARY, width: int = 16) -> None:
        super().__init__()
        self.gru = nn.GRU(features, width, batch_first=True)
        self.head = nn.Linear(width, VOCABULARY)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(frames)
        return self.head(hidden)


def frame_step(model: nn.Module, step: int, device: str) -> dict:
    """The next character of each place, from the characters so far given as one-hot features."""
    ids = windows(step, LENGTH + 1).to(device)
    frames, y = F.one_hot(ids[:, :-1], VOCABULARY).float(), ids[:, 1:]
    logits = model(frames)
    loss = F.cross_entropy(logits.reshape(-1, VOCABULARY), y.reshape(-1))
    return {"loss": loss, "outputs": logits, "targets": y, "expected": _accuracy(logits, y)}


def test_a_label_per_frame_of_features_is_taken_as_it_stands(tmp_path):
    """Float features cannot be the labels: the logits of each place are matched with
    the label of that place; the input kind is features."""
    collector, expected = train(tmp_path, frame_step, model=FrameTagger())
    assert read_scalars(tmp_path)[T.TRAIN_ACC] == pytest.approx(expected, abs=1e-6)
    assert run_json(tmp_path)[RJ.K_INPUT_KIND] == RJ.INPUT_FEATURES
    assert collector.errors == []
