"""``python -m analyzers LOGDIR [--json] [--fail-on {warning,critical}] [--map PATTERN=TAG]``.

Reads every run of LOGDIR, applies the rules and prints the findings grouped by run:
each root cause, most severe first, with the symptoms it explains indented under it
(`analyzers.causes`), ending with a one-line summary; ``--json`` prints
``{"runs": [{"run", "run_name", "source", "findings", "skipped", "problems", "collector_errors",
"not_shown"}], "problems", "summary"}`` (``run``: the run's folder in LOGDIR, its key; ``run_name``: the
name its log gives it where that is not its folder's, else null; `analyzers.run_names`) (strict JSON: a non-finite number in a finding's evidence is written as the string
``"NaN"``, ``"Infinity"`` or ``"-Infinity"``). Exit status: 0; 1 when ``--fail-on`` is
met; 2 for a usage error, an unreadable LOGDIR or a report that cannot be written (a
full disk), with a one-line reason on stderr. A reader that stops reading (``| head``)
ends the output quietly, with the status the findings give. Text from logs (run names,
tags) is printed with control characters escaped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from trainscope.analyzers.diagnose import Diagnosis, diagnose_run
from trainscope.analyzers.findings import SEVERITY_ORDER, Finding
from trainscope.analyzers.formatting import clean, evidence_text, plain, symptom_list, where
from trainscope.analyzers.layer_names import titled
from trainscope.analyzers.reading import LogDirSnapshot, parse_rule, read_logdir, unreadable
from trainscope.analyzers.reading.assemble import EPOCH_SERIES_NAMES
from trainscope.analyzers.rules import ALL_RULES, RuleFn
from trainscope.analyzers.run import Run
from trainscope.analyzers.run_names import given_name
from trainscope.logformat import runjson as RJ

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
SEVERITIES = ("critical", "warning", "info")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Usage errors become one line (raised, not exited); help goes to the given stream."""

    def __init__(self, out: TextIO, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._out = out

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            self._out.write(message)


def _parser(out: TextIO, prog: str) -> argparse.ArgumentParser:
    p = _Parser(
        out,
        prog=prog,
        description="Diagnose the training runs of a log dir (TensorBoard, Lightning CSV, HF trainer_state).",
    )
    p.add_argument("logdir", metavar="LOGDIR", help="directory holding one or more runs")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--fail-on",
        choices=("warning", "critical"),
        help="exit 1 when a finding is at least this severe (for CI)",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="PATTERN=TAG",
        help="read foreign tags matching the regular expression PATTERN as canonical TAG "
        "(e.g. 'my_loss=train/loss'); tried before the built-in table; repeatable",
    )
    return p


def _logdir_error(path: str) -> str | None:
    reason = unreadable(path)
    if reason is None:
        return None
    hint = " (pass the directory that holds the run)" if reason == "is not a directory" else ""
    return f"LOGDIR {path!r} {reason}{hint}"


def main(
    argv: Sequence[str] | None = None,
    rules: tuple[tuple[str, RuleFn], ...] = ALL_RULES,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    prog: str = "python -m analyzers",
) -> int:
    """Run the command line; returns the exit status (never calls sys.exit)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = _parser(out, prog)
    try:
        args = parser.parse_args(argv)
        extra = [parse_rule(text) for text in args.map]
    except _UsageError as exc:
        print(f"{parser.prog}: error: {exc} (see --help)", file=err)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"{parser.prog}: error: --map: {exc}", file=err)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    reason = _logdir_error(args.logdir)
    if reason is not None:
        print(f"{parser.prog}: error: {reason}", file=err)
        return EXIT_USAGE
    snapshot = read_logdir(args.logdir, extra)
    diagnoses = [diagnose_run(run, rules) for run in snapshot.runs.values()]
    report = render_json(snapshot, diagnoses) + "\n" if args.json else render_text(snapshot, diagnoses)
    try:
        out.write(report)
        out.flush()
    except BrokenPipeError:  # the reader went away (| head): what it wanted, it has
        _silence(out)
    except OSError as exc:  # ENOSPC, EIO, ...: one line, not a traceback
        _silence(out)
        print(f"{parser.prog}: error: cannot write the report ({exc.strerror or exc})", file=err)
        return EXIT_USAGE
    if args.fail_on is not None:
        limit = SEVERITY_ORDER[args.fail_on]
        if any(SEVERITY_ORDER[f.severity] <= limit for d in diagnoses for f in d.findings):
            return EXIT_FAIL
    return EXIT_OK


def _silence(out: TextIO) -> None:
    """Point the process's stdout at /dev/null when `out` is it, so that the interpreter's
    own flush at exit does not fail again on what is still buffered (and print a traceback)."""
    if out is not sys.stdout:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# -- JSON -------------------------------------------------------------------------


def _counts(diagnoses: Sequence[Diagnosis]) -> Counter[str]:
    return Counter(f.severity for d in diagnoses for f in d.findings)


def render_json(snapshot: LogDirSnapshot, diagnoses: Sequence[Diagnosis]) -> str:
    counts = _counts(diagnoses)
    doc = {
        "logdir": snapshot.path,
        "runs": [
            {
                "run": d.run.name,
                RJ.K_RUN_NAME: given_name(d.run),
                "source": d.run.source,
                "findings": [f.to_dict() for f in d.findings],
                "skipped": [s.to_dict() for s in d.skipped],
                "problems": list(d.run.problems),
                "collector_errors": d.run.collector_errors,
                "not_shown": dict(d.run.not_shown),
            }
            for d in diagnoses
        ],
        "problems": list(snapshot.problems),
        "summary": {"runs": len(diagnoses), **{s: counts.get(s, 0) for s in SEVERITIES}},
    }
    return json.dumps(plain(doc), indent=2, allow_nan=False)


# -- text -------------------------------------------------------------------------


def _finding_lines(f: Finding, run: Run, depth: int = 0, explains: list[Finding] | None = None) -> list[str]:
    """A finding's lines. A root cause says what it explains and carries the evidence and source; a
    symptom is indented under its cause, with its message and only the advice that still helps."""
    indent = "    " * depth
    pad = indent + " " * 12
    at = where(f)
    mark = "↳ " if depth else ""
    title = f"{f.severity.upper():<9} {clean(f.rule)}: {clean(titled(f.title, f.layer, run))}{f' [{at}]' if at else ''}"
    lines = [f"  {indent}{mark}{title}"]
    if explains:
        lines.append(f"{pad}explains: {symptom_list(explains)}")
    lines.append(f"{pad}{clean(f.message)}")
    if not depth:
        evidence = evidence_text(f)
        if evidence:
            lines.append(f"{pad}evidence: {evidence}")
    for i, advice in enumerate(f.advice):
        lines.append(f"{pad}{'advice: ' if i == 0 else ' ' * 8}- {clean(advice)}")
    if f.source and not depth:
        lines.append(f"{pad}source: {clean(f.source)}")
    return lines


def _depths(d: Diagnosis) -> list[int]:
    """How deep each finding sits in its cause tree (0 for a root cause)."""
    depths: list[int] = []
    for i in range(len(d.findings)):
        parent = d.parents[i] if i < len(d.parents) else None
        depths.append(0 if parent is None else depths[parent] + 1)
    return depths


def _skipped_lines(d: Diagnosis) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for s in d.skipped:
        by_reason.setdefault(s.reason, []).append(s.rule)
    return [f"  not checked: {', '.join(rules)} ({clean(reason)})" for reason, rules in by_reason.items()]


def _run_header(d: Diagnosis) -> str:
    run = d.run
    last = max((int(s.steps[-1]) for s in run.scalars.values() if len(s)), default=None)
    named = given_name(run)
    facts = [f'named "{clean(named)}"'] if named else []
    facts += [run.source, f"{len(run.scalars)} signal(s)"]
    if last is not None:
        facts.append(f"last step {last:,}")
    unmapped = [tag for tag in run.unmapped if tag not in EPOCH_SERIES_NAMES]  # the epoch count is an axis
    if unmapped:
        facts.append(f"{len(unmapped)} unmapped tag(s)")
    return f"run {clean(run.name)} ({'; '.join(facts)})"


def render_text(snapshot: LogDirSnapshot, diagnoses: Sequence[Diagnosis]) -> str:
    lines = [f"TrainScope diagnosis of {clean(snapshot.path)}", ""]
    worst = lambda d: (SEVERITY_ORDER[d.worst] if d.worst else len(SEVERITY_ORDER), d.run.name)  # noqa: E731
    for d in sorted(diagnoses, key=worst):
        lines.append(_run_header(d))
        depths = _depths(d)
        for i, f in enumerate(d.findings):
            lines.extend(_finding_lines(f, d.run, depths[i], d.explained_by(f) if depths[i] == 0 else None))
        if not d.findings:
            lines.append("  no findings")
        for problem in d.run.problems:
            lines.append(f"  problem: {clean(problem)}")
        for error in d.run.collector_errors:
            lines.append(f"  collector: {clean(error)}")
        if d.run.not_shown:
            listed = ", ".join(f"{clean(tag)} ({kind})" for tag, kind in d.run.not_shown.items())
            lines.append(f"  logged, not shown: {listed}")
        lines.extend(_skipped_lines(d))
        lines.append("")
    for problem in snapshot.problems:
        lines.append(f"problem: {clean(problem)}")
    counts = _counts(diagnoses)
    n_problems = len(snapshot.problems) + sum(len(d.run.problems) for d in diagnoses)
    summary = (
        f"summary: {len(diagnoses)} run(s), {counts.get('critical', 0)} critical, "
        f"{counts.get('warning', 0)} warning(s), {counts.get('info', 0)} info"
    )
    if n_problems:
        summary += f", {n_problems} reading problem(s)"
    lines.append(summary)
    return "\n".join(lines) + "\n"
