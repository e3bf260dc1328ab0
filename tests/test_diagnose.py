"""diagnose_run: ordering, skipped rules, a broken rule, and end-of-run advice."""

from __future__ import annotations

import numpy as np

from trainscope.analyzers.diagnose import diagnose_run
from trainscope.analyzers.findings import Finding, Skip
from trainscope.analyzers.rules.common import make_run
from trainscope.logformat import tags as T


def _finding(rule: str, severity: str, step: int) -> Finding:
    return Finding(rule, severity, "t", "m", ("a",), "s", step=step)


def _run(status: str):
    steps = np.arange(100)
    return make_run(
        {T.TRAIN_LOSS: (steps, np.exp(-steps / 30))}, meta={"status": status, "optimizer": {"type": "Adam"}}
    )


def test_findings_most_severe_first_then_by_step_and_skips_listed():
    def info(run):
        return [_finding("a", "info", 1)]

    def warnings(run):
        return [_finding("b", "warning", 50), _finding("b", "warning", 10)]

    def critical(run):
        return [_finding("c", "critical", 90)]

    def lacks_signal(run):
        raise Skip("needs grad/norm/*")

    def broken(run):
        raise ZeroDivisionError("oops")

    rules = (("a", info), ("b", warnings), ("c", critical), ("d", lacks_signal), ("e", broken))
    diagnosis = diagnose_run(_run("running"), rules)
    assert [(f.rule, f.step) for f in diagnosis.findings] == [("c", 90), ("b", 10), ("b", 50), ("a", 1)]
    assert diagnosis.worst == "critical"
    assert [(s.rule, s.reason) for s in diagnosis.skipped] == [
        ("d", "needs grad/norm/*"),
        ("e", "rule error: ZeroDivisionError: oops"),
    ]


def test_end_of_run_advice_only_for_finished_runs_and_never_a_finding():
    finished = diagnose_run(_run("finished"), ())
    assert finished.advice and all(a.severity == "info" for a in finished.advice)
    assert finished.findings == () and finished.worst is None
    assert diagnose_run(_run("running"), ()).advice == ()


def test_a_finished_run_is_never_told_to_wait_for_data():
    """A rule's "not enough data yet" stands while the run may grow; once it has ended, the
    same shortfall reads "too few to judge", and the run's health is not "waiting"."""
    from trainscope.app.summaries import OK, WAITING, headline, health

    def short(run):
        from trainscope.analyzers.rules.common import require_points

        require_points(12, 50, "gradient-norm points")

    rules = (("exploding_gradients", short),)
    live = diagnose_run(_run("running"), rules)
    assert live.skipped[0].reason == "not enough data yet: 12 of 50 gradient-norm points"
    assert health(live) == WAITING
    ended = diagnose_run(_run("finished"), rules)
    assert ended.skipped[0].reason == "too few to judge: 12 of 50 gradient-norm points"
    assert health(ended) == OK
    assert (
        headline(ended) == "no problem found; 1 check(s) had too little data to judge (exploding_gradients)"
    )
