"""The run record: run.json (status, hyperparameters, model summary, settings, the
facts the rules need) and the hooks that close it when the process ends: an uncaught
exception marks the run crashed, SIGTERM stopped, interpreter exit without `close()`
finished.

run.json is written at attach, again when a fact is first seen or the measured layers
change, and at close, each time atomically (logformat/runjson.py owns the schema).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch

from trainscope.collectors.guard import ErrorGuard
from trainscope.logformat import runjson as RJ

Close = Callable[[str, "str | None"], None]

# The signals that stop a job and give it time to save its work: SIGTERM (SLURM
# preemption, `docker stop`, Kubernetes). SIGINT is Python's KeyboardInterrupt, an
# exception that the crash hook and `with watch(...)` already see.
STOP_SIGNALS = (signal.SIGTERM,)
# The ErrorGuard part that reports, once, a run.json that could not be written (a full
# disk); it never switches writing off.
WRITING = "writing run.json"
# At close, a run.json that cannot be written is tried this many more times, from
# RETRY_SECONDS on, doubling (~3 s in all): a disk freed meanwhile still gets the final
# status; past that the readers tell a stopped run by its silence.
CLOSE_RETRIES = 5
RETRY_SECONDS = 0.1


class RunRecord:
    def __init__(self, log_dir: str | os.PathLike[str], guard: ErrorGuard, num_classes: int | None) -> None:
        self.log_dir = Path(log_dir)
        self._guard = guard
        self.data: dict[str, Any] = {}  # empty where this process writes no run.json (ranks > 0)
        self.num_classes = num_classes  # what run.json says; set from the logits when not given
        self.input_kind: str | None = None  # what run.json says the model's input is, once seen
        self._close: Close | None = None
        self._previous_excepthook: Callable[..., Any] | None = None
        self._previous_handlers: dict[int, Any] = {}  # signal -> the handler ours replaced

    def start(
        self,
        run_name: str | None,
        hparams: Mapping[str, Any],
        optimizers: list[torch.optim.Optimizer],
        facts: Mapping[str, Any],
        start_step: int,
    ) -> None:
        """Write the run.json of a run that starts (or goes on from `start_step`);
        `facts` are the keys the collector knows about the model and the setup."""
        several = len(optimizers) > 1
        self.data = {
            RJ.K_SCHEMA: RJ.SCHEMA_VERSION,
            RJ.K_RUN_NAME: run_name or self.log_dir.name,
            RJ.K_START: now_iso(),
            RJ.K_END: None,
            RJ.K_STATUS: RJ.STATUS_RUNNING,
            RJ.K_STATUS_REASON: None,
            RJ.K_HPARAMS: jsonable(hparams),
            RJ.K_OPTIMIZER: {
                # none: a loop that updates the parameters by hand
                "type": "+".join(type(optimizer).__name__ for optimizer in optimizers) or RJ.BY_HAND,
                "param_groups": [
                    {k: jsonable(v) for k, v in group.items() if k != "params"}
                    | ({"optimizer": type(optimizer).__name__} if several else {})
                    for optimizer in optimizers
                    for group in optimizer.param_groups
                ],
            },
            RJ.K_BATCH_SIZE: None,
            RJ.K_NUM_CLASSES: self.num_classes,
            RJ.K_INPUT_KIND: self.input_kind,
            RJ.K_MODEL: None,
            RJ.K_INIT_CHECK: [],
            RJ.K_TORCH: torch.__version__,
            RJ.K_DEVICE: None,
            RJ.K_WORLD_SIZE: 1,
            RJ.K_DATA_PARALLEL: None,
            RJ.K_COLLECTOR: {},
            RJ.K_STEPS: 0,
            RJ.K_ERRORS: [],
        }
        self.data.update(facts)  # the keys above keep their order; K_FRAMEWORK, where given, comes last
        self._check_earlier_run(start_step)
        self.write()

    def write(self, retries: int = 0) -> bool:
        """Write run.json now; False where it could not be (a full disk: said once, and
        every later write tries again). With `retries`, tries that many more times,
        waiting twice as long each time from RETRY_SECONDS."""
        wait = RETRY_SECONDS
        for attempt in range(retries + 1):
            try:
                RJ.write_run_json(self.log_dir, self.data)
                return True
            except OSError as exc:
                if attempt == retries:
                    if self._guard.enabled(WRITING):
                        consequence = "It is written again at the next change and at close"
                        self._guard.report(WRITING, exc, consequence=consequence)
                    return False
                time.sleep(wait)
                wait *= 2
        return False

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
        self.write(retries=CLOSE_RETRIES)

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
        """Close the run at interpreter exit, as stopped on SIGTERM, and with `crash_hook`
        as crashed on an uncaught exception (the exception then goes on to the hook
        that was there)."""
        self._close = close
        atexit.register(self._close_at_exit)
        if crash_hook:
            self._previous_excepthook = sys.excepthook
            sys.excepthook = self._excepthook
        self._catch_stop_signals()

    def remove_exit_hooks(self) -> None:
        if self._previous_excepthook is not None and sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_excepthook
        atexit.unregister(self._close_at_exit)
        for signum, previous in self._previous_handlers.items():
            # Only where ours is still the handler: one the user set since stays theirs.
            if (
                threading.current_thread() is threading.main_thread()
                and signal.getsignal(signum) == self._on_signal
            ):
                signal.signal(signum, previous)

    def _catch_stop_signals(self) -> None:
        """SIGTERM is how SLURM preemption, `docker stop` and Kubernetes end a job: the
        pending steps are flushed and run.json says stopped, and why, before the
        handler that was there runs (or the default behaviour, the process ending).
        A signal the process ignores stays ignored; Python lets only the main thread
        set handlers, so a collector attached elsewhere leaves them alone."""
        self._previous_handlers: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        try:
            if self._close is not None:
                self._close(RJ.STATUS_STOPPED, f"{signal.Signals(signum).name} received")
        finally:
            if callable(previous):
                previous(signum, frame)
            else:  # the default behaviour: end as the signal ends a process (status -signum)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

    def _excepthook(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
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
