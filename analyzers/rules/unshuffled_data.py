"""Rule `unshuffled_data`: Batches hold far fewer classes than the data has: the data arrives sorted.

The check's docstring says what is measured, why it matters and what to do; the dashboard
and docs/rules.md show it.
"""

from __future__ import annotations

from collections.abc import Iterable

from trainscope.analyzers.facts import (
    batch_size,
    input_kind,
    num_classes,
)
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import (
    cite,
    finding,
    fmt,
    fmt_pct,
    fmt_step,
)
from trainscope.analyzers.rules.labels import UNSHUFFLED_RATIO, label_mix
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as R
from trainscope.logformat import tags as T

RULE_ID = "unshuffled_data"
NAME = "unshuffled data"  # what the finding is called where it is listed under another
SHUFFLE_SOURCE = cite(
    ("001", 54, "尽量对数据做shuffle", "shuffle the data whenever you can"),
    ("001", 108, "样本要足够随机", "the samples must be random enough"),
)


def check(run: Run) -> Iterable[Finding]:
    """Batches hold far fewer classes than the data has: the data arrives sorted.

    Why it matters: a model fed class after class fits the current class and forgets
    the others; the loss swings at every class boundary and the run converges poorly
    or not at all. (The loss-curve rules stand aside while this holds: their curve
    then follows the class order, not the learning rate.)
    Measured: the mean per-batch label entropy (``data/label_entropy``, normalized by
    ln C) against the entropy of all labels seen so far (``data/label_entropy_seen``),
    capped at what a batch of B examples can hold (ln B / ln C when B < C): below 50%
    is a warning. Samples where fewer labels have been seen (entropy < 0.1) are left
    out.
    What to do: shuffle every epoch (DataLoader(shuffle=True)), or use a shuffle
    buffer for streamed data.
    """
    if input_kind(run) == R.INPUT_TOKENS and run.scalar(T.LABEL_ENTROPY) is None:
        # A text classifier's one label per sequence is still judged.
        raise Skip(
            "a language model's targets are tokens: batches cannot be told sorted or shuffled from their label mix"
        )
    mix = label_mix(run)
    if mix.ratio >= UNSHUFFLED_RATIO:
        return []
    return [
        finding(
            RULE_ID,
            "warning",
            "Data looks unshuffled: batches hold few classes",
            f"The mean label entropy per batch is {fmt(mix.batch_entropy)} (normalized), "
            f"{fmt_pct(mix.ratio)} of the {fmt(mix.expected)} a shuffled batch would have from the "
            f"labels seen so far ({mix.samples} samples from step {fmt_step(mix.first_step)}): "
            "each batch holds one or a few classes, as when the data arrives sorted by label.",
            (
                "Shuffle every epoch: DataLoader(dataset, shuffle=True) (or a RandomSampler).",
                "For streamed/IterableDataset data, add a shuffle "
                "buffer of several thousand examples, and do not "
                "write the data sorted by label.",
            ),
            SHUFFLE_SOURCE,
            step=mix.first_step,
            evidence={
                "batch_entropy": mix.batch_entropy,
                "expected_entropy": mix.expected,
                "ratio": mix.ratio,
                "samples": mix.samples,
                "batch_size": batch_size(run),
                "num_classes": num_classes(run),
            },
        )
    ]
