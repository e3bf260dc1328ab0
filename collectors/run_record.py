"""The run record: run.json (status, hyperparameters, model summary, settings, the
facts the rules need) and the hooks that close it when the process ends: an uncaught
exception marks the run crashed, interpreter exit without `close()` finished.

run.json is written at attach, again when a fact is first seen or the measured layers
change, and at close, each time atomically (logformat/runjson.py owns the schema).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Mapping

import torch

from collectors.guard import ErrorGuard
from logformat import runjson as RJ

Close = Callable[[str, "str | None"], None]


class RunRecord:
    def __init__(self, log_dir: str | os.PathLike[str], guard: ErrorGuard, num_classes: int | None) -> None:
        self.log_dir = Path(log_dir)
        self._guard = guard
        self.data: dict[str, Any] = {}  # empty where this process writes no run.json (ranks > 0)
        self.num_classes = num_classes  # what run.json says; set from the logits when not given
        self.input_kind: str | None = None  # what run.json says the model's input is, once seen
        self._close: Close | None = None
        self._previous_excepthook: Callable[..., Any] | None = None

    def start(self, data: dict[str, Any], start_step: int) -> None:
        """Write the run.json of a run that starts (or goes on from `start_step`)."""
        self.data = data
        self._check_earlier_run(start_step)
        RJ.write_run_json(self.log_dir, self.data)

    def write(self) -> None:
        if self.data:
            self._guard.call("run.json", RJ.write_run_json, self.log_dir, self.data)

    def note_facts(self, input_kind: str | None, classes: int | None) -> None:
        """Facts the rules need, into run.json at once: what the model's input is (token
        ids or features), and the number of classes the logits have (chance level ln C).
        Written when first seen, or when they change, not on every step; None: not seen."""
        changed: dict[str, Any] = {}
        if input_kind is not None and input_kind != self.input_kind:
            self.input_kind = changed[RJ.K_INPUT_KIND] = input_kind
        if classes is not None and classes != self.num_classes:
            self.num_classes = changed[RJ.K_NUM_CLASSES] = classes
        if changed and self.data:
            self.data.update(changed)
            self.write()

    def finish(self, status: str, reason: str | None, final: Mapping[str, Any]) -> None:
        """The last write: the run's end, its status and why, and `final` (steps, errors, ...)."""
        data = self.data
        data[RJ.K_END] = now_iso()
        data[RJ.K_STATUS] = status
        data[RJ.K_STATUS_REASON] = reason
        data.update(final)
        RJ.write_run_json(self.log_dir, data)

    def _check_earlier_run(self, start_step: int) -> None:
        """A log dir that already holds a run: continued (`start_step`), it keeps its start
        time; started over from step 0, both runs' events would read as one run, steps
        repeated, which is said once (a notebook cell run again, say)."""
        earlier, _ = RJ.read_run_json(self.log_dir)
        if not earlier:
            return
        if start_step:
            self.data[RJ.K_START] = earlier.get(RJ.K_START, self.data[RJ.K_START])
            return
        problem = ValueError(
            f"{self.log_dir} already holds a run ({earlier.get(RJ.K_STATUS)}, {earlier.get(RJ.K_STEPS)} steps): this"
            " run's events join it, and readers show one run with its steps twice; give each run its own"
            " log_dir, or pass start_step= to continue that one"
        )
        self._guard.report("log dir", problem, consequence="Recording goes on")

    # ---- how the process ends ------------------------------------------------------

    def install_exit_hooks(self, close: Close, crash_hook: bool) -> None:
        """Close the run at interpreter exit, and with `crash_hook` as crashed on an
        uncaught exception (the exception then goes on to the hook that was there)."""
        self._close = close
        atexit.register(self._close_at_exit)
        if crash_hook:
            self._previous_excepthook = sys.excepthook
            sys.excepthook = self._excepthook

    def remove_exit_hooks(self) -> None:
        if self._previous_excepthook is not None and sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_excepthook
        atexit.unregister(self._close_at_exit)

    def _excepthook(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        try:
            if self._close is not None:
                self._close(RJ.STATUS_CRASHED, f"{exc_type.__name__}: {exc}")
        finally:
            assert self._previous_excepthook is not None
            self._previous_excepthook(exc_type, exc, tb)

    def _close_at_exit(self) -> None:
        if self._close is not None:
            self._close(RJ.STATUS_FINISHED, "closed at interpreter exit (close() was not called)")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """A hyperparameter or optimizer setting as JSON holds it: a tensor as its number or
    list, anything else by `RJ.json_safe`'s policy (a non-finite float as "NaN", ...)."""
    if isinstance(value, torch.Tensor):
        return RJ.json_safe(value.item() if value.numel() == 1 else value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return RJ.json_safe(value)
    return repr(value)
