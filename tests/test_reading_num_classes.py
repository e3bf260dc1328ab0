"""The number of classes of a foreign run, for the rules that compare a loss with ln C.

A Hugging Face classifier's ``config.json`` (written by transformers' ``save_pretrained``
beside trainer_state.json) gives C for a sequence, image or audio classification head,
never for token classification or another head, and only in a directory discovery knows
to be a Trainer's. ``hparams.yaml`` gives it nested (torchmetrics' ``metrics_params``)
when the counts it names agree.
"""

from __future__ import annotations

import json
import os

import pytest
from reading_helpers import scalar_events, write_events

from trainscope.analyzers import facts
from trainscope.analyzers.reading import discovery as D
from trainscope.analyzers.reading import read_logdir
from trainscope.analyzers.reading.hparams import class_count, meta_from_hparams
from trainscope.analyzers.run import Run
from trainscope.logformat import runjson as RJ
from trainscope.logformat import tags as T

STATE = {
    "global_step": 20,
    "log_history": [
        {"step": 10, "loss": 1.5, "learning_rate": 1e-5},
        {"step": 20, "loss": 1.2, "eval_loss": 1.4, "eval_accuracy": 0.4},
    ],
}


def tiny(head: str, labels: int) -> object:
    """A BERT with head `head` (transformers' class name) and `labels` labels, small enough
    to save in a blink."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=labels,
    )
    return getattr(transformers, head)(config)


def trainer_output(root: str, model: object | None, config_in: str = "checkpoint-20") -> str:
    """A Trainer output dir: checkpoint-20/trainer_state.json, the model saved in `config_in`."""
    out = os.path.join(root, "out")
    os.makedirs(os.path.join(out, "checkpoint-20"))
    with open(os.path.join(out, "checkpoint-20", D.TRAINER_STATE), "w") as fh:
        json.dump(STATE, fh)
    if model is not None:
        model.save_pretrained(os.path.join(out, config_in))
    return out


@pytest.mark.parametrize("config_in", ["checkpoint-20", "."])
@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("BertForSequenceClassification", 5),
        # NER: the loss is dominated by the commonest tag; ln C says nothing of it.
        ("BertForTokenClassification", None),
        ("BertForMaskedLM", None),  # its config says five labels too: any head's does
    ],
)
def test_a_trainer_classifier_s_config_gives_its_classes(tmp_path, config_in, head, expected):
    out = trainer_output(str(tmp_path), tiny(head, 5), config_in)
    saved = json.loads(open(os.path.join(out, config_in, "config.json")).read())
    assert saved["architectures"] == [head] and len(saved["id2label"]) == 5
    run = read_logdir(tmp_path).runs["out"]
    assert run.problems == () and run.source == "hf_trainer_state"
    assert run.scalars[T.VAL_LOSS].steps.tolist() == [20]
    assert facts.num_classes(run) == expected


def test_a_regression_head_has_no_classes(tmp_path):
    model = tiny("BertForSequenceClassification", 3)
    model.config.problem_type = "multi_label_classification"  # a sigmoid per label: no C-way cross-entropy
    trainer_output(str(tmp_path), model)
    assert facts.num_classes(read_logdir(tmp_path).runs["out"]) is None


def test_a_corrupt_config_is_one_problem_line_and_the_run_is_read(tmp_path):
    out = trainer_output(str(tmp_path), None)
    path = os.path.join(out, "checkpoint-20", "config.json")
    with open(path, "w") as fh:
        fh.write('{"architectures": ["BertForSequenceClassification"], "id2label": {"0": ')
    run = read_logdir(tmp_path).runs["out"]
    (line,) = run.problems
    assert line.startswith(f"{path}: unreadable config.json")
    assert run.scalars[T.TRAIN_LOSS].steps.tolist() == [10, 20] and facts.num_classes(run) is None


def test_a_config_json_outside_a_trainer_s_directories_is_not_read(tmp_path):
    """Beside a TensorBoard run of any other loop, config.json is some other tool's file."""
    run_dir = os.path.join(tmp_path, "tb")
    write_events(run_dir, scalar_events({s: {T.TRAIN_LOSS: 1.0} for s in range(5)}))
    tiny("BertForSequenceClassification", 5).save_pretrained(run_dir)
    bad = os.path.join(tmp_path, "tb2")
    write_events(bad, scalar_events({s: {T.TRAIN_LOSS: 1.0} for s in range(5)}))
    with open(os.path.join(bad, "config.json"), "w") as fh:
        fh.write("{not json")
    snapshot = read_logdir(tmp_path)
    assert list(snapshot.runs) == ["tb", "tb2"]
    for run in snapshot.runs.values():
        assert run.problems == () and facts.num_classes(run) is None
    listing, _ = D.DirectoryWatcher(str(tmp_path)).scan()
    assert all(f.kind != D.KIND_HF_CONFIG for f in listing.sources.values())


FOREST_COVER = """\
task: classification
loss: CrossEntropyLoss
metrics:
- accuracy
metrics_params:
- sub_params_list:
  - task: multiclass
    num_classes: 7
    top_k: 1
batch_size: 1024
output_dim: 7
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (FOREST_COVER, 7),  # pytorch_tabular's hparams.yaml: the count only inside a list
        (FOREST_COVER + "head_config:\n  num_classes: 7\n", 7),  # twice, agreeing
        (FOREST_COVER + "head_config:\n  num_classes: 3\n", None),  # disagreeing: unknown
        ("model:\n  classes: [cat, dog, bird]\n", None),  # names, not a count
        ("num_classes: 1\n", None),  # one output (a sigmoid): no C-way cross-entropy
    ],
)
def test_a_nested_class_count_in_hparams_yaml(tmp_path, text, expected):
    run_dir = os.path.join(tmp_path, "version_0")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.csv"), "w") as fh:
        fh.write("epoch,step,train_loss,val_loss\n0,9,1.9,\n0,9,,1.8\n1,19,1.5,\n1,19,,1.6\n")
    with open(os.path.join(run_dir, "hparams.yaml"), "w") as fh:
        fh.write(text)
    run = read_logdir(tmp_path).runs["version_0"]
    assert run.problems == () and run.scalars[T.VAL_LOSS].steps.tolist() == [9, 19]
    assert facts.num_classes(run) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"model.head.n_classes": 5, "lr": 0.1}, 5),  # MLflow params of a nested config
        ({"a.num_classes": 5, "b.num_classes": 6}, None),
        ({"lr": 0.1}, None),
    ],
)
def test_flat_hyperparameters_name_a_nested_class_count(params, expected):
    meta = meta_from_hparams(params)
    assert meta.get(RJ.K_NUM_CLASSES) == expected
    assert facts.num_classes(Run(name="r", path="/r", source="mlflow", meta=meta)) == expected


def test_a_class_count_named_at_the_top_wins_over_nested_ones_that_disagree():
    meta = meta_from_hparams({"num_classes": 10, "model.num_classes": 5})
    assert RJ.K_NUM_CLASSES not in meta
    assert facts.num_classes(Run(name="r", path="/r", source="mlflow", meta=meta)) == 10


def test_class_count_is_bounded_on_an_alias_bomb():
    layer: object = {"num_classes": 7}
    for _ in range(40):
        layer = [layer] * 10  # 10^40 paths through shared nodes
    assert class_count({"root": layer}) == 7
