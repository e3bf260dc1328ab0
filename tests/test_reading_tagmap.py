"""Foreign tag names -> canonical ones (table-driven), and extending the table."""

from __future__ import annotations

import pytest

from trainscope.analyzers.reading import TagMapper, TagRule, is_canonical, parse_rule
from trainscope.logformat import tags as T

MAPPER = TagMapper()

SCALAR_CASES = [
    # PyTorch Lightning
    ("train_loss", T.TRAIN_LOSS),
    ("train_loss_step", T.TRAIN_LOSS),
    ("train_loss_epoch", T.TRAIN_LOSS),  # a per-epoch mean: ranked below train_loss_step
    ("val_loss", T.VAL_LOSS),
    ("val_loss_epoch", T.VAL_LOSS),
    ("val_loss_step", None),  # per validation batch, on its own step counter
    ("val_acc", T.VAL_ACC),
    ("train_acc_step", T.TRAIN_ACC),
    ("train_acc_epoch", T.TRAIN_ACC),
    ("acc_step", T.TRAIN_ACC),
    ("acc_epoch", T.TRAIN_ACC),
    ("loss_step", T.TRAIN_LOSS),
    ("loss_epoch", T.TRAIN_LOSS),
    ("test_acc", T.VAL_ACC),  # a "test" set stands for val where the run has no val of its own
    ("test_loss_epoch", T.VAL_LOSS),
    ("test_loss_step", None),
    ("avg_test_loss", T.VAL_LOSS),  # averaged, and a stand-in as test_loss is
    ("lr-SGD", T.LR),
    ("lr-Adam/pg1", T.LR),
    ("lr-Adam/pg2", T.lr_tag(1)),
    ("lr-SGD-momentum", None),
    ("epoch", None),
    ("grad_2.0_norm_total", T.GRAD_GLOBAL_NORM),
    ("grad_2.0_norm/features.0.weight", T.grad_norm_tag("features.0")),
    ("grad_2.0_norm/features.0.bias", None),
    # Hugging Face Trainer
    ("train/loss", T.TRAIN_LOSS),
    ("eval/loss", T.VAL_LOSS),
    ("eval/accuracy", T.VAL_ACC),
    ("train/learning_rate", T.LR),
    ("train/grad_norm", T.GRAD_GLOBAL_NORM),
    ("train/train_loss", None),  # the run's average, logged once at the end
    ("train/epoch", None),
    ("eval/runtime", None),
    ("test/loss", T.VAL_LOSS),
    ("eval/clean_loss", None),  # a named eval set: only with its eval/clean_runtime (see eval_sets)
    # Keras (sub-directory prefixed by the reader)
    ("train/epoch_loss", T.TRAIN_LOSS),
    ("validation/epoch_loss", T.VAL_LOSS),
    ("train/epoch_accuracy", T.TRAIN_ACC),
    ("validation/epoch_accuracy", T.VAL_ACC),
    ("train/epoch_learning_rate", T.LR),
    ("train/batch_loss", T.TRAIN_LOSS),
    ("validation/evaluation_loss_vs_iterations", T.VAL_LOSS),
    # Keras CSVLogger and hand-written CSV logs
    ("accuracy", T.TRAIN_ACC),
    ("acc", T.TRAIN_ACC),
    ("val_accuracy", T.VAL_ACC),
    ("val_acc", T.VAL_ACC),
    ("learning_rate", T.LR),
    ("F1_score", None),
    ("val_F1_score", None),
    # hand-written
    ("Loss/train", T.TRAIN_LOSS),
    ("Loss/val", T.VAL_LOSS),
    ("loss_val", T.VAL_LOSS),
    ("Accuracy/validation", T.VAL_ACC),
    ("Accuracy/train", T.TRAIN_ACC),
    ("train_acc", T.TRAIN_ACC),
    ("training_loss", T.TRAIN_LOSS),
    ("valid_loss", T.VAL_LOSS),
    ("loss", T.TRAIN_LOSS),
    ("lr", T.LR),
    ("learning_rate", T.LR),
    ("grad_norm", T.GRAD_GLOBAL_NORM),
    ("my_custom_metric", None),
    # hand-written SummaryWriter names with a qualifier, and a "test" split
    ("Test loss (avg on test)", T.VAL_LOSS),
    ("Test accuracy", T.VAL_ACC),
    ("testing_loss", T.VAL_LOSS),
    ("Loss/test", T.VAL_LOSS),
    ("Val accuracy (%)", T.VAL_ACC),
    ("Training loss (mean per batch)", T.TRAIN_LOSS),
    ("IoU (avg on test)", None),
    ("Loss (std)", None),  # a qualifier that changes what the name means
    ("loss (val)", None),  # a split only the qualifier names
    ("Training loss (avg on test)", None),
    # a validation curve named with words that only say how it was averaged (a hand-written
    # loop's W&B average_val_loss); any other word may mean another statistic
    ("average_val_loss", T.VAL_LOSS),
    ("mean_val_loss", T.VAL_LOSS),
    ("val_loss_avg", T.VAL_LOSS),
    ("val_avg_loss", T.VAL_LOSS),
    ("avgValLoss", T.VAL_LOSS),
    ("Loss/val_mean", T.VAL_LOSS),
    ("epoch_val_loss", T.VAL_LOSS),
    ("val_loss_per_token", T.VAL_LOSS),  # an LM's loss per token is its loss
    ("avg_val_acc", T.VAL_ACC),
    ("avg_val_top1", T.VAL_ACC),
    ("test_mean_acc", T.VAL_ACC),
    ("val_loss_std", None),
    ("val_loss_min", None),
    ("best_val_loss", None),
    ("max_val_acc", None),
    ("val_acc_top5", None),
    ("avg_val_top5", None),
    ("val_loss_per_class", None),
    ("avg_val_loss_std", None),
    ("val_recon_loss_avg", None),  # a term of the loss
    ("val_test_avg_loss", None),
    ("avg_loss", None),  # no split: the training loss's fallback reads it (reading.train_loss)
    # top-1 accuracy (timm's summary.csv, torchvision's and timm's acc1, Acc@1); never top-5
    ("train_top1", T.TRAIN_ACC),
    ("val_top1", T.VAL_ACC),
    ("eval_top1", T.VAL_ACC),
    ("val_acc1", T.VAL_ACC),
    ("Acc@1/val", T.VAL_ACC),
    ("test_top1", T.VAL_ACC),
    ("train_top-1_accuracy", T.TRAIN_ACC),
    ("train_top5", None),
    ("val_top5", None),
    ("eval_top5", None),
    ("val_acc5", None),
    ("Acc@5/val", None),
    ("top1", None),  # no split named: a train or an eval number
    ("acc1", None),
    # canonical names map to themselves
    (T.TRAIN_LOSS, T.TRAIN_LOSS),
    (T.grad_norm_tag("conv1"), T.grad_norm_tag("conv1")),
    (T.lr_tag(2), T.lr_tag(2)),
]


@pytest.mark.parametrize("foreign, canonical", SCALAR_CASES)
def test_scalar_names(foreign, canonical):
    mapped = MAPPER.map(foreign)
    assert (mapped.tag if mapped else None) == canonical


@pytest.mark.parametrize(
    "foreign, canonical",
    [
        ("fc1.weight", T.hist_weight_tag("fc1")),
        ("features.0.weight.grad", T.hist_grad_tag("features.0")),
        ("grads/fc1.weight", T.hist_grad_tag("fc1")),
        ("fc1.bias", None),
        (T.hist_grad_tag("fc1"), T.hist_grad_tag("fc1")),
        ("kernel/histogram", None),
    ],
)
def test_histogram_names(foreign, canonical):
    mapped = MAPPER.map(foreign, "histogram")
    assert (mapped.tag if mapped else None) == canonical


@pytest.mark.parametrize(
    "names, expected",
    [
        # Trainer with eval_dataset={"clean": .., "noisy": ..}, as trainer_state.json names them ...
        (
            [
                "eval_clean_loss",
                "eval_clean_accuracy",
                "eval_clean_runtime",
                "eval_noisy_loss",
                "eval_noisy_runtime",
            ],
            {
                "eval_clean_loss": T.val_loss_tag("clean"),
                "eval_clean_accuracy": T.val_acc_tag("clean"),
                "eval_noisy_loss": T.val_loss_tag("noisy"),
            },
        ),
        # ... and as its TensorBoard callback does; a set name may hold underscores
        (
            ["eval/en_us_loss", "eval/en_us_acc", "eval/en_us_runtime"],
            {"eval/en_us_loss": T.val_loss_tag("en_us"), "eval/en_us_acc": T.val_acc_tag("en_us")},
        ),
        # TRL's metrics of the one eval set end in _loss/_accuracy but have no runtime of their own
        (["eval_loss", "eval_runtime", "eval_nll_loss", "eval_mean_token_accuracy"], {}),
        # a hand-written log's loss terms
        (["val_recon_loss", "val_kl_loss"], {}),
    ],
)
def test_named_eval_sets(names, expected):
    from trainscope.analyzers.reading.eval_sets import eval_set_tags

    assert eval_set_tags(names) == expected
    assert all(is_canonical(tag) for tag in expected.values())


def test_keras_epoch_summaries_are_on_the_epoch_axis():
    assert MAPPER.map("train/epoch_loss").axis == "epoch"
    assert MAPPER.map("train/batch_loss").axis == "step"


def test_user_rules_come_first_and_may_use_groups():
    mapper = TagMapper(
        extra=[TagRule(r"my_loss", T.TRAIN_LOSS), TagRule(r"gn/(.+)", T.GRAD_NORM_PREFIX + r"\1")]
    )
    assert mapper.map("my_loss").tag == T.TRAIN_LOSS
    assert mapper.map("gn/fc2").tag == T.grad_norm_tag("fc2")
    assert mapper.map("my_loss").rank < mapper.map("train_loss").rank


def test_parse_rule_from_the_command_line():
    rule = parse_rule("objective=train/loss")
    assert (rule.pattern, rule.target, rule.kind) == ("objective", T.TRAIN_LOSS, "scalar")
    assert parse_rule(r"w/(.+)=hist/weight/\1").kind == "histogram"
    with pytest.raises(ValueError):
        parse_rule("objective=not/a/tag")
    with pytest.raises(ValueError):
        parse_rule("no-equals-sign")
    with pytest.raises(ValueError):
        parse_rule("(unclosed=train/loss")


def _summary_writer_run(tmp_path, curves: dict[str, list[float]]):
    """A real SummaryWriter log of one point per epoch for each curve, read back as a run."""
    pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    from trainscope.analyzers.reading import read_logdir

    writer = SummaryWriter(str(tmp_path / "run"))
    for epoch in range(len(next(iter(curves.values())))):
        for name, values in curves.items():
            writer.add_scalar(name, values[epoch], epoch)
    writer.close()
    return read_logdir(tmp_path).runs["run"]


def test_a_test_set_evaluated_each_epoch_is_the_validation_curve(tmp_path):
    run = _summary_writer_run(
        tmp_path,
        {
            "Training loss": [0.9, 0.7, 0.6, 0.5],
            "Test loss (avg on test)": [0.8, 0.7, 0.65, 0.66],
            "Test accuracy": [0.6, 0.7, 0.72, 0.71],
            "IoU (avg on test)": [0.5, 0.6, 0.7, 0.7],
        },
    )
    assert run.tag_origins[T.VAL_LOSS] == "Test loss (avg on test)"
    assert run.scalars[T.VAL_LOSS].values.tolist() == pytest.approx([0.8, 0.7, 0.65, 0.66])
    assert run.tag_origins[T.VAL_ACC] == "Test accuracy"
    assert list(run.unmapped) == ["IoU (avg on test)"]


def test_a_test_curve_beside_a_validation_curve_stays_unmapped(tmp_path):
    run = _summary_writer_run(
        tmp_path,
        {
            "Loss/train": [0.9, 0.7, 0.6, 0.5],
            "Loss/val": [0.85, 0.75, 0.7, 0.72],
            "Accuracy/val": [0.55, 0.65, 0.7, 0.69],
            "Test loss (avg on test)": [0.8, 0.7, 0.65, 0.66],
            "Test accuracy": [0.6, 0.7, 0.72, 0.71],
        },
    )
    assert run.tag_origins[T.VAL_LOSS] == "Loss/val" and run.tag_origins[T.VAL_ACC] == "Accuracy/val"
    assert sorted(run.unmapped) == ["Test accuracy", "Test loss (avg on test)"]


def test_a_busier_test_curve_never_takes_the_place_of_a_sparse_validation_curve(tmp_path):
    """A val curve every 10 steps beside a test curve every step: the test curve has 10x the
    points (what lets a per-step curve beat a per-epoch one of the same split), but it only
    stands in for a validation curve the run lacks."""
    pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    from trainscope.analyzers.reading import read_logdir

    writer = SummaryWriter(str(tmp_path / "run"))
    for step in range(50):
        writer.add_scalar("Loss/train", 1.0 / (1 + step), step)
        writer.add_scalar("Test loss", 1.1 / (1 + step), step)
        if step % 10 == 9:
            writer.add_scalar("Loss/val", 1.2 / (1 + step), step)
    writer.close()
    run = read_logdir(tmp_path).runs["run"]
    assert run.tag_origins[T.VAL_LOSS] == "Loss/val"
    assert len(run.scalars[T.VAL_LOSS]) == 5
    assert "Test loss" in run.unmapped


def test_an_averaged_validation_loss_is_the_validation_curve(tmp_path):
    """A hand-written loop's ``average_val_loss`` beside its ``average_train_loss``
    (as a real W&B run logs them): the val curve of a run that names none otherwise."""
    run = _summary_writer_run(
        tmp_path,
        {
            "average_train_loss": [0.9, 0.7, 0.6, 0.5, 0.4],
            "average_val_loss": [0.8, 0.7, 0.68, 0.72, 0.76],
            "val_loss_std": [0.1, 0.1, 0.1, 0.1, 0.1],
        },
    )
    assert run.tag_origins[T.VAL_LOSS] == "average_val_loss"
    assert run.scalars[T.VAL_LOSS].values.tolist() == pytest.approx([0.8, 0.7, 0.68, 0.72, 0.76])
    assert run.tag_origins[T.TRAIN_LOSS] == "average_train_loss"
    assert list(run.unmapped) == ["val_loss_std"]


def test_a_plain_validation_loss_wins_over_an_averaged_one(tmp_path):
    run = _summary_writer_run(
        tmp_path,
        {
            "train_loss": [0.9, 0.7, 0.6, 0.5],
            "val_loss": [0.85, 0.75, 0.7, 0.72],
            "avg_val_loss": [0.8, 0.7, 0.65, 0.66],
        },
    )
    assert run.tag_origins[T.VAL_LOSS] == "val_loss"
    assert list(run.unmapped) == ["avg_val_loss"]
