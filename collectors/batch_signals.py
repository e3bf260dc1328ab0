"""What `step()` learns from the batch: its size, the accuracy measured at once, the
facts run.json keeps (the classes, what the input is), and on sampled steps the input
and label statistics (collectors/batch_stats.py computes them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from trainscope.collectors import batch_stats
from trainscope.collectors.deferred_accuracy import DeferredAccuracy
from trainscope.collectors.guard import TOKEN_LABELS, ErrorGuard
from trainscope.collectors.packets import FractionSpec, Packet, ScalarSpec
from trainscope.logformat import tags as T

# The part that finds the logits in `outputs=` that are not a tensor (reported once).
OUTPUTS = "outputs"


def logits_of(outputs: Any, guard: ErrorGuard) -> torch.Tensor | None:
    """The logits in what a model returned, where they are unambiguous: a tensor (of
    any subclass), a Hugging Face output's ``.logits``, a dict's ``"logits"``, the
    first tensor of one dimension or more in a tuple or list (a loss first, as
    ``return_dict=False`` models return it, is passed over). Anything else is said
    once, and gets no accuracy."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    found = getattr(outputs, "logits", None)
    if found is None and isinstance(outputs, Mapping):
        found = outputs.get("logits")
    if found is None and isinstance(outputs, (tuple, list)):
        found = next((t for t in outputs if isinstance(t, torch.Tensor) and t.dim() >= 1), None)
    if isinstance(found, torch.Tensor):
        return found
    if guard.enabled(OUTPUTS):
        problem = TypeError(
            f"step() got outputs= as {type(outputs).__name__}, with no logits to be found in it: pass the logits"
            " tensor, or a model output with .logits, a dict with a 'logits' key, or a tuple whose first tensor"
            " (of one dimension or more) is the logits"
        )
        guard.report(OUTPUTS, problem, consequence=f"No {T.TRAIN_ACC} is recorded from such outputs")
    return None


class BatchSignals:
    def __init__(
        self,
        guard: ErrorGuard,
        accuracy: DeferredAccuracy,
        num_classes: int | None,
        batch_size: float | None,
        note_facts: Callable[[str | None, int | None], None],
    ) -> None:
        self._guard = guard
        self._accuracy = accuracy
        self._num_classes = num_classes
        self.batch_size = batch_size
        self.batch_size_fixed = batch_size is not None  # given: never taken from the tensors
        self._note_facts = note_facts  # what the input is and how many classes, for run.json
        self._label_seen: torch.Tensor | None = None
        self.inputs_given = False  # whether the last sampled step's step() got a float input batch
        self.stats_cost = 0.0  # host seconds the accuracy measured at once took in this step

    def update_batch_size(self, given: int | None, *tensors: Any) -> None:
        if given:
            self.batch_size = float(given)
        elif not self.batch_size_fixed:
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.dim() >= 1:
                    self.batch_size = float(t.shape[0])
                    return

    def record(
        self,
        packet: Packet,
        outputs: Any,
        targets: Any,
        inputs: Any,
        model_input: torch.Tensor | None,
        want_acc: bool,
        batch_size: int | None,
        sampled: bool,
    ) -> None:
        """Accuracy measured at once (`want_acc`: not kept for the flush), the facts
        run.json keeps (classes, what the input is), and on sampled steps the input and
        label statistics. `model_input` is what the model's forward got, where the probe
        watched it; `inputs` (step()'s) takes its place where given."""
        outputs = outputs if isinstance(outputs, torch.Tensor) else None
        targets = targets if isinstance(targets, torch.Tensor) else None
        inputs = inputs if isinstance(inputs, torch.Tensor) else None
        seen_input = model_input if inputs is None else inputs
        self.update_batch_size(batch_size, targets, inputs, outputs)
        dim = batch_stats.logits_class_dim(outputs, targets)
        classes = batch_stats.class_count(outputs, dim, self._num_classes)
        labels_ok = classes is not None and batch_stats.is_label_tensor(targets)
        self._note_facts(batch_stats.input_kind(seen_input), classes if labels_ok else None)
        items = packet.items
        if want_acc and labels_ok:
            if dim == batch_stats.TOKEN_CLASS_DIM and self._accuracy.token_shift is None:
                self._guard.call(
                    TOKEN_LABELS, self._judge_token_labels, targets, seen_input, classes, sampled
                )
            plan = self._accuracy.plan(outputs, targets)
            if plan is not None:
                started = time.perf_counter()
                counts = batch_stats.correct_and_valid(outputs, targets, plan.classes, plan.dim, plan.shift)
                items.append((FractionSpec(T.TRAIN_ACC), counts))
                self.stats_cost += time.perf_counter() - started
        if not sampled:
            return
        self.inputs_given = inputs is not None and inputs.is_floating_point()
        if self.inputs_given:  # overrides what the forward hook saw
            mean, std = batch_stats.input_moments(inputs)
            items.append((ScalarSpec(T.INPUT_MEAN), mean))
            items.append((ScalarSpec(T.INPUT_STD), std))
        if labels_ok and batch_stats.labels_per_example(
            targets, seen_input
        ):  # what the batch's class mix is about
            counts = batch_stats.label_counts(targets, classes)
            seen = counts if self._label_seen is None else self._label_seen + counts
            self._label_seen = seen
            items.append((ScalarSpec(T.LABEL_ENTROPY), batch_stats.normalized_entropy(counts)))
            items.append((ScalarSpec(T.LABEL_ENTROPY_SEEN), batch_stats.normalized_entropy(seen)))

    def _judge_token_labels(
        self, targets: torch.Tensor, seen_input: torch.Tensor | None, classes: int, sampled: bool
    ) -> None:
        """Learn, once per run, whether a language model's (batch, tokens) labels are its
        input ids (Hugging Face's models shift them inside) or already the next tokens
        (nanoGPT's ``y = ids[:, 1:]``, or a tag per token, or per frame of features),
        from the first step whose input is seen: step()'s `inputs`, or the model's forward
        on a sampled step. Where a sampled step shows none (the model called with a dict,
        say), it cannot be seen: that is said once, and such logits get no accuracy
        rather than one against a guessed token."""
        if seen_input is not None:
            same = batch_stats.targets_are_inputs(targets, seen_input, classes)
            if same is not None:  # None: no valid label in this batch to tell by
                self._accuracy.learn_token_shift(
                    batch_stats.UNSHIFTED_LABELS if same else batch_stats.SHIFTED_LABELS
                )
            return
        if sampled:
            problem = ValueError(
                "the model's input is not seen (its first argument or input_ids= is no tensor, and step() got"
                " no inputs=): whether the labels of its (batch, tokens, vocabulary) logits are its input ids"
                " or already shifted by one token cannot be told"
            )
            consequence = (
                f"No {T.TRAIN_ACC} is recorded for them; pass inputs= (the input ids) to step(), or the logits"
                " and labels flattened and shifted as your loss takes them"
            )
            self._guard.report(TOKEN_LABELS, problem, consequence=consequence)
