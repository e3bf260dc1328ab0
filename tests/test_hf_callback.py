"""The Hugging Face callback on the real `Trainer` (CPU), a tiny GPT-2 built from its
config on generated text (nothing downloaded).

What `watch()` records must come out of a loop the user does not own: per-layer
gradient norms read before the Trainer clips them, update ratios, activations, token
accuracy from the model's own logits, eval loss and accuracy; the output dir, holding
also the Trainer's own TensorBoard log, is read as one run and diagnosed, from the
first step and with no checkpoint ever saved.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402
from collector_helpers import diagnosed_by_the_cli, generated_text, read_scalars  # noqa: E402

from trainscope.analyzers.reading import LogDirReader, read_logdir  # noqa: E402
from trainscope.collectors.hf_callback import TrainScopeCallback  # noqa: E402
from trainscope.logformat import runjson as RJ  # noqa: E402
from trainscope.logformat import tags as T  # noqa: E402

LENGTH = 24
CLIP = 0.05  # far below this model's gradient norms: every step is clipped


TEXT = generated_text(8000)
ALPHABET = sorted(set(TEXT))
IDS = torch.tensor([ALPHABET.index(c) for c in TEXT])


class Windows(torch.utils.data.Dataset):
    """Windows of the text as a causal LM takes them: labels are the input ids (the model shifts)."""

    def __init__(self, start: int, count: int) -> None:
        self.starts = list(range(start, start + count * LENGTH, LENGTH))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = IDS[self.starts[i] : self.starts[i] + LENGTH]
        return {"input_ids": ids, "labels": ids.clone()}


def tiny_gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(
        vocab_size=len(ALPHABET),
        n_positions=LENGTH,
        n_embd=32,
        n_layer=2,
        n_head=2,
        activation_function="relu",
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def token_accuracy(prediction) -> dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    hits = logits[:, :-1].argmax(-1) == labels[:, 1:]
    return {"accuracy": float(hits.mean())}


def fit(
    tmp_path: Path,
    *,
    steps: int,
    batch: int = 8,
    accumulate: int = 1,
    report_to: str = "none",
    save: bool = False,
    watchers: Sequence[transformers.TrainerCallback] = (),
) -> TrainScopeCallback:
    """Train; `watchers` are callbacks called before ours (after the Trainer's own)."""
    callback = TrainScopeCallback(every=10, stats_budget=None)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulate,
        learning_rate=3e-3,
        max_grad_norm=CLIP,
        eval_strategy="steps",
        eval_steps=20,
        per_device_eval_batch_size=32,
        logging_steps=10,
        save_strategy="steps" if save else "no",
        save_steps=steps,
        report_to=report_to,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = transformers.Trainer(
        model=tiny_gpt2(),
        args=args,
        train_dataset=Windows(0, 250),
        eval_dataset=Windows(250 * LENGTH, 32),
        compute_metrics=token_accuracy,
        callbacks=[*watchers, callback],
    )
    trainer.train()
    return callback


def test_a_trainer_run_records_what_watch_records_and_is_diagnosed(tmp_path):
    callback = fit(tmp_path, steps=60, batch=16, report_to="tensorboard", save=True)
    log_dir = Path(callback.collector.log_dir)
    assert log_dir == tmp_path / "out"  # the Trainer's output_dir
    scalars = read_scalars(callback.collector.event_file)  # ours only: the Trainer's is under runs/

    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(60))
    layers = ("transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc", "transformer.wte")
    for layer in layers:
        assert len(scalars[T.grad_norm_tag(layer)]) == 60, layer
        assert sorted(scalars[T.update_ratio_tag(layer)]) == [0, 10, 20, 30, 40, 50], layer
    assert set(scalars[T.dead_fraction_tag("transformer.h.0.mlp.act")]) == {0, 10, 20, 30, 40, 50}
    # Read at the end of the backward pass: before the Trainer clipped them to CLIP.
    assert min(scalars[T.GRAD_GLOBAL_NORM].values()) > 5 * CLIP
    assert len(scalars[T.TRAIN_ACC]) == 60  # next-token accuracy from the model's logits
    assert sorted(scalars[T.VAL_LOSS]) == [19, 39, 59]
    assert sorted(scalars[T.VAL_ACC]) == [19, 39, 59]  # compute_metrics' eval_accuracy

    run_json = json.loads((log_dir / RJ.RUN_JSON).read_text())
    assert run_json[RJ.K_STATUS] == RJ.STATUS_FINISHED
    assert run_json[RJ.K_HPARAMS]["max_grad_norm"] == CLIP
    assert run_json[RJ.K_NUM_CLASSES] == len(ALPHABET)  # the vocabulary
    assert run_json[RJ.K_INPUT_KIND] == RJ.INPUT_TOKENS

    # The Trainer's own event file (runs/<name>/) and checkpoint fold into the output dir: one run.
    assert len(list((log_dir / "runs").iterdir())) == 1
    assert (log_dir / "checkpoint-60" / "trainer_state.json").exists()
    runs = read_logdir(tmp_path).runs
    assert list(runs) == ["out"]
    assert runs["out"].source == "trainscope"
    # The Trainer's train/loss (its TensorBoard log and the checkpoint's trainer_state.json: a
    # mean over logging_steps) replaces none of ours: every step is the loss of that step.
    assert_our_train_loss(runs["out"], scalars)
    report = diagnosed_by_the_cli(tmp_path)
    assert [r["run"] for r in report["runs"]] == ["out"]
    skipped = {s["rule"] for s in report["runs"][0]["skipped"]}
    for rule in ("vanishing_gradients", "exploding_gradients", "dead_relu", "overfitting", "lr_too_low"):
        assert rule not in skipped, rule  # per-layer norms, activations, validations, update ratios


def test_the_gradients_are_read_once_per_accumulated_step(tmp_path):
    callback = fit(tmp_path, steps=12, accumulate=3)
    scalars = read_scalars(callback.collector.event_file)
    assert sorted(scalars[T.TRAIN_LOSS]) == list(range(12))
    assert T.STEP_SKIPPED not in scalars
    assert min(scalars[T.GRAD_GLOBAL_NORM].values()) > 5 * CLIP  # the whole step's, before clipping
    # The step's loss, from its three micro-batches' shares (near ln 18 = 2.9 at the start).
    assert 2.0 < scalars[T.TRAIN_LOSS][0] < 4.0
    run_json = json.loads((Path(callback.collector.log_dir) / RJ.RUN_JSON).read_text())
    assert run_json[RJ.K_BATCH_SIZE] == 3 * 8


class RefreshingReader(transformers.TrainerCallback):
    """A dashboard on the live run: one LogDirReader refreshed when training begins
    (after the Trainer's TensorBoard callback has made its directory, before ours has
    written run.json), after every step and every evaluation; the run names it saw."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.reader: LogDirReader | None = None
        self.seen: list[list[str]] = []

    def refresh(self) -> None:
        if self.reader is None:
            self.reader = LogDirReader(self.log_dir)
        self.seen.append(list(self.reader.refresh().runs))

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.refresh()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.refresh()

    def on_evaluate(self, args, state, control, **kwargs) -> None:
        self.refresh()


NO_CHECKPOINT_STEPS = 40


@pytest.fixture(scope="module")
def no_checkpoint(tmp_path_factory) -> tuple[Path, RefreshingReader, dict[str, dict[int, float]]]:
    """A Trainer run with its TensorBoard log and ours, that never saves a checkpoint;
    the live reader, and what our event file holds."""
    root = tmp_path_factory.mktemp("no_checkpoint")
    watcher = RefreshingReader(root)
    callback = fit(root, steps=NO_CHECKPOINT_STEPS, report_to="tensorboard", watchers=[watcher])
    watcher.refresh()  # once the run is closed
    return root, watcher, read_scalars(callback.collector.event_file)


def assert_our_train_loss(run, ours: dict[str, dict[int, float]]) -> None:
    """The run's training loss is our event file's, at every step and only there."""
    loss = run.scalars[T.TRAIN_LOSS]
    assert loss.steps.tolist() == sorted(ours[T.TRAIN_LOSS])
    assert loss.values.tolist() == [ours[T.TRAIN_LOSS][s] for s in loss.steps.tolist()]


def assert_same_series(live, fresh) -> None:
    """Two reads of one run hold the same series: every name, step and value."""
    for group in ("scalars", "unmapped"):
        got, want = getattr(live, group), getattr(fresh, group)
        assert sorted(got) == sorted(want), group
        for name, series in want.items():
            assert got[name].steps.tolist() == series.steps.tolist(), name
            np.testing.assert_array_equal(got[name].values, series.values, err_msg=name)


def assert_one_trainer_run(run) -> None:
    """Our tags and the Trainer's series in one run, each step's loss once."""
    assert run.source == "trainscope" and run.problems == ()
    assert run.meta[RJ.K_FRAMEWORK] == RJ.FRAMEWORK_HF_TRAINER
    assert {T.grad_norm_tag("transformer.wte"), T.TRAIN_ACC, T.update_ratio_tag("lm_head")} <= set(
        run.scalars
    )
    # The Trainer's own, under the names it logs (our canonical tags take the series).
    assert {"eval/loss", "eval/accuracy", "train/grad_norm", "train/learning_rate"} <= set(run.unmapped)
    assert run.unmapped["eval/loss"].steps.tolist() == [20, 40]
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [19, 39]
    # Both logs write train/loss: ours per step (0..39) owns it; the Trainer's mean over
    # logging_steps (at 10, ..., 40) adds no point and replaces none.
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == list(range(NO_CHECKPOINT_STEPS))
    assert T.TRAIN_LOSS not in run.unmapped and T.TRAIN_LOSS not in run.tag_origins


def test_a_trainer_run_without_checkpoints_is_one_run(no_checkpoint):
    root, _, ours = no_checkpoint
    out = root / "out"
    assert not list(out.glob("checkpoint-*")) and not list(out.rglob("trainer_state.json"))
    assert len(list((out / "runs").iterdir())) == 1  # the Trainer's TensorBoard directory
    runs = read_logdir(root).runs
    assert list(runs) == ["out"]
    assert_one_trainer_run(runs["out"])
    assert_our_train_loss(runs["out"], ours)
    report = diagnosed_by_the_cli(root)
    assert [r["run"] for r in report["runs"]] == ["out"]


def test_a_live_trainer_run_is_one_run_from_its_first_step(no_checkpoint):
    """Refreshed before our run.json exists, the Trainer's directory is a run of its own;
    from the first step on, one run, which the reader keeps up to date incrementally."""
    root, watcher, ours = no_checkpoint
    (hf_dir,) = (root / "out" / "runs").iterdir()
    assert watcher.seen[0] == [f"out/runs/{hf_dir.name}"]
    assert len(watcher.seen) > NO_CHECKPOINT_STEPS
    assert all(names == ["out"] for names in watcher.seen[1:])
    live, fresh = watcher.reader.snapshot.runs["out"], read_logdir(root).runs["out"]
    assert_one_trainer_run(live)
    # Read as the files grew (each writer flushing when it does) or at once: the same run,
    # train/loss included, which both write.
    assert_same_series(live, fresh)
    assert_our_train_loss(live, ours)


def test_the_trainer_directory_appearing_beside_our_run_joins_it(no_checkpoint, tmp_path):
    """The same files in the other order: our run first, then the Trainer's directory."""
    source = no_checkpoint[0] / "out"
    out = tmp_path / "out"
    out.mkdir()
    for path in source.iterdir():
        if path.is_file():
            shutil.copy2(path, out / path.name)
    reader = LogDirReader(tmp_path)
    before = reader.refresh()
    assert list(before.runs) == ["out"] and "eval/loss" not in before.runs["out"].unmapped
    shutil.copytree(source / "runs", out / "runs")
    after = reader.refresh()
    assert list(after.runs) == ["out"] and after.changed == {"out"}
    assert_one_trainer_run(after.runs["out"])
