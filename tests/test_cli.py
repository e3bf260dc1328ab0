"""``python -m analyzers``: exit codes, JSON shape, text output (subprocess and in-process)."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.cli import main
from trainscope.analyzers.findings import Finding, Skip
from trainscope.logformat import tags as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "analyzers", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def _run_in_process(*args: str, rules=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    kwargs = {} if rules is None else {"rules": rules}
    code = main(list(args), stdout=out, stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


# -- subprocess: the real entry point ------------------------------------------------


def test_json_on_the_foreign_fixtures():
    proc = _cli(FIXTURES, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    names = [r["run"] for r in doc["runs"]]
    assert "lightning/tb/version_0" in names and "keras" in names and "hf_trainer" in names
    for run in doc["runs"]:
        assert set(run) >= {"run", "findings", "skipped", "problems"}
        for skipped in run["skipped"]:
            assert set(skipped) == {"rule", "reason"}
        for finding in run["findings"]:
            assert set(finding) >= {
                "rule",
                "severity",
                "title",
                "message",
                "advice",
                "step",
                "layer",
                "evidence",
                "source",
            }
    assert set(doc["summary"]) == {"runs", "critical", "warning", "info"}


def test_text_output_ends_with_a_summary():
    proc = _cli(FIXTURES)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1].startswith("summary: 22 run(s)")
    assert "run lightning/tb/version_0" in proc.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "required: LOGDIR"),
        (("/no/such/dir",), "does not exist"),
        ((FIXTURES, "--fail-on", "sometimes"), "invalid choice"),
        ((FIXTURES, "--map", "x=not/canonical"), "not a canonical"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, needle):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr


# -- in-process: with rules of our own --------------------------------------------------


def _finding(severity: str, **evidence) -> Finding:
    return Finding(
        rule="lr_too_high",
        severity=severity,
        title="loss rises",
        message="smoothed loss rose 40% from 0.5 at step 10",
        advice=("divide the learning rate by 3-10", "add warm-up"),
        source='000 ("太高的学习率")',
        step=10,
        evidence=evidence,
    )


def _rules(severity: str, **evidence):
    def rule(run):
        if run.scalar(T.TRAIN_LOSS) is None:
            raise Skip("no training loss")
        return [_finding(severity, **evidence)]

    return (("lr_too_high", rule),)


@pytest.fixture()
def logdir(tmp_path):
    write_events(tmp_path / "a", scalar_events({s: {"train_loss": 1.0 + s} for s in range(20)}))
    write_events(tmp_path / "b", scalar_events({s: {"something_else": 1.0} for s in range(5)}))
    return str(tmp_path)


@pytest.mark.parametrize(
    "severity, fail_on, code",
    [
        ("warning", "warning", 1),
        ("warning", "critical", 0),
        ("critical", "critical", 1),
        ("info", "warning", 0),
    ],
)
def test_fail_on(logdir, severity, fail_on, code):
    assert _run_in_process(logdir, "--fail-on", fail_on, rules=_rules(severity))[0] == code
    assert _run_in_process(logdir, rules=_rules(severity))[0] == 0


def test_json_in_process_is_strict_and_lists_skips(logdir):
    code, out, _ = _run_in_process(
        logdir, "--json", rules=_rules("warning", ratio=math.nan, peak=math.inf, n=3)
    )
    assert code == 0
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    runs = {r["run"]: r for r in doc["runs"]}
    assert runs["a"]["findings"][0]["evidence"] == {"ratio": "NaN", "peak": "Infinity", "n": 3}
    assert runs["b"]["skipped"] == [{"rule": "lr_too_high", "reason": "no training loss"}]
    assert doc["summary"] == {"runs": 2, "critical": 0, "warning": 1, "info": 0}


def test_text_groups_by_run_with_numbers_advice_and_source(logdir):
    code, out, _ = _run_in_process(logdir, rules=_rules("warning", ratio=1.4))
    lines = out.splitlines()
    a = lines.index(next(line for line in lines if line.startswith("run a ")))
    assert lines[a + 1].split()[0] == "WARNING" and "[step 10]" in lines[a + 1]
    assert "0.5 at step 10" in out and "ratio=1.4" in out
    assert "advice: - divide the learning rate by 3-10" in out and "source: 000" in out
    assert "not checked: lr_too_high (no training loss)" in out
    assert lines[-1] == "summary: 2 run(s), 0 critical, 1 warning(s), 0 info"


def test_runs_with_worse_findings_come_first(tmp_path):
    write_events(tmp_path / "a_fine", scalar_events({0: {"train_loss": 1.0}}))
    write_events(tmp_path / "z_bad", scalar_events({0: {"train_loss": 9.0}}))

    def rule(run):
        return [_finding("critical")] if run.name == "z_bad" else []

    _, out, _ = _run_in_process(str(tmp_path), rules=(("lr_too_high", rule),))
    assert out.index("run z_bad") < out.index("run a_fine")


def test_map_option_extends_the_table(tmp_path):
    write_events(tmp_path, scalar_events({s: {"objective": 1.0} for s in range(3)}))
    assert "lr_too_high" in _run_in_process(str(tmp_path), "--json", rules=_rules("warning"))[1]  # skipped
    code, out, _ = _run_in_process(
        str(tmp_path), "--json", "--map", "objective=train/loss", rules=_rules("warning")
    )
    assert json.loads(out)["runs"][0]["findings"][0]["rule"] == "lr_too_high"


def test_empty_log_dir_is_reported_not_an_error(tmp_path):
    code, out, _ = _run_in_process(str(tmp_path))
    assert (
        code == 0
        and "no runs found" in out
        and out.rstrip().endswith("summary: 0 run(s), 0 critical, 0 warning(s), 0 info, 1 reading problem(s)")
    )
    code, out, _ = _run_in_process(str(tmp_path), "--json")
    assert json.loads(out)["runs"] == [] and "no runs found" in json.loads(out)["problems"][0]


def test_logdir_that_is_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "f").write_text("x")
    code, out, err = _run_in_process(str(tmp_path / "f"))
    assert code == 2 and out == "" and "not a directory" in err


def test_text_from_logs_is_escaped(tmp_path):
    write_events(tmp_path / "evil\x1b[31mrun", scalar_events({0: {"train_loss": 1.0}}))
    _, out, _ = _run_in_process(str(tmp_path), rules=())
    assert "\x1b" not in out and "evil\\x1b[31mrun" in out


def test_works_with_no_rules_at_all(logdir):
    code, out, _ = _run_in_process(logdir, "--json", "--fail-on", "warning", rules=())
    assert code == 0 and all(r["findings"] == [] and r["skipped"] == [] for r in json.loads(out)["runs"])


def test_help_exits_0():
    code, out, _ = _run_in_process("--help")
    assert code == 0 and "LOGDIR" in out


def test_nan_loss_of_a_real_lightning_run_is_a_critical_finding():
    """The NaN that CSV parsing must keep reaches the project's own nonfinite rule."""
    from trainscope.analyzers.rules import ALL_RULES

    if "nonfinite" not in dict(ALL_RULES):
        pytest.skip("the nonfinite rule is not registered yet")
    logdir = os.path.join(FIXTURES, "lightning", "csv_diverging")
    code, out, _ = _run_in_process(logdir, "--json", "--fail-on", "critical")
    findings = json.loads(out)["runs"][0]["findings"]
    assert code == 1 and any(f["rule"] == "nonfinite" and f["severity"] == "critical" for f in findings)


def test_what_the_collector_could_not_measure_is_shown_with_the_run(tmp_path, digits):
    """run.json's collector errors (a part switched off, its tags missing) are printed
    with the run and listed in the JSON: otherwise only the training log said so."""
    import torch
    from collector_helpers import mlp, train

    from trainscope.collectors import watch

    X, y = digits
    other_optimizer = torch.optim.SGD(mlp(seed=1).parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning):
        train(
            mlp(), X, y, steps=3, collector=lambda model, _: watch(model, other_optimizer, tmp_path / "run")
        )
    code, out, _ = _run_in_process(str(tmp_path))
    assert code == 0
    assert (
        "  collector: layers: ValueError: the optimizer updates none of the model's trainable parameters"
        in out
    )
    code, out, _ = _run_in_process(str(tmp_path), "--json")
    (run,) = json.loads(out)["runs"]
    assert len(run["collector_errors"]) == 1 and run["collector_errors"][0].startswith("layers: ValueError")


def test_text_and_json_show_each_root_cause_with_its_symptoms():
    """The sample run of an initialization 18x too small: one root, its dead ReLUs under it."""
    run_dir = os.path.join(REPO, "sample_runs", "runs", "bad_init_scale")
    out = io.StringIO()
    assert main([run_dir], stdout=out) == 0
    text = out.getvalue()
    root = text.index("CRITICAL  bad_initialization: Initial weight scale too small")
    assert text.index("explains: dead ReLUs in 2 layers") > root
    assert "      ↳ CRITICAL  dead_relu: Dead ReLUs" in text
    out = io.StringIO()
    main([run_dir, "--json"], stdout=out)
    findings = json.loads(out.getvalue())["runs"][0]["findings"]
    assert [(f["rule"], f["caused_by"]) for f in findings] == [
        ("bad_initialization", None),
        ("dead_relu", "bad_initialization"),
        ("dead_relu", "bad_initialization"),
    ]


def test_a_layer_named_by_its_index_is_described_in_the_finding_s_title():
    """In an ``nn.Sequential`` a layer's name is its index; the report says what it is."""
    code, out, _ = _run_in_process(os.path.join(REPO, "sample_runs", "runs", "bad_init_scale"))
    assert code == 0
    assert "Dead ReLUs: 94% of `9` (ReLU after 8: Linear 64→64)'s units never fire [step 10, layer 9]" in out
    assert "Initial weight scale too small in `0` (Linear 64→64) and 5 more" in out


def test_the_epoch_count_is_an_axis_not_an_unmapped_tag_in_the_run_header():
    code, out, _ = _run_in_process(os.path.join(FIXTURES, "lightning", "csv"))
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("run "))
    assert header.endswith("; 1 unmapped tag(s))"), header  # train_loss_epoch; `epoch` is the x axis
