"""The committed sample runs: reproducible from their case table, and caught by the rules.

0. Data: the split is stratified and standardized on the training part only, and the
   data faults (subset, sorted order, raw pixels) are what the cases say they are. The
   generated text is the same on every machine, a language model's targets are its
   inputs shifted by one token (equal to them in the unshifted fault), and the tiny GPT
   is initialized as GPT-2 is.
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

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from trainscope.analyzers.diagnose import diagnose_run  # noqa: E402
from trainscope.analyzers.reading import read_logdir  # noqa: E402
from trainscope.analyzers.rules import ALL_RULES  # noqa: E402
from trainscope.analyzers.run import Run  # noqa: E402
from trainscope.logformat import runjson as RJ  # noqa: E402
from trainscope.sample_runs import RUNS_DIR  # noqa: E402
from trainscope.sample_runs.cases import CASES, get_case  # noqa: E402
from trainscope.sample_runs.data import TEXT_VAL_FRACTION, DataSpec, encode, load  # noqa: E402
from trainscope.sample_runs.models import GPT, GPT_INIT_STD  # noqa: E402
from trainscope.sample_runs.report import ALARM_SEVERITIES  # noqa: E402
from trainscope.sample_runs.text import generate_text  # noqa: E402
from trainscope.sample_runs.training import CASE_JSON, as_loss_takes, train_case  # noqa: E402

# Cheap (under a second each) and numerically tame: no divergence, so float rounding
# on another CPU cannot move a NaN or a collapse to another step. nothing_training
# also runs the loop's clipping path (clip_grad_norm_, its norm given as grad_norm).
REGENERATED = ("healthy_mlp", "lr_too_low", "underfitting", "nothing_training")
# sha256 of the language-model runs' text: a change to the grammar or the generator
# changes every token of gpt_char_healthy and lm_targets_not_shifted (regenerate them).
TEXT_SHA256 = "a4e9c1781f1b5c5982f884e7366f1360170d520f617cba4049ce85d623eddfe9"
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


def test_generated_text_is_deterministic():
    text = generate_text()
    assert text == generate_text()  # same seed, same text, character for character
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == TEXT_SHA256  # and on every machine
    assert generate_text(seed=1) != text
    assert len(text) >= 24_000 and text.endswith(".\n")
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.\n")


def test_language_model_targets_are_the_inputs_shifted_by_one():
    ids, vocab = encode(generate_text())
    split = load(DataSpec(dataset="text"), seed=0)
    x, y = split.x_train, split.y_train
    assert split.num_classes == len(vocab) and x.dtype == y.dtype == torch.int64
    assert x.shape == y.shape and x.shape[1] == DataSpec().block_size
    assert torch.equal(y[:, :-1], x[:, 1:])  # target t is input t + 1...
    stride = DataSpec().block_size // 2
    ends = torch.arange(x.shape[0]) * stride + x.shape[1]
    assert torch.equal(y[:, -1], ids[ends])  # ...to the window's end
    assert torch.equal(x[0], ids[: x.shape[1]])
    # Validation: the text's last 10%, never seen in training.
    cut = int(ids.shape[0] * (1 - TEXT_VAL_FRACTION))
    assert torch.equal(split.x_val[0], ids[cut : cut + x.shape[1]])
    assert torch.equal(split.y_val[:, :-1], split.x_val[:, 1:])


def test_unshifted_language_model_targets_equal_the_inputs():
    shifted = load(DataSpec(dataset="text"), seed=0)
    unshifted = load(DataSpec(dataset="text", shift_targets=False), seed=0)
    assert torch.equal(unshifted.x_train, shifted.x_train)  # the same windows...
    assert torch.equal(unshifted.y_train, unshifted.x_train)  # ...their own tokens as targets
    assert torch.equal(unshifted.y_val, unshifted.x_val)  # in validation too: the bug is in every batch


def test_language_model_logits_reach_the_loss_flattened():
    logits, y = torch.zeros(4, 32, 33), torch.zeros(4, 32, dtype=torch.int64)
    flat_logits, flat_y = as_loss_takes(logits, y)
    assert flat_logits.shape == (4 * 32, 33) and flat_y.shape == (4 * 32,)
    classifier = torch.zeros(8, 10), torch.zeros(8, dtype=torch.int64)
    assert as_loss_takes(*classifier)[0] is classifier[0]


def test_gpt_is_initialized_as_gpt2():
    torch.manual_seed(0)
    n_layer = 2
    model = GPT(vocab=33, block_size=32, n_layer=n_layer, n_embd=48)
    assert model.lm_head.weight is model.wte.weight  # tied
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections: 0.02 / sqrt(2 * n_layer)
                assert float(p.std()) == pytest.approx(GPT_INIT_STD / math.sqrt(2 * n_layer), rel=0.1), name
            elif p.dim() == 2:
                assert float(p.std()) == pytest.approx(GPT_INIT_STD, rel=0.1), name
            elif name.endswith("bias"):
                assert float(p.abs().max()) == 0.0, name
    assert model(torch.zeros(2, 32, dtype=torch.int64)).shape == (2, 32, 33)


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
