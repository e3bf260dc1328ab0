"""Property-based: whatever bytes a file of any format holds, reading the log dir raises
nothing, the bad file's problems name it, and the good run beside it is read in full
(issue 22). Hypothesis starts from real files of each format (written by the real
Lightning, transformers, Keras, wandb and TrainScope's collector) and corrupts them: random
bytes, truncations, flipped and spliced bytes, huge fields, deep nesting, odd encodings.

Bounded for CI: `EXAMPLES` examples per format, no per-example deadline (a 2-core machine
shared with other work has slow moments), no example database, so a run is reproducible
from its seed alone (``pytest -p hypothesis --hypothesis-seed=N``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.reading import sources as S
from trainscope.logformat import tags as T

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_RUNS = Path(__file__).parents[1] / "sample_runs" / "runs"
EXAMPLES = 20

_WANDB = "wandb/offline-run-20261207_192624-tsfinish"
_MLFLOW = "mlruns/0/0123456789abcdef"
# format -> (the file under test, its real content, the other files its run needs)
FORMATS: dict[str, tuple[str, bytes, dict[str, bytes]]] = {
    "event_file": (
        "ev/events.out.tfevents.1795270121.vm.5932.0",
        (FIXTURES / "lightning/tb/version_0/events.out.tfevents.1795270121.vm.5932.0").read_bytes(),
        {},
    ),
    "lightning_csv": (
        "lt/metrics.csv",
        (FIXTURES / "lightning/csv/version_0/metrics.csv").read_bytes(),
        {"lt/hparams.yaml": b"lr: 0.1\nbatch_size: 32\n"},
    ),
    "hparams_yaml": (
        "lt/hparams.yaml",
        b"lr: 0.1\nbatch_size: 32\noptimizer: adam\nlayers: [64, 32]\n",
        {"lt/metrics.csv": (FIXTURES / "lightning/csv/version_0/metrics.csv").read_bytes()},
    ),
    "metric_csv": (
        "results/training_log.csv",
        (FIXTURES / "plain_csv/results/metrics/training_log.csv").read_bytes(),
        {},
    ),
    "keras_csv": ("keras/training.log", (FIXTURES / "keras_csv/training.log").read_bytes(), {}),
    "trainer_state": ("hf/trainer_state.json", (FIXTURES / "hf_trainer/trainer_state.json").read_bytes(), {}),
    "mlflow_metric": (
        f"{_MLFLOW}/metrics/loss",
        b"1700000000000 1.0 0\n1700000001000 0.9 1\n1700000002000 0.8 2\n",
        {f"{_MLFLOW}/meta.yaml": b"run_name: r\nstatus: 3\nstart_time: 1700000000000\n"},
    ),
    "mlflow_meta": (
        f"{_MLFLOW}/meta.yaml",
        b"run_name: r\nstatus: 3\nstart_time: 1700000000000\n",
        {f"{_MLFLOW}/metrics/loss": b"1700000000000 1.0 0\n"},
    ),
    "wandb_binary": (
        f"{_WANDB}/run-tsfinish.wandb",
        (FIXTURES / "wandb" / "offline-run-20261207_192624-tsfinish" / "run-tsfinish.wandb").read_bytes(),
        {},
    ),
    "wandb_jsonl": (
        "wandb/dryrun-20261207_192533-tsjsonl/wandb-history.jsonl",
        (FIXTURES / "wandb/dryrun-20261207_192533-tsjsonl/wandb-history.jsonl").read_bytes(),
        {"wandb/dryrun-20261207_192533-tsjsonl/wandb-metadata.json": b"{}"},
    ),
    "run_json": (
        "mine/run.json",
        (SAMPLE_RUNS / "gpt_char_healthy" / "run.json").read_bytes(),
        {"mine/events.out.tfevents.1700000000.host.1.0": b"".join(scalar_events({0: {T.TRAIN_LOSS: 1.0}}))},
    ),
}

_ENCODINGS = ("utf-16", "utf-32", "utf-16-be", "latin-1", "cp1252", "utf-8-sig", "shift_jis")


@st.composite
def corrupted(draw, valid: bytes) -> bytes:
    """`valid` made bad in one of the ways a crash, a disk, an editor or an attacker would."""
    kind = draw(
        st.sampled_from(
            ["random", "truncate", "flip", "splice", "huge_field", "deep_nesting", "encoding", "nul", "empty"]
        )
    )
    at = draw(st.integers(0, len(valid)))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "truncate":
        return valid[:at]
    if kind == "flip":
        data = bytearray(valid)
        for pos, byte in draw(
            st.lists(
                st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)),
                min_size=1,
                max_size=16,
            )
        ):
            if data:
                data[pos] = byte
        return bytes(data)
    if kind == "splice":
        return valid[:at] + draw(st.binary(min_size=1, max_size=512)) + valid[at:]
    if kind == "huge_field":  # past the csv module's 131,072-character field limit, in one piece
        filler = draw(st.sampled_from([b"9", b"a", b'"', b",", b"\xff", b"["]))
        return valid[:at] + filler * draw(st.integers(131_000, 400_000)) + valid[at:]
    if kind == "deep_nesting":
        n = draw(st.integers(900, 120_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b"- ", b""), (b"[", b"")]))
        return valid[:at] + opener * n + closer * n + valid[at:]
    if kind == "encoding":
        text = valid.decode("utf-8", errors="replace") + draw(st.text(max_size=32))
        return text.encode(draw(st.sampled_from(_ENCODINGS)), errors="replace")
    if kind == "nul":
        return valid[:at] + b"\x00" * draw(st.integers(1, 5000)) + valid[at:]
    return b""


def _read_beside_a_good_run(fmt: str, bad: bytes) -> None:
    rel, _, others = FORMATS[fmt]
    with tempfile.TemporaryDirectory(prefix="trainscope-prop-") as root:
        write_events(
            os.path.join(root, "good"), scalar_events({s: {T.TRAIN_LOSS: 1.0 / (s + 1)} for s in range(10)})
        )
        for other, content in others.items():
            os.makedirs(os.path.dirname(os.path.join(root, other)), exist_ok=True)
            Path(root, other).write_bytes(content)
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bad)
        snapshot = read_logdir(root)  # never raises
        good = snapshot.runs["good"]
        assert good.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(10)) and good.problems == ()
        top = os.path.join(root, rel.split("/")[0])
        for name, run in snapshot.runs.items():
            if name == "good":
                continue
            assert len(run.problems) <= S.MAX_PROBLEMS_PER_FILE + 2, run.problems
            assert all(top in p for p in run.problems), run.problems
        assert all(top in p or "no runs found" in p for p in snapshot.problems), snapshot.problems


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_no_bytes_in_one_file_take_the_reader_down(fmt):
    valid = FORMATS[fmt][1]

    @_SETTINGS
    @given(corrupted(valid))
    def check(bad: bytes) -> None:
        _read_beside_a_good_run(fmt, bad)

    check()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_the_real_file_itself_reads_cleanly(fmt):
    """The starting point of the corruptions is a file the readers take without a problem
    (so a problem above is the corruption's, not the fixture's)."""
    rel, valid, others = FORMATS[fmt]
    with tempfile.TemporaryDirectory() as root:
        for name, content in {**others, rel: valid}.items():
            Path(root, name).parent.mkdir(parents=True, exist_ok=True)
            Path(root, name).write_bytes(content)
        runs = read_logdir(root).runs
        assert runs and all(run.problems == () for run in runs.values()), {
            n: r.problems for n, r in runs.items()
        }


def test_a_yaml_alias_bomb_is_read_in_bounded_time():
    """'Billion laughs': ten levels of nine aliases is 3.5 billion strings once expanded. The
    YAML readers keep the aliases as references; the text of a value is built bounded (it was
    a full repr, cut afterwards: minutes and gigabytes). Read in a child process, so that
    "bounded" is a limit 100x what it takes, not a clock in this one."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefghi", "bcdefghij"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(levels) + "\n"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from test_reading_properties import _read_beside_a_good_run\n"
        "for fmt in ('hparams_yaml', 'mlflow_meta'):\n"
        "    _read_beside_a_good_run(fmt, sys.argv[2].encode())\n"
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), bomb],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
