"""Keras CSVLogger files and plain metric CSV/TSV logs: which files are runs, keys, growth.

The real files (Keras 3's CSVLogger, a hand-written k-fold loop) are read in
test_reading_formats.py; here are the shapes around them, written by hand.
"""

from __future__ import annotations

import codecs
import math
import os
import time

import pytest

from trainscope.analyzers.reading import LogDirReader, read_logdir
from trainscope.logformat import tags as T

KERAS_HEADER = "epoch,accuracy,loss,val_accuracy,val_loss"
KERAS_ROWS = "0,0.41,1.71,0.46,1.44\n1,0.46,1.52,0.35,7.41\n2,0.52,1.40,0.50,1.30\n"


@pytest.mark.parametrize(
    "name, content, is_run",
    [
        # runs: a header with an x column and a metric
        ("training.log", KERAS_HEADER + "\r\n" + KERAS_ROWS.replace("\n", "\r\n"), True),
        ("history.csv", "epoch,loss,val_loss\n0,1.0,1.2\n", True),
        ("log.tsv", "step\tloss\n0\t1.0\n", True),
        ("results.txt", "iter;train_loss\n0;1.0\n", True),
        ("lr.csv", "global_step,lr\n0,0.1\n", True),  # a metric the tag map knows
        ("custom.csv", "Iteration,MyLoss\n0,1.0\n", True),  # a column that names a loss
        ("pandas.csv", ",epoch,loss\n0,0,1.0\n", True),  # DataFrame.to_csv's unnamed index
        ("quoted.csv", '"epoch","loss"\n0,1.0\n', True),
        ("yolo.csv", "   epoch,  train/box_loss,  metrics/precision(B),  lr/pg0\n1,0.9,0.1,0.01\n", True),
        # a header below a preamble: a title, Excel's sep= line, comments, blank lines
        ("titled.csv", "model_history_log\r\nepoch;accuracy;loss\r\n0;0.4;1.6", True),
        ("excel.csv", "sep=;\nepoch;loss;val_loss\n0;1.5;1.7\n", True),
        ("commented.log", "# run 3\n# lr 0.1, batch 32\n\nstep,loss\n0,1.0\n", True),
        ("four_lines.txt", "a\nb\nc\nd\nepoch,loss\n0,1.0\n", True),
        # not runs
        ("digits.csv", "label,pixel_0,pixel_1\n3,0,16\n", False),  # a dataset
        ("eval.csv", "model,accuracy,f1\nmlp,0.9,0.8\n", False),  # a table without an x column
        ("history2.csv", "loss,accuracy\n1.0,0.5\n", False),  # Keras history.to_csv without an index
        ("odd.csv", "epoch,foo,bar\n0,1,2\n", False),  # nothing that is a metric
        ("export.csv", "Wall time,Step,Value\n1.7e9,0,1.0\n", False),  # TensorBoard's CSV export: unnamed
        ("train.log", "Epoch 1/10\n32/32 - loss: 0.91 - accuracy: 0.71\n", False),  # console output
        # a dataset under a title: the line below the preamble is no metric header
        ("iris.csv", "Iris data set\nsepal_length,sepal_width,species\n5.1,3.5,setosa\n", False),
        ("titled_digits.csv", "# digits\nsep=,\nlabel,pixel_0,pixel_1\n3,0,16\n", False),
        ("five_lines.txt", "a\nb\nc\nd\ne\nepoch,loss\n0,1.0\n", False),  # too much preamble
        ("caption.txt", "a cat on a mat\n", False),  # preamble alone
        ("label.txt", "0 0.51 0.42 0.20 0.31\n1 0.3 0.3 0.1 0.1", False),  # numbers are no title
        ("console.txt", "Training\nEpoch 1, loss 0.9\nepoch,loss\n0,1.0\n", False),  # no title
        ("numbers.csv", "0,1.0,2.0\n1,0.9,1.9\n", False),
        ("blank_middle.csv", "epoch,,loss\n0,1,2\n", False),
        ("empty.csv", "", False),
        ("config.yaml", "epoch: 3\nloss: mse\n", False),
        ("config.json", '{"epoch": 3, "loss": "mse"}', False),
        ("model.ckpt", "epoch,loss\n0,1\n", False),  # not a log's suffix, whatever it holds
        ("model.safetensors", "epoch,loss\n", False),
        ("cat.png", "\x89PNG\r\n\x1a\n", False),
    ],
)
def test_which_files_are_metric_logs(tmp_path, name, content, is_run):
    (tmp_path / name).write_bytes(content.encode("utf-8"))
    runs = read_logdir(tmp_path).runs
    assert list(runs) == ([name] if is_run else [])


def test_binary_and_header_too_long(tmp_path):
    (tmp_path / "garbage.csv").write_bytes(os.urandom(20_000))
    (tmp_path / "wide.csv").write_text(
        "epoch," + ",".join(f"m{i}_loss_{'x' * 40}" for i in range(400)) + "\n0\n"
    )
    assert read_logdir(tmp_path).runs == {}


def test_utf16_csv_is_read(tmp_path):
    """Windows tools (PowerShell's Out-File) write UTF-16 with a byte order mark."""
    (tmp_path / "log.csv").write_bytes(
        codecs.BOM_UTF16_LE + ("epoch,loss\r\n0,1.5\r\n1,1.0\r\n").encode("utf-16-le")
    )
    run = read_logdir(tmp_path).runs["log.csv"]
    assert run.scalars[T.TRAIN_LOSS].values.tolist() == [1.5, 1.0] and run.problems == ()


def test_a_step_column_is_the_x_axis_and_epoch_stays_a_series(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,step,loss\n0,10,1.0\n0,20,0.9\n1,30,0.8\n")
    run = read_logdir(tmp_path).runs["log.csv"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [10, 20, 30]
    assert run.x_axis(T.TRAIN_LOSS) == "step" and run.unmapped["epoch"].values.tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    "content, names",
    [
        # one run per fold, also a single fold
        ("fold,epoch,loss\n1,1,0.9\n1,2,0.8\n2,1,0.7\n2,2,0.6\n", ["log.csv/fold=1", "log.csv/fold=2"]),
        ("fold,epoch,loss\n1,1,0.9\n1,2,0.8\n", ["log.csv/fold=1"]),
        # several keys, words as values, rows interleaved
        (
            "seed,model,epoch,loss\n1,mlp,0,1\n1,cnn,0,2\n1,mlp,1,1\n1,cnn,1,2\n",
            ["log.csv/seed=1/model=cnn", "log.csv/seed=1/model=mlp"],
        ),
        # a key written as a float
        ("fold,epoch,loss\n1.0,1,0.9\n2.0,1,0.7\n", ["log.csv/fold=1", "log.csv/fold=2"]),
        # no keys: a time (every row its own value), a metric before the x column, keys after it
        ("time,epoch,loss\n1.5,0,1\n2.5,1,0.9\n3.5,2,0.8\n", ["log.csv"]),
        ("lr,epoch,loss\n0.1,0,1\n0.1,1,0.9\n0.01,2,0.8\n0.01,3,0.7\n", ["log.csv"]),
        ("epoch,fold,loss\n0,1,1\n0,2,0.9\n", ["log.csv"]),
    ],
)
def test_key_columns_make_one_run_per_value(tmp_path, content, names):
    (tmp_path / "log.csv").write_text(content)
    runs = read_logdir(tmp_path).runs
    assert sorted(runs) == names
    for run in runs.values():
        assert T.TRAIN_LOSS in run.scalars and run.problems == ()


def test_fold_values_split_the_points(tmp_path):
    (tmp_path / "log.csv").write_text(
        "fold,epoch,loss,lr\n1,1,0.9,0.1\n1,2,0.8,0.1\n2,1,0.7,0.2\n2,2,0.6,0.2\n"
    )
    runs = read_logdir(tmp_path).runs
    assert runs["log.csv/fold=2"].scalars[T.TRAIN_LOSS].values.tolist() == [0.7, 0.6]
    assert runs["log.csv/fold=2"].scalars[T.LR].values.tolist() == [0.2, 0.2]
    assert runs["log.csv/fold=1"].path == str(tmp_path / "log.csv")


def test_cells_nan_empty_and_text(tmp_path):
    (tmp_path / "log.csv").write_text(
        "epoch,loss,val_loss,note\n0,1.0,,start\n1,nan,2.0,\n2,0.5,oops,x\nx,1,1,\n"
    )
    run = read_logdir(tmp_path).runs["log.csv"]
    loss = run.scalars[T.TRAIN_LOSS]
    assert loss.steps.tolist() == [0, 1, 2] and math.isnan(loss.values[1])  # "nan" is a value
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [1]  # empty and text cells are no points
    assert "note" not in run.unmapped  # a column of text is no metric and no problem
    assert any("'val_loss' has 1 non-numeric" in p for p in run.problems)
    assert any("1 row(s) without a number in 'epoch'" in p for p in run.problems)


def test_resumed_log_keeps_the_latest_value_per_epoch(tmp_path):
    """CSVLogger(append=True) and a fit resumed from epoch 2: the later rows win."""
    (tmp_path / "training.log").write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n3,0.7\n2,0.6\n3,0.5\n4,0.4\n")
    loss = read_logdir(tmp_path).runs["training.log"].scalars[T.TRAIN_LOSS]
    assert loss.steps.tolist() == [0, 1, 2, 3, 4] and loss.values.tolist() == [1.0, 0.9, 0.6, 0.5, 0.4]


def test_a_header_mid_file_starts_a_new_table(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,loss\n0,1.0\n1,0.9\nepoch,loss,val_loss\n2,0.8,1.1\n")
    run = read_logdir(tmp_path).runs["log.csv"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [0, 1, 2] and run.scalars[
        T.VAL_LOSS
    ].steps.tolist() == [2]
    assert run.problems == ()


def _age(path, seconds: float = 60) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_csvlogger_file_under_a_title_line_is_read_from_its_header(tmp_path):
    """A Keras CSVLogger(separator=";") file with a title line above the header, CRLF, and
    the last row without its newline, as found in a real repository."""
    rows = ["0;0.41;1.58;0.80;0.65", "1;0.78;0.71;0.91;0.30", "2;0.88;0.40;0.93;0.23"]
    text = "model_history_log\r\nepoch;accuracy;loss;val_accuracy;val_loss\r\n" + "\r\n".join(rows)
    (tmp_path / "model_history_log.csv").write_text(text, newline="")
    run = read_logdir(tmp_path).runs["model_history_log.csv"]
    assert run.scalars[T.TRAIN_LOSS].values.tolist() == [1.58, 0.71, 0.40]
    assert run.scalars[T.VAL_ACC].steps.tolist() == [0, 1, 2]
    assert run.x_axis(T.TRAIN_LOSS) == "epoch" and run.problems == ()  # the title is no skipped row


def test_a_header_below_a_title_is_found_once_it_is_written(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("model_history_log\nepoch,lo")  # the header is being written
    _age(tmp_path)
    reader = LogDirReader(tmp_path)
    assert reader.refresh().runs == {}
    path.write_text("model_history_log\nepoch,loss\n0,1.2\n")
    assert reader.refresh().runs["history.csv"].scalars[T.TRAIN_LOSS].values.tolist() == [1.2]


def test_top1_is_accuracy_and_top5_is_not(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,epoch_time\n"
        "1,4.03,0.079,0.26,3.63,0.131,0.383,0.05,178.6\n"
        "2,3.47,0.166,0.43,3.25,0.204,0.491,0.05,176.7\n"
    )
    run = read_logdir(tmp_path).runs["metrics.csv"]
    assert run.tag_origins[T.TRAIN_ACC] == "train_top1" and run.tag_origins[T.VAL_ACC] == "val_top1"
    assert sorted(run.unmapped) == ["epoch_time", "train_top5", "val_top5"]


def test_rows_appended_between_refreshes_are_read_and_nothing_else(tmp_path):
    path = tmp_path / "training.log"
    path.write_text(KERAS_HEADER + "\n" + "0,0.4,1.7,0.4,1.4\n")
    _age(tmp_path)
    reader = LogDirReader(tmp_path)
    first = reader.refresh().runs["training.log"]
    assert first.scalars[T.TRAIN_LOSS].steps.tolist() == [0]
    assert reader.refresh().runs["training.log"] is first  # unchanged: the same object
    with open(path, "a") as fh:
        fh.write("1,0.5,1.5,0.5,1.3\n2,0.6,1.3")  # the last row is being written
    run = reader.refresh().runs["training.log"]
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [0, 1]  # "1.3" may be the start of "1.35"
    with open(path, "a") as fh:
        fh.write(",0.6,1.2\n")
    run = reader.refresh().runs["training.log"]
    assert run.scalars[T.TRAIN_LOSS].values.tolist() == [1.7, 1.5, 1.3] and run.problems == ()
    assert run.scalars[T.VAL_LOSS].values.tolist() == [1.4, 1.3, 1.2]


def test_a_log_created_empty_becomes_a_run_when_its_header_arrives(tmp_path):
    """CSVLogger opens its file at train begin and writes the header after the first epoch."""
    path = tmp_path / "training.log"
    path.write_text("")
    _age(tmp_path)
    reader = LogDirReader(tmp_path)
    assert reader.refresh().runs == {}
    path.write_text(KERAS_HEADER + "\n" + "0,0.4,1.7,0.4,1.4\n")
    _age(tmp_path)  # appending does not change the directory's mtime
    snap = reader.refresh()
    assert list(snap.runs) == ["training.log"] and snap.changed == {"training.log"}


def test_a_rewritten_log_is_read_again(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    reader = LogDirReader(tmp_path)
    assert len(reader.refresh().runs["history.csv"].scalars[T.TRAIN_LOSS]) == 3
    path.write_text("epoch,loss\n0,5.0\n")  # a new fit, CSVLogger(append=False)
    assert reader.refresh().runs["history.csv"].scalars[T.TRAIN_LOSS].values.tolist() == [5.0]


def test_fold_runs_appear_as_folds_are_appended(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("fold,epoch,loss\n1,1,0.9\n1,2,0.8\n")
    reader = LogDirReader(tmp_path)
    assert list(reader.refresh().runs) == ["log.csv/fold=1"]
    with open(path, "a") as fh:
        fh.write("2,1,0.7\n")
    snap = reader.refresh()
    assert list(snap.runs) == ["log.csv/fold=1", "log.csv/fold=2"]
    path.unlink()
    snap = reader.refresh()
    assert snap.runs == {} and snap.changed == {"log.csv/fold=1", "log.csv/fold=2"}
