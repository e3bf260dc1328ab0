"""A Hugging Face Trainer's output dir, told by run.json: files written by hand.

TrainScope's Trainer callback writes its run into the Trainer's output_dir, whose
TensorBoard directory (``runs/<name>/`` or ``logs/``) is folded into that run from the
first step (run.json's ``framework``), not only once a checkpoint's trainer_state.json
says it is an output dir. A run.json of any other loop folds nothing. The reader follows
a directory that changes runs (folded, or unfolded by a second attempt) without keeping
stale points. tests/test_hf_callback.py does the same with the real Trainer.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.reading import LogDirReader, read_logdir
from trainscope.analyzers.reading import discovery as D
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

TRAINER = {
    RJ.K_SCHEMA: RJ.SCHEMA_VERSION,
    RJ.K_STATUS: RJ.STATUS_RUNNING,
    RJ.K_FRAMEWORK: RJ.FRAMEWORK_HF_TRAINER,
}
PLAIN = {RJ.K_SCHEMA: RJ.SCHEMA_VERSION, RJ.K_STATUS: RJ.STATUS_RUNNING}  # watch() in a loop of one's own


def our_run(out: str, run_json: dict, steps: int = 20) -> None:
    """The collector's files: run.json and a training loss every step."""
    os.makedirs(out, exist_ok=True)
    RJ.write_run_json(out, run_json)
    write_events(out, scalar_events({s: {T.TRAIN_LOSS: 1.0 / (s + 1)} for s in range(steps)}))


HF_EVENTS = "events.out.tfevents.1700000001.host.2.0"  # named after ours: read after them


def trainer_events(event_dir: str, steps=(10, 20), name: str = HF_EVENTS) -> None:
    """What Trainer's TensorBoard callback logs (its names; eval/loss is our val/loss)."""
    write_events(
        event_dir, scalar_events({s: {"eval/loss": 2.0 / s, "train/grad_norm": 0.5} for s in steps}), name
    )


@pytest.mark.parametrize("subdir", [os.path.join("runs", "Jan01_host"), "logs"])
@pytest.mark.parametrize(
    ("run_json", "runs"),
    [
        (TRAINER, ["out"]),
        # A plain loop whose log dir holds runs of its own in runs/ or logs/: they stay apart.
        (PLAIN, ["out", "out/{subdir}"]),
    ],
)
def test_only_a_run_json_of_the_trainer_folds_the_tensorboard_directory(tmp_path, subdir, run_json, runs):
    out = os.path.join(tmp_path, "out")
    our_run(out, run_json)
    trainer_events(os.path.join(out, subdir))
    snapshot = read_logdir(tmp_path)
    assert list(snapshot.runs) == [r.format(subdir=subdir.replace(os.sep, "/")) for r in runs]
    run = snapshot.runs["out"]
    assert len(run.scalars[T.TRAIN_LOSS]) == 20 and run.problems == ()
    folded = run_json is TRAINER
    assert (T.VAL_LOSS in run.scalars) is folded
    if folded:
        assert run.scalars[T.VAL_LOSS].steps.tolist() == [10, 20]


def test_a_trainer_run_json_with_several_attempts_keeps_them_apart(tmp_path):
    out = os.path.join(tmp_path, "out")
    our_run(out, TRAINER)
    trainer_events(os.path.join(out, "runs", "attempt1"))
    trainer_events(os.path.join(out, "runs", "attempt2"))
    snapshot = read_logdir(tmp_path)
    assert list(snapshot.runs) == ["out", "out/runs/attempt1", "out/runs/attempt2"]
    (note,) = snapshot.runs["out"].problems
    assert "runs/attempt1, runs/attempt2" in note and "none is merged" in note
    assert T.VAL_LOSS not in snapshot.runs["out"].scalars


def test_the_tensorboard_directory_joins_once_run_json_says_trainer(tmp_path):
    """The Trainer makes its TensorBoard directory before our callback writes run.json:
    a reader refreshed between them sees it alone, then one run with its points once."""
    out = os.path.join(tmp_path, "out")
    trainer_events(os.path.join(out, "runs", "Jan01_host"))
    reader = LogDirReader(tmp_path)
    assert list(reader.refresh().runs) == ["out/runs/Jan01_host"]
    our_run(out, TRAINER)
    after = reader.refresh()
    assert list(after.runs) == ["out"]
    assert after.changed == {"out", "out/runs/Jan01_host"}
    run = after.runs["out"]
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [10, 20]
    trainer_events(os.path.join(out, "runs", "Jan01_host"), steps=(30,))
    run = reader.refresh().runs["out"]
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [10, 20, 30]
    assert (
        run.scalars[T.VAL_LOSS].values.tolist()
        == read_logdir(tmp_path).runs["out"].scalars[T.VAL_LOSS].values.tolist()
    )


def test_a_run_json_replaced_by_another_loop_s_unfolds(tmp_path):
    """run.json is replaced whole (atomically): the directory is listed again and the
    verdict follows the new file."""
    out = os.path.join(tmp_path, "out")
    our_run(out, TRAINER)
    trainer_events(os.path.join(out, "runs", "Jan01_host"))
    reader = LogDirReader(tmp_path)
    assert list(reader.refresh().runs) == ["out"]
    RJ.write_run_json(out, PLAIN | {RJ.K_STATUS: RJ.STATUS_FINISHED})
    os.utime(out, ns=(0, 0))  # an mtime unlike the last listing's, however coarse the clock
    after = reader.refresh()
    assert list(after.runs) == ["out", "out/runs/Jan01_host"]
    assert T.VAL_LOSS not in after.runs["out"].scalars  # the points it had folded are gone
    assert len(after.runs["out"].scalars[T.TRAIN_LOSS]) == 20


def test_a_second_attempt_unfolds_the_first_without_stale_points(tmp_path):
    out = os.path.join(tmp_path, "out")
    our_run(out, TRAINER)
    trainer_events(os.path.join(out, "runs", "attempt1"))
    reader = LogDirReader(tmp_path)
    assert reader.refresh().runs["out"].scalars[T.VAL_LOSS].steps.tolist() == [10, 20]
    trainer_events(os.path.join(out, "runs", "attempt2"), steps=(5,))
    after = reader.refresh()
    assert list(after.runs) == ["out", "out/runs/attempt1", "out/runs/attempt2"]
    assert T.VAL_LOSS not in after.runs["out"].scalars
    assert len(after.runs["out"].scalars[T.TRAIN_LOSS]) == 20
    assert after.runs["out/runs/attempt1"].scalars[T.VAL_LOSS].steps.tolist() == [10, 20]


def test_a_checkpoint_appearing_beside_the_trainer_s_events_folds_them(tmp_path):
    """Without our callback: a live Trainer run is its TensorBoard directory until the
    first checkpoint's trainer_state.json; the reader then folds it into the output dir."""
    out = os.path.join(tmp_path, "out")
    trainer_events(os.path.join(out, "runs", "Jan01_host"))
    reader = LogDirReader(tmp_path)
    assert list(reader.refresh().runs) == ["out/runs/Jan01_host"]
    os.makedirs(os.path.join(out, "checkpoint-20"))
    with open(os.path.join(out, "checkpoint-20", D.TRAINER_STATE), "w") as fh:
        json.dump(
            {
                "global_step": 20,
                "log_history": [{"step": 10, "eval_loss": 0.2}, {"step": 20, "eval_loss": 0.1}],
            },
            fh,
        )
    after = reader.refresh()
    assert list(after.runs) == ["out"]
    run = after.runs["out"]
    assert run.source == "hf_trainer_state" and run.problems == ()
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [10, 20]


def test_run_json_is_read_only_beside_a_trainer_directory_and_once_per_version(tmp_path, monkeypatch):
    reads: list[str] = []
    real = D.read_run_json
    monkeypatch.setattr(D, "read_run_json", lambda path: reads.append(path) or real(path))
    plain = os.path.join(tmp_path, "plain")
    our_run(plain, PLAIN)  # no runs/ or logs/ in it: never read
    out = os.path.join(tmp_path, "out")
    our_run(out, TRAINER)
    trainer_events(os.path.join(out, "runs", "Jan01_host"))
    watcher = D.DirectoryWatcher(str(tmp_path))
    watcher.scan(full=True)
    watcher.scan(full=True)  # every directory listed again: the same run.json is not read again
    assert reads == [out]
    RJ.write_run_json(out, TRAINER | {RJ.K_STATUS: RJ.STATUS_FINISHED})
    listing, _ = watcher.scan(full=True)
    assert reads == [out, out]
    assert (
        listing.sources[
            os.path.join(out, "runs", "Jan01_host", "events.out.tfevents.1700000001.host.2.0")
        ].run_dir
        == out
    )


def test_our_series_own_their_tags_against_the_trainer_s_logs(tmp_path):
    """The Trainer logs train/loss too (a mean over logging_steps, at its own steps) and
    its eval/loss (our val/loss) here at every step: neither replaces nor joins ours,
    read at once or as the files grow; the Trainer's other series come through."""
    out = os.path.join(tmp_path, "out")
    os.makedirs(out)
    RJ.write_run_json(out, TRAINER)
    ours = {s: {T.TRAIN_LOSS: 1.0 / (s + 1)} for s in range(20)}
    ours[9][T.VAL_LOSS] = ours[19][T.VAL_LOSS] = 0.5
    theirs = {s: {"eval/loss": 2.0, "train/learning_rate": 1e-3} for s in range(1, 21)}
    theirs[10]["train/loss"] = theirs[20]["train/loss"] = 9.0
    hf_dir = os.path.join(out, "runs", "Jan01_host")
    reader = LogDirReader(tmp_path)
    for half in (range(0, 10), range(10, 20)):  # the Trainer's events first, then ours
        write_events(hf_dir, scalar_events({s + 1: theirs[s + 1] for s in half}), HF_EVENTS)
        write_events(out, scalar_events({s: ours[s] for s in half}))
        live = reader.refresh().runs["out"]
    os.makedirs(os.path.join(out, "checkpoint-20"))
    with open(os.path.join(out, "checkpoint-20", D.TRAINER_STATE), "w") as fh:
        json.dump({"global_step": 20, "log_history": [{"step": 20, "loss": 8.0, "eval_loss": 2.0}]}, fh)
    live = reader.refresh().runs["out"]
    for run in (live, read_logdir(tmp_path).runs["out"]):
        assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(20))
        assert run.scalars[T.TRAIN_LOSS].values.tolist() == [
            float(np.float32(1.0 / (s + 1))) for s in range(20)
        ]
        assert run.scalars[T.VAL_LOSS].steps.tolist() == [9, 19]
        assert run.unmapped["eval/loss"].steps.tolist() == list(range(1, 21))
        assert T.TRAIN_LOSS not in run.unmapped and T.LR in run.scalars
