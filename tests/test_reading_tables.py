"""Lightning metrics.csv and Hugging Face trainer_state.json, edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.reading.hf_state import parse_trainer_state
from trainscope.analyzers.reading.lightning_csv import parse_metrics_csv
from trainscope.logformat import tags as T


def test_empty_cell_is_no_point_but_nan_text_is_a_nan():
    data = parse_metrics_csv(
        "epoch,step,train_loss,val_loss\n0,1,0.5,\n0,2,nan,\n0,2,,inf\n0,3,-inf,nan\n", "m.csv"
    )
    loss = data.series["train_loss"]
    assert loss.steps.tolist() == [1, 2, 3]
    assert loss.values[0] == 0.5 and math.isnan(loss.values[1]) and loss.values[2] == -math.inf
    val = data.series["val_loss"]
    assert val.steps.tolist() == [2, 3] and val.values[0] == math.inf and math.isnan(val.values[1])
    assert data.problems == []


def test_a_header_appearing_mid_file_applies_to_the_rows_after_it():
    text = "epoch,step,train_loss\n0,1,0.9\n0,2,0.8\nepoch,step,train_loss,val_loss\n0,3,0.7,1.1\n"
    data = parse_metrics_csv(text, "m.csv")
    assert data.series["train_loss"].steps.tolist() == [1, 2, 3]
    assert data.series["val_loss"].steps.tolist() == [3]


def test_repeated_steps_keep_the_last_row():
    data = parse_metrics_csv("step,loss\n1,5\n2,4\n1,3\n", "m.csv")
    assert data.series["loss"].steps.tolist() == [1, 2]
    assert data.series["loss"].values.tolist() == [3.0, 4.0]


def test_bad_cells_and_missing_steps_are_reported_once_each():
    data = parse_metrics_csv("step,loss,note\n1,0.5,ok\n,0.4,\nx,0.3,\n2,oops,\n", "m.csv")
    assert data.series["loss"].steps.tolist() == [1]
    assert any("2 row(s) without a step" in p for p in data.problems)
    assert any("'loss' has 1 non-numeric" in p for p in data.problems)
    assert any("'note' has 1 non-numeric" in p for p in data.problems)


def test_csv_without_step_column_says_so():
    data = parse_metrics_csv("epoch,loss\n0,1.0\n", "m.csv")
    assert data.series == {} and "no 'step' column" in data.problems[0]


def test_csv_rewritten_between_refreshes_is_reread(tmp_path):
    from trainscope.analyzers.reading import LogDirReader

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train_loss\n0,1,0.9\n")
    reader = LogDirReader(tmp_path)
    assert reader.refresh().runs["."].scalars[T.TRAIN_LOSS].steps.tolist() == [1]
    path.write_text("epoch,step,train_loss,val_loss\n0,1,0.9,\n0,2,0.8,\n0,2,,1.2\n")
    run = reader.refresh().runs["."]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [1, 2]
    assert run.scalars[T.VAL_LOSS].values.tolist() == [1.2]


def test_trainer_state_keys_are_named_as_hf_tensorboard_names_them():
    doc = {
        "global_step": 20,
        "train_batch_size": 8,
        "log_history": [
            {"step": 10, "loss": 1.0, "learning_rate": 0.1, "grad_norm": NaN, "epoch": 0.5},
            {"step": 10, "eval_loss": 1.2, "eval_accuracy": 0.6, "epoch": 0.5},
            {"step": "x", "loss": 3.0},
            {"step": 20, "loss": 0.5, "flag": True, "note": "text"},
        ],
    }
    state = parse_trainer_state(json.dumps(doc), "trainer_state.json")
    assert sorted(state.series) == [
        "eval/accuracy",
        "eval/loss",
        "train/epoch",
        "train/grad_norm",
        "train/learning_rate",
        "train/loss",
    ]
    assert state.series["train/loss"].steps.tolist() == [10, 20]
    assert np.isnan(state.series["train/grad_norm"].values[0])
    assert state.global_step == 20 and state.meta == {"steps": 20, "batch_size": 8}
    assert len(state.problems) == 1 and "without an integer step" in state.problems[0]


NaN = float("nan")


def test_unreadable_trainer_state_is_one_problem(tmp_path):
    (tmp_path / "trainer_state.json").write_text("{not json")
    snapshot = read_logdir(tmp_path)
    run = snapshot.runs["."]
    assert run.scalars == {} and len(run.problems) == 1 and "unreadable trainer_state.json" in run.problems[0]
    (tmp_path / "trainer_state.json").write_text('{"log_history": 3}')
    assert "no log_history list" in read_logdir(tmp_path).runs["."].problems[0]


class _Loss:
    """A hyperparameter that is an object, as Lightning's save_hyperparameters() may hold."""

    def __init__(self) -> None:
        self.reduction = "mean"


def test_lightning_hparams_yaml_gives_the_run_its_hyperparameters(tmp_path):
    """Lightning dumps hparams.yaml with yaml.dump: tuples and objects get Python tags."""
    import yaml

    run_dir = tmp_path / "lightning_logs" / "version_0"
    run_dir.mkdir(parents=True)
    hparams = {
        "input_size": (1, 8, 8),
        "lr": 1e-3,
        "loss": _Loss(),
        "data": {"batch_size": 64, "num_classes": 29},
    }
    (run_dir / "hparams.yaml").write_text(yaml.dump(hparams))
    assert "!!python/object" in (run_dir / "hparams.yaml").read_text()
    (run_dir / "metrics.csv").write_text("epoch,step,train_loss\n0,1,0.9\n")
    run = read_logdir(tmp_path).runs["lightning_logs/version_0"]
    assert run.source == "lightning_csv" and run.problems == ()
    assert run.meta["hparams"] == {
        "data.batch_size": 64,
        "data.num_classes": 29,
        "input_size": [1, 8, 8],
        "loss": "<test_reading_tables._Loss>",
        "lr": 1e-3,
    }
    assert run.meta["batch_size"] == 64


@pytest.mark.parametrize(
    "files, runs",
    [
        ({"v0/hparams.yaml": "lr: 0.1\n"}, []),  # hyperparameters alone are no run
        ({"v0/hparams.yaml": "{}\n", "v0/metrics.csv": "epoch,step,loss\n0,1,1.0\n"}, ["v0"]),
        # a folder of checkpoints, configs and images
        (
            {
                "ckpt/last.ckpt": "x",
                "ckpt/model.pt": "x",
                "ckpt/model.safetensors": "x",
                "ckpt/config.json": "{}",
                "ckpt/config.yaml": "lr: 0.1\n",
                "ckpt/sample.png": "x",
                "ckpt/vocab.txt": "the\nof\nand\n",
            },
            [],
        ),
    ],
)
def test_what_makes_a_run(tmp_path, files, runs):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert sorted(read_logdir(tmp_path).runs) == runs


def test_hf_trainer_state_says_finished_only_from_its_last_entry():
    running = {"global_step": 10, "log_history": [{"step": 10, "loss": 1.0}]}
    done = {
        "global_step": 10,
        "log_history": [{"step": 10, "loss": 1.0}, {"step": 10, "train_runtime": 9.5, "train_loss": 1.2}],
    }
    assert "status" not in parse_trainer_state(json.dumps(running), "s.json").meta
    assert parse_trainer_state(json.dumps(done), "s.json").meta["status"] == "finished"


def test_a_checkpoint_after_the_end_means_training_went_on(tmp_path):
    """A run trained to step 10 (finished), then resumed: checkpoint-20's state has no end."""
    done = {"global_step": 10, "log_history": [{"step": 10, "loss": 1.0}, {"step": 10, "train_runtime": 9.5}]}
    resumed = {"global_step": 20, "log_history": [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.5}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(done))
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text(json.dumps(resumed))
    run = read_logdir(tmp_path).runs["."]
    assert run.status is None and run.scalars[T.TRAIN_LOSS].steps.tolist() == [10, 20]
