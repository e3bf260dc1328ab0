"""Runs collector code so that its errors never reach the training loop.

The collector's promise is that attaching it cannot break a run. Every hook body
goes through `ErrorGuard.call`: the first error of a part is reported once (a
RuntimeWarning and a line in run.json) and that part is switched off, so a broken
statistic costs nothing afterwards and the user is not flooded.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

# Parts that more than one module switches or reads (the others are named where used).
# The part that keeps the loss by reference; its error (the loss changed in place
# before the flush) switches it off, and losses are copied from then on.
BORROWING = "loss by reference"
# The part that keeps each step's outputs and targets for its accuracy at the flush
# (collectors/deferred_accuracy.py); switched off the same way, accuracy is then
# measured at once, on statistics steps.
KEEPING_OUTPUTS = "accuracy by reference"
# The part that learns whether a language model's labels are its input ids or already
# shifted; reported (and off) where the input ids cannot be seen.
TOKEN_LABELS = "token accuracy"


class ErrorGuard:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self._disabled: set[str] = set()

    def enabled(self, part: str) -> bool:
        return part not in self._disabled

    def call(self, part: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R | None:
        if part in self._disabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the training loop must never see it
            self.report(part, exc)
            return None

    def report(
        self, part: str, exc: BaseException, consequence: str = "This part is off for the rest of the run"
    ) -> None:
        """Report `exc` and switch `part` off; `consequence` tells the user what that means."""
        self._disabled.add(part)
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
        line = f"{part}: {type(exc).__name__}: {_first_line(str(exc))}{at}"
        self.errors.append(line)
        warnings.warn(
            f"TrainScope collector: {line}. {consequence}; training is unaffected.",
            RuntimeWarning,
            stacklevel=3,
        )


# An error's first line, at most this long: torch's dispatcher errors run to pages (every
# backend an operator has), and the user gets one line.
MAX_MESSAGE = 300


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= MAX_MESSAGE else first[: MAX_MESSAGE - 1] + "…"
