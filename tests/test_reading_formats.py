"""Every log format the reader understands, on logs real libraries wrote.

The Lightning, Hugging Face and Keras-layout logs under tests/fixtures/ were made by
tests/fixtures/make_foreign_fixtures.py; the Keras CSVLogger, hand-written CSV and
MLflow logs by tests/fixtures/make_tracker_fixtures.py; SummaryWriter logs are made
here with torch.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers.reading import read_logdir
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def fixtures():
    snapshot = read_logdir(FIXTURES)
    assert snapshot.problems == ()
    return snapshot.runs


def _mlflow_runs(fixtures) -> dict:
    """The MLflow fixture's runs by run name (their directories are random ids)."""
    return {run.meta[RJ.K_RUN_NAME]: run for name, run in fixtures.items() if name.startswith("mlflow/")}


def test_fixture_runs_are_found_by_relative_path(fixtures):
    mlflow = sorted(name for name in fixtures if name.startswith("mlflow/"))
    assert sorted(set(fixtures) - set(mlflow)) == [
        "hf_attempts",
        "hf_attempts/runs/attempt1",
        "hf_attempts/runs/attempt2",
        "hf_eval_sets",  # with its runs/fixture events
        "hf_trainer",  # with its runs/fixture events
        "keras",
        "keras_csv/log.tsv",
        "keras_csv/training.log",
        "lightning/csv/version_0",
        "lightning/csv_diverging/version_0",
        "lightning/tb/version_0",
        "plain_csv/results/metrics/training_log.csv/fold=1",
        "plain_csv/results/metrics/training_log.csv/fold=2",
        "plain_csv/results/metrics/training_log.csv/fold=3",
        "wandb/dryrun-20261207_192533-tsjsonl",  # the old SDK's wandb-history.jsonl
        "wandb/offline-run-20261207_192544-tslegacy",
        "wandb/offline-run-20261207_192622-tskilled",
        "wandb/offline-run-20261207_192624-tscrash",
        "wandb/offline-run-20261207_192624-tsfinish",
    ]
    # one run per run-id directory: neither the experiment's meta.yaml nor .trash is a run
    assert len(mlflow) == 3 and all(re.fullmatch(r"mlflow/mlruns/\d+/[0-9a-f]{32}", name) for name in mlflow)
    assert all(run.problems == () for name, run in fixtures.items() if name != "hf_attempts")


def test_lightning_tensorboard(fixtures):
    run = fixtures["lightning/tb/version_0"]
    assert run.source == "tensorboard"
    assert set(run.scalars) == {T.TRAIN_LOSS, T.TRAIN_ACC, T.VAL_LOSS, T.VAL_ACC, T.LR}
    assert run.tag_origins[T.TRAIN_LOSS] == "train_loss_step"
    assert run.tag_origins[T.LR] == "lr-SGD"
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [14, 29, 44, 59]
    assert {"train_loss_epoch", "epoch"} <= set(run.unmapped)
    assert run.epoch_axis == frozenset()


def test_lightning_csv_matches_its_tensorboard_twin(fixtures):
    """Both loggers of one fit: the CSV (header rewritten mid-run) reads the same points."""
    tb, csv = fixtures["lightning/tb/version_0"], fixtures["lightning/csv/version_0"]
    assert csv.source == "lightning_csv"
    for tag in (T.TRAIN_LOSS, T.VAL_LOSS, T.VAL_ACC, T.LR):
        np.testing.assert_array_equal(csv.scalars[tag].steps, tb.scalars[tag].steps)
        np.testing.assert_allclose(csv.scalars[tag].values, tb.scalars[tag].values, rtol=1e-6)


def test_lightning_csv_nan_is_a_value_and_empty_is_not(fixtures):
    run = fixtures["lightning/csv_diverging/version_0"]
    loss = run.scalars[T.TRAIN_LOSS]
    assert len(loss) == 6 and np.isnan(loss.values).all()
    lr = run.scalars[T.LR]  # its cells are empty on the rows that logged the loss
    assert len(lr) == 6 and np.isfinite(lr.values).all()


def test_hugging_face_trainer_state_merges_checkpoints(fixtures):
    run = fixtures["hf_trainer"]
    assert run.source == "hf_trainer_state"
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(5, 50, 5))
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [15, 30, 45]
    assert {T.VAL_ACC, T.LR, T.GRAD_GLOBAL_NORM} <= set(run.scalars)
    assert run.meta[RJ.K_BATCH_SIZE] == 32
    assert "train/train_loss" in run.unmapped  # the final average is not the per-step loss
    # save_state() after train(): the last log entry says the run ended
    assert run.status == RJ.STATUS_FINISHED
    assert run.last_wall_time is not None  # from the folded TensorBoard events


def test_hugging_face_tensorboard_agrees_with_trainer_state():
    """The output dir's two logs hold the same points: read apart, they agree."""
    from trainscope.analyzers.reading.hf_state import parse_trainer_state

    root = os.path.join(FIXTURES, "hf_trainer")
    with open(os.path.join(root, "trainer_state.json")) as fh:
        state = parse_trainer_state(fh.read(), "trainer_state.json").series
    tb = read_logdir(os.path.join(root, "runs", "fixture")).runs["."]
    assert tb.source == "tensorboard"
    for name, tag in (
        ("train/loss", T.TRAIN_LOSS),
        ("eval/loss", T.VAL_LOSS),
        ("eval/accuracy", T.VAL_ACC),
        ("train/learning_rate", T.LR),
        ("train/grad_norm", T.GRAD_GLOBAL_NORM),
    ):
        np.testing.assert_array_equal(tb.scalars[tag].steps, state[name].steps)
        np.testing.assert_allclose(tb.scalars[tag].values, state[name].values, rtol=1e-6)


def test_hugging_face_named_eval_sets_are_validation_curves_of_their_own(fixtures):
    """Trainer(eval_dataset={"clean": .., "noisy": ..}) logs eval_<set>_loss and no eval_loss."""
    run = fixtures["hf_eval_sets"]
    assert T.VAL_LOSS not in run.scalars and T.VAL_ACC not in run.scalars
    assert {
        T.val_loss_tag("clean"),
        T.val_loss_tag("noisy"),
        T.val_acc_tag("clean"),
        T.val_acc_tag("noisy"),
    } <= set(run.scalars)
    assert run.tag_origins[T.val_loss_tag("noisy")] == "eval/noisy_loss"
    assert run.scalars[T.val_loss_tag("clean")].steps.tolist() == [15, 30]
    # a fifth of the noisy set's labels are shuffled: it is the harder set
    assert run.scalars[T.val_loss_tag("noisy")].values[-1] > run.scalars[T.val_loss_tag("clean")].values[-1]
    assert "eval/clean_runtime" in run.unmapped
    assert run.status == RJ.STATUS_FINISHED
    # trainer_state.json and the runs/fixture events are one run with one set of points
    assert run.source == "hf_trainer_state" and run.last_wall_time is not None
    assert len(run.scalars[T.TRAIN_LOSS]) == 6


def test_several_tensorboard_attempts_of_one_output_dir_stay_apart(fixtures):
    output = fixtures["hf_attempts"]
    assert len(output.problems) == 1
    assert "runs/attempt1, runs/attempt2" in output.problems[0] and "none is merged" in output.problems[0]
    first, second = fixtures["hf_attempts/runs/attempt1"], fixtures["hf_attempts/runs/attempt2"]
    assert first.problems == () and second.problems == ()
    # the output dir's trainer_state.json is the second attempt's
    np.testing.assert_allclose(
        output.scalars[T.TRAIN_LOSS].values, second.scalars[T.TRAIN_LOSS].values, rtol=1e-6
    )
    assert output.scalars[T.LR].values[0] < first.scalars[T.LR].values[0]


def test_keras_csv_logger(fixtures):
    """Keras 3's CSVLogger: epoch,accuracy,learning_rate,loss,val_accuracy,val_loss, epochs from 0."""
    run = fixtures["keras_csv/training.log"]
    assert run.source == "csv_log" and run.meta == {}
    assert run.tag_origins == {
        T.TRAIN_ACC: "accuracy",
        T.TRAIN_LOSS: "loss",
        T.VAL_ACC: "val_accuracy",
        T.VAL_LOSS: "val_loss",
        T.LR: "learning_rate",
    }
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(8))
    assert all(run.x_axis(tag) == "epoch" for tag in run.scalars)
    assert run.scalars[T.TRAIN_LOSS].values[-1] < run.scalars[T.TRAIN_LOSS].values[0]
    assert run.scalars[T.LR].values[-1] < run.scalars[T.LR].values[0]  # ReduceLROnPlateau halved it
    assert run.last_wall_time is None and run.status is None  # a CSV log has no clock and no end record
    tsv = fixtures["keras_csv/log.tsv"]
    np.testing.assert_array_equal(tsv.scalars[T.TRAIN_LOSS].values, run.scalars[T.TRAIN_LOSS].values[:4])


def test_hand_written_csv_with_folds_is_one_run_per_fold(fixtures):
    base = "plain_csv/results/metrics/training_log.csv"
    folds = [fixtures[f"{base}/fold={k}"] for k in (1, 2, 3)]
    for run in folds:
        assert set(run.scalars) == {T.TRAIN_LOSS, T.TRAIN_ACC, T.VAL_LOSS, T.VAL_ACC, T.LR}
        assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [1, 2, 3, 4]  # epochs as written
        assert run.x_axis(T.VAL_LOSS) == "epoch"
        assert run.scalars[T.LR].values.tolist() == [0.2, 0.2, 0.1, 0.1]
        assert "fold" not in run.unmapped
    assert len({run.scalars[T.TRAIN_LOSS].values[0] for run in folds}) == 3  # each fold its own curve


def test_mlflow_file_store_runs(fixtures):
    runs = _mlflow_runs(fixtures)
    assert sorted(runs) == ["failed", "finished", "killed"]
    done = runs["finished"]
    assert done.source == "mlflow"
    assert done.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(5))  # from metrics/train/loss
    assert done.tag_origins[T.VAL_ACC] == "val_accuracy"
    norm = done.scalars[T.GRAD_GLOBAL_NORM].values
    assert math.isnan(norm[1]) and np.isfinite(np.delete(norm, 1)).all()  # "nan" is a value
    assert done.meta[RJ.K_HPARAMS] == {
        "batch_size": 32,
        "epochs": 5,
        "lr": 0.1,
        "momentum": 0.9,
        "optimizer": "SGD",
    }
    assert done.meta[RJ.K_BATCH_SIZE] == 32
    assert done.status == RJ.STATUS_FINISHED
    assert done.meta[RJ.K_START] <= done.meta[RJ.K_END]
    walls = done.scalars[T.TRAIN_LOSS].wall_times  # MLflow's millisecond timestamps, in seconds
    assert done.last_wall_time == pytest.approx(max(s.wall_times.max() for s in done.scalars.values()))
    assert 1.5e9 < walls[0] <= walls[-1]
    failed, killed = runs["failed"], runs["killed"]
    assert failed.status == RJ.STATUS_CRASHED and failed.scalars[T.TRAIN_LOSS].steps.tolist() == [0, 1]
    assert killed.status == RJ.STATUS_STOPPED and "KILLED" in killed.meta[RJ.K_STATUS_REASON]


def test_keras_train_and_validation_dirs_are_one_run_on_the_epoch_axis(fixtures):
    run = fixtures["keras"]
    assert {T.TRAIN_LOSS, T.TRAIN_ACC, T.VAL_LOSS, T.VAL_ACC, T.LR} <= set(run.scalars)
    assert run.tag_origins[T.VAL_LOSS] == "validation/epoch_loss"
    assert (
        run.scalars[T.TRAIN_LOSS].steps.tolist() == run.scalars[T.VAL_LOSS].steps.tolist() == list(range(6))
    )
    assert run.x_axis(T.TRAIN_LOSS) == run.x_axis(T.VAL_LOSS) == "epoch"
    assert "validation/evaluation_loss_vs_iterations" in run.unmapped
    assert len(run.unmapped_histograms["train/kernel/histogram"].steps) == 6
    assert run.scalars[T.TRAIN_LOSS].values[-1] < run.scalars[T.TRAIN_LOSS].values[0]


@pytest.fixture(scope="module")
def summary_writer_dir(tmp_path_factory):
    """A real SummaryWriter log: old- and new-style scalars, add_scalars, histograms, text."""
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path_factory.mktemp("sw")
    writer = SummaryWriter(str(root / "exp"))
    torch.manual_seed(0)
    weight = torch.randn(16, 8)
    for step in range(30):
        writer.add_scalar("Loss/train", 2.0 / (step + 1), step)
        writer.add_scalar("lr", 0.1, step, new_style=True, double_precision=True)
        writer.add_scalar("Accuracy/train", step / 30, step, new_style=True)
        if step % 10 == 9:
            writer.add_scalars("Loss", {"val": 1.0 / (step + 1), "holdout": 0.5}, step)
            writer.add_histogram("fc1.weight", weight * (1 + step / 10), step)
    writer.add_text("notes", "<script>alert(1)</script>", 0)
    writer.close()
    return root


def test_summary_writer_layouts(summary_writer_dir):
    runs = read_logdir(summary_writer_dir).runs
    assert list(runs) == ["exp"]  # the add_scalars sub-directories are folded into it
    run = runs["exp"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(30))
    assert run.scalars[T.TRAIN_LOSS].values[3] == pytest.approx(0.5)
    assert run.scalars[T.LR].values.tolist() == [0.1] * 30  # double_val, exact
    assert run.scalars[T.TRAIN_ACC].values[15] == pytest.approx(0.5)  # float_val tensor
    assert run.tag_origins[T.VAL_LOSS] == "Loss/val"
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [9, 19, 29]
    assert run.unmapped["Loss/holdout"].values.tolist() == [0.5] * 3
    hist = run.histograms[T.hist_weight_tag("fc1")]
    assert hist.steps.tolist() == [9, 19, 29]
    assert hist.counts[0].sum() == 128 and len(hist.edges[0]) == len(hist.counts[0]) + 1


def test_add_scalars_child_with_foreign_tags_stays_a_run(tmp_path):
    write_events(tmp_path / "exp", scalar_events({0: {"loss": 1.0}}))
    write_events(tmp_path / "exp" / "finetune", scalar_events({0: {"loss": 2.0}, 1: {"loss": 1.5}}))
    runs = read_logdir(tmp_path).runs
    assert sorted(runs) == ["exp", "exp/finetune"]
    assert runs["exp/finetune"].scalars[T.TRAIN_LOSS].values.tolist() == [2.0, 1.5]


def test_event_files_of_a_run_are_read_in_order_and_later_steps_win(tmp_path):
    """A resumed run: a second event file restarts at step 50; its values win from there."""
    run_dir = tmp_path / "run"
    write_events(
        run_dir,
        scalar_events({s: {"train_loss": 1.0} for s in range(100)}),
        name="events.out.tfevents.1700000000.host.1.0",
    )
    write_events(
        run_dir,
        scalar_events({s: {"train_loss": 2.0} for s in range(50, 150)}),
        name="events.out.tfevents.1700000500.host.2.0",
    )
    loss = read_logdir(tmp_path).runs["run"].scalars[T.TRAIN_LOSS]
    assert loss.steps.tolist() == list(range(150))
    assert loss.values[:50].tolist() == [1.0] * 50 and loss.values[50:].tolist() == [2.0] * 100


def test_steps_restarting_within_one_file_keep_the_latest_value(tmp_path):
    records = scalar_events({s: {"loss": float(s)} for s in range(10)})
    records += scalar_events({s: {"loss": -float(s)} for s in range(5, 12)})
    write_events(tmp_path, records)
    loss = read_logdir(tmp_path).runs["."].scalars[T.TRAIN_LOSS]
    assert loss.steps.tolist() == list(range(12))
    assert loss.values.tolist() == [0, 1, 2, 3, 4, -5, -6, -7, -8, -9, -10, -11]


def test_a_log_whose_steps_are_epochs_says_so(tmp_path):
    write_events(tmp_path, scalar_events({e: {"epoch": float(e), "val_loss": 1 / (e + 1)} for e in range(5)}))
    run = read_logdir(tmp_path).runs["."]
    assert run.x_axis(T.VAL_LOSS) == "epoch"


def test_run_json_makes_a_trainscope_run(tmp_path):
    RJ.write_run_json(tmp_path, {RJ.K_SCHEMA: 1, RJ.K_STATUS: RJ.STATUS_FINISHED, RJ.K_BATCH_SIZE: 64})
    write_events(tmp_path, scalar_events({0: {T.TRAIN_LOSS: 2.3, T.grad_norm_tag("fc1"): 0.1}}))
    run = read_logdir(tmp_path).runs["."]
    assert run.source == "trainscope" and run.status == RJ.STATUS_FINISHED and run.meta[RJ.K_BATCH_SIZE] == 64
    assert run.layers(T.GRAD_NORM_PREFIX)["fc1"].values.tolist() == [pytest.approx(0.1)]
    assert run.tag_origins == {}


def test_conflicting_foreign_names_keep_the_best_and_show_the_rest(tmp_path):
    write_events(tmp_path, scalar_events({s: {"loss": 9.0, "train_loss": 1.0} for s in range(3)}))
    run = read_logdir(tmp_path).runs["."]
    assert run.tag_origins[T.TRAIN_LOSS] == "train_loss"
    assert run.scalars[T.TRAIN_LOSS].values.tolist() == [1.0] * 3
    assert "loss" in run.unmapped


def test_nan_and_inf_losses_are_kept_as_logged(tmp_path):
    write_events(
        tmp_path,
        scalar_events({0: {T.TRAIN_LOSS: 1.0}, 1: {T.TRAIN_LOSS: math.nan}, 2: {T.TRAIN_LOSS: math.inf}}),
    )
    values = read_logdir(tmp_path).runs["."].scalars[T.TRAIN_LOSS].values
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == math.inf


def test_hparams_only_sub_directory_is_folded_into_its_run(tmp_path):
    """``add_hparams(..., metric_dict={})`` writes a sub-directory holding nothing but hyperparameters."""
    from reading_helpers import event, metadata
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.HParamsPluginData(version=0)
    info.session_start_info.hparams["lr"].number_value = 0.01
    hp = summary_pb2.Summary.Value(
        tag="_hparams_/session_start_info", metadata=metadata("hparams", info.SerializeToString())
    )
    write_events(tmp_path / "exp", scalar_events({0: {"train_loss": 1.0}}))
    write_events(tmp_path / "exp" / "1700000000.123", [event(0, [hp])])
    runs = read_logdir(tmp_path).runs
    assert list(runs) == ["exp"]
    assert runs["exp"].meta[RJ.K_HPARAMS] == {"lr": 0.01}


def test_analyzers_import_neither_torch_nor_streamlit():
    import subprocess
    import sys

    code = "import sys, analyzers.cli, analyzers.reading; print(sorted({'torch', 'streamlit'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
