"""The committed sample runs: reproducible from their case table, and caught by the rules.

0. Data: the split is stratified and standardized on the training part only, and the
   data faults (subset, sorted order, raw pixels) are what the cases say they are.
1. Layout: every case of `sample_runs.cases.CASES` has a committed run (one event file,
   run.json, case.json matching the table), and the set stays small.
2. Reproducibility: a few cheap cases are trained again into a temporary directory;
   twice in a row they come out bit for bit the same, and they match the committed
   runs in shape (same tags, same steps) and in value. On the machine that generated
   them the values match exactly; the comparison allows a relative 1e-3 so that a CPU
   with other float rounding in its matrix kernels does not fail it.
3. Ground truth: for every committed run, each rule its case.json expects fires at
   warning or critical, and a healthy run raises no warning or critical at all. A
   failure here means the rule (or the case) needs fixing, never the expectation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from analyzers.diagnose import diagnose_run  # noqa: E402
from analyzers.reading import read_logdir  # noqa: E402
from analyzers.rules import ALL_RULES  # noqa: E402
from analyzers.run import Run  # noqa: E402
from logformat import runjson as RJ  # noqa: E402
from sample_runs import RUNS_DIR  # noqa: E402
from sample_runs.cases import CASES, get_case  # noqa: E402
from sample_runs.data import DataSpec, load  # noqa: E402
from sample_runs.report import ALARM_SEVERITIES  # noqa: E402
from sample_runs.training import CASE_JSON, train_case  # noqa: E402

# Cheap (under a second each) and numerically tame: no divergence, so float rounding
# on another CPU cannot move a NaN or a collapse to another step.
REGENERATED = ("healthy_mlp", "lr_too_low", "underfitting")
MAX_TOTAL_BYTES = 5_000_000  # the committed runs live in git: keep them small
# Recorded wall times differ from run to run by nature.
WALL_TIME_PREFIX = "time/"
# run.json entries that legitimately differ between two generations.
RUN_JSON_VOLATILE = {RJ.K_START, RJ.K_END, RJ.K_RUN_NAME, RJ.K_TORCH}

COMMITTED = sorted(p.name for p in RUNS_DIR.iterdir() if p.is_dir()) if RUNS_DIR.is_dir() else []


@pytest.fixture(scope="module")
def committed_runs() -> dict[str, Run]:
    snapshot = read_logdir(RUNS_DIR)
    assert not snapshot.problems, snapshot.problems
    return dict(snapshot.runs)


def _scalars(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {t: (s.steps, s.values) for t, s in run.scalars.items() if not t.startswith(WALL_TIME_PREFIX)}


# --- 0. the data the cases are built on ------------------------------------------------


def test_data_split_is_stratified_disjoint_and_standardized_on_train():
    split = load(DataSpec(), seed=0)
    n_train, n_val = split.y_train.shape[0], split.y_val.shape[0]
    assert n_train + n_val == 1797 and 0.18 < n_val / 1797 < 0.22
    assert split.num_classes == 10 and len(set(split.y_val.tolist())) == 10
    informative = split.x_train.std(0) > 0  # digits has always-blank border pixels
    assert np.allclose(split.x_train.mean(0).numpy(), 0, atol=1e-5)
    assert np.allclose(split.x_train.std(0, unbiased=False)[informative].numpy(), 1, atol=1e-4)
    assert load(DataSpec(), seed=0).x_val.equal(split.x_val)  # same seed, same split


def test_data_faults():
    subset = load(DataSpec(train_subset=100), seed=0)
    assert abs(subset.y_train.shape[0] - 100) <= 5 and len(set(subset.y_train.tolist())) == 10
    ordered = load(DataSpec(sorted_by_class=True), seed=0).y_train
    assert (ordered[1:] >= ordered[:-1]).all()
    assert load(DataSpec(scaling="raw"), seed=0).x_train.max() == 16
    assert load(DataSpec(scaling="raw255"), seed=0).x_train.max() == 255
    for dataset, classes in (("breast_cancer", 2), ("wine", 3)):
        assert load(DataSpec(dataset=dataset), seed=0).num_classes == classes


# --- 1. layout ---------------------------------------------------------------------------


def test_every_case_is_committed_and_nothing_else():
    assert COMMITTED == sorted(c.name for c in CASES)


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_committed_run_layout(name):
    case, run_dir = get_case(name), RUNS_DIR / name
    files = sorted(p.name for p in run_dir.iterdir())
    events = [f for f in files if f.startswith("events.out.tfevents.")]
    assert len(events) == 1 and set(files) == {events[0], RJ.RUN_JSON, CASE_JSON}, files
    assert json.loads((run_dir / CASE_JSON).read_text(encoding="utf-8")) == {
        "fault": case.fault,
        "expect": list(case.expect),
    }
    run_json = json.loads((run_dir / RJ.RUN_JSON).read_text(encoding="utf-8"))
    assert run_json[RJ.K_STATUS] == RJ.STATUS_FINISHED and not run_json[RJ.K_ERRORS]
    known = {rule_id for rule_id, _ in ALL_RULES}
    assert set(case.expect) <= known, set(case.expect) - known


def test_committed_runs_stay_small():
    total = sum(p.stat().st_size for p in RUNS_DIR.rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES, f"{total:,} bytes of sample runs"


# --- 2. reproducibility --------------------------------------------------------------------


@pytest.mark.parametrize("name", REGENERATED)
def test_regenerated_run_matches_committed(name, tmp_path, committed_runs):
    case = get_case(name)
    first, second = tmp_path / "first", tmp_path / "second"
    train_case(case, first)
    train_case(case, second)
    a, b = (read_logdir(p).runs["."] for p in (first, second))
    committed = committed_runs[name]

    # Deterministic: the same case twice gives the same numbers, bit for bit.
    sa, sb = _scalars(a), _scalars(b)
    assert sa.keys() == sb.keys()
    for tag in sa:
        assert np.array_equal(sa[tag][0], sb[tag][0]), tag
        assert np.array_equal(sa[tag][1], sb[tag][1], equal_nan=True), tag

    # Same shape as the committed run: tags, steps, histograms.
    sc = _scalars(committed)
    assert sa.keys() == sc.keys(), set(sa) ^ set(sc)
    for tag in sa:
        assert np.array_equal(sa[tag][0], sc[tag][0]), f"{tag}: steps differ"
        np.testing.assert_allclose(sa[tag][1], sc[tag][1], rtol=1e-3, atol=1e-6, err_msg=tag)
    assert a.histograms.keys() == committed.histograms.keys()
    for tag, hist in a.histograms.items():
        assert np.array_equal(hist.steps, committed.histograms[tag].steps), tag

    # Same run.json, apart from times, names and the torch version.
    fresh = {k: v for k, v in a.meta.items() if k not in RUN_JSON_VOLATILE}
    kept = {k: v for k, v in committed.meta.items() if k not in RUN_JSON_VOLATILE}
    assert fresh.keys() == kept.keys()
    for key in (RJ.K_HPARAMS, RJ.K_OPTIMIZER, RJ.K_MODEL, RJ.K_COLLECTOR, RJ.K_STEPS, RJ.K_BATCH_SIZE):
        assert fresh[key] == kept[key], key
    for got, want in zip(fresh[RJ.K_INIT_CHECK], kept[RJ.K_INIT_CHECK], strict=True):
        assert got["layer"] == want["layer"] and got["std"] == pytest.approx(want["std"], rel=1e-6)


# --- 3. ground truth ----------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMITTED)
def test_analyzers_find_what_the_case_expects(name, committed_runs):
    run_dir: Path = RUNS_DIR / name
    expect = json.loads((run_dir / CASE_JSON).read_text(encoding="utf-8"))["expect"]
    diagnosis = diagnose_run(committed_runs[name])
    alarms = {f.rule: f for f in diagnosis.findings if f.severity in ALARM_SEVERITIES}
    crashed = [s for s in diagnosis.skipped if s.reason.startswith("rule error")]
    assert not crashed, crashed
    if not expect:
        assert not alarms, "healthy run raised: " + "; ".join(
            f"{f.rule} ({f.severity}): {f.message}" for f in alarms.values()
        )
    missing = [rule for rule in expect if rule not in alarms]
    skipped = {s.rule: s.reason for s in diagnosis.skipped}
    assert not missing, "expected rule(s) did not fire: " + "; ".join(
        f"{rule}" + (f" (skipped: {skipped[rule]})" if rule in skipped else "") for rule in missing
    )
    if expect:  # the injected fault is the root cause named first; what it caused hangs under it
        first = diagnosis.roots[0]
        assert first.rule == expect[0], (
            f"the root cause named first is {first.rule}, not the injected fault {expect[0]}: "
            + "; ".join(f"{f.rule} (caused by {f.caused_by})" for f in diagnosis.findings)
        )
