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
    ("test_acc", None),
    ("avg_test_loss", None),
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
    ("test/loss", None),
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
