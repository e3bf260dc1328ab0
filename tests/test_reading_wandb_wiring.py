"""W&B run folders in the log-dir reader: which directories are runs, and one run each.

This tests the wiring only (discovery, the source, re-reading on change); what a run
folder holds is the business of `analyzers.reading.wandb` and its own tests. The run
folders are laid out as the old W&B SDK (0.9) laid them out: ``wandb-history.jsonl`` and
``config.yaml`` at the top of the folder (newer ones write a binary ``run-<id>.wandb``
there instead, which the parser's own tests read).
"""

from __future__ import annotations

import json
import os
import time

from trainscope.analyzers.reading import LogDirReader, read_logdir
from trainscope.logformat import tags as T


def _wandb_run(root, name: str, history: list[dict]) -> str:
    run_dir = root / "wandb" / name
    (run_dir / "files").mkdir(parents=True)
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "debug.log").write_text(
        "2025-10-20 20:54:58,123 INFO    MainThread:1 [wandb_setup.py]\n"
    )
    (run_dir / "files" / "output.log").write_text("Epoch 1/50 loss 2.25\n")
    (run_dir / "config.yaml").write_text("lr:\n  value: 0.0003\n")
    with open(run_dir / "wandb-history.jsonl", "w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in history)
    return str(run_dir)


def _history(epochs: range) -> list[dict]:
    return [
        {
            "_step": e,
            "_timestamp": 1.76e9 + e,
            "_runtime": e,
            "epoch": e,
            "train_loss": 2.0 / (e + 1),
            "val_loss": 1.0 + e / 10,
        }
        for e in epochs
    ]


def test_a_run_folder_is_one_run_and_latest_run_no_second(tmp_path):
    target = _wandb_run(tmp_path, "run-20251020_205458-pypd7lzd", _history(range(5)))
    _wandb_run(tmp_path, "offline-run-20251021_101010-abc123", _history(range(3)))
    os.symlink(target, tmp_path / "wandb" / "latest-run")  # as the SDK does
    (tmp_path / "wandb" / "debug.log").write_text("2025-10-20 INFO setup\n")
    runs = read_logdir(tmp_path).runs
    assert list(runs) == ["wandb/offline-run-20251021_101010-abc123", "wandb/run-20251020_205458-pypd7lzd"]
    run = runs["wandb/run-20251020_205458-pypd7lzd"]
    assert run.source == "wandb" and run.problems == ()
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(5))
    assert run.tag_origins[T.VAL_LOSS] == "val_loss"
    assert run.last_wall_time == 1.76e9 + 4


def test_a_folder_named_like_a_run_without_its_files_is_not_one(tmp_path):
    (tmp_path / "wandb" / "run-notes").mkdir(parents=True)
    (tmp_path / "wandb" / "run-notes" / "readme.md").write_text("nothing here")
    assert read_logdir(tmp_path).runs == {}


def test_a_run_folder_is_read_again_when_it_changes(tmp_path):
    run_dir = _wandb_run(tmp_path, "run-20251020_205458-pypd7lzd", _history(range(2)))
    old = time.time() - 60
    for dirpath, _, _ in os.walk(tmp_path):
        os.utime(dirpath, (old, old))
    reader = LogDirReader(tmp_path)
    first = reader.refresh().runs["wandb/run-20251020_205458-pypd7lzd"]
    assert len(first.scalars[T.TRAIN_LOSS]) == 2
    assert reader.refresh().runs["wandb/run-20251020_205458-pypd7lzd"] is first
    with open(os.path.join(run_dir, "wandb-history.jsonl"), "a") as fh:
        fh.write(json.dumps(_history(range(2, 3))[0]) + "\n")
    assert len(reader.refresh().runs["wandb/run-20251020_205458-pypd7lzd"].scalars[T.TRAIN_LOSS]) == 3
