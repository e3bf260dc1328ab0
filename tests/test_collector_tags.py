"""Every tag of the design, checked against a direct torch computation on real training."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from collector_helpers import FunctionalReLUNet, SmallCNN, mlp, read_histograms, read_scalars, train
from torch import nn

from trainscope.collectors import watch
from trainscope.logformat import tags as T

EVERY = 5
HIST_EVERY = 10
STEPS = 23


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


def _entropy(counts: torch.Tensor) -> float:
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(len(counts)))


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, digits):
    """Train the MLP with the collector and record, beside it, what each tag should say."""
    X, y = digits
    log_dir = tmp_path_factory.mktemp("mlp")
    expected: dict[str, dict[int, float]] = {}
    before: dict[int, list[torch.Tensor]] = {}
    seen = torch.zeros(10)

    def put(tag: str, step: int, value: float) -> None:
        expected.setdefault(tag, {})[step] = value

    def on_step(step, model, xb, yb, out):
        nonlocal seen
        layers = {"0": model[0], "2": model[2], "4": model[4]}
        put(T.TRAIN_LOSS, step, float(F.cross_entropy(out.detach(), yb)))
        put(T.TRAIN_ACC, step, float((out.argmax(1) == yb).float().mean()))
        put(T.LR, step, 0.05)
        put(T.GRAD_GLOBAL_NORM, step, _norm([p.grad for p in model.parameters()]))
        for name, layer in layers.items():
            put(T.grad_norm_tag(name), step, _norm([p.grad for p in layer.parameters()]))
        if step - 1 in before:  # weights now are the weights after step-1's update
            for (name, layer), olds in zip(layers.items(), before.pop(step - 1)):
                new = list(layer.parameters())
                put(
                    T.update_ratio_tag(name),
                    step - 1,
                    _norm([n - o for n, o in zip(new, olds)]) / _norm(olds),
                )
                put(T.weight_norm_tag(name), step - 1, _norm(new))
        if step % EVERY == 0:
            before[step] = [[p.detach().clone() for p in layer.parameters()] for layer in layers.values()]
            with torch.no_grad():
                h = torch.relu(model[0](xb))
                t = torch.tanh(model[2](h))
            put(T.dead_fraction_tag("1"), step, float((h.amax(0) <= 0).float().mean()))
            put(T.saturated_fraction_tag("3"), step, float((t.abs() > 0.99).float().mean()))
            put(T.INPUT_MEAN, step, float(xb.mean()))
            put(T.INPUT_STD, step, float(xb.std(correction=0)))
            counts = torch.bincount(yb, minlength=10).float()
            seen = seen + counts
            put(T.LABEL_ENTROPY, step, _entropy(counts))
            put(T.LABEL_ENTROPY_SEEN, step, _entropy(seen))

    model = train(
        mlp(),
        X,
        y,
        steps=STEPS,
        collector=lambda m, o: watch(
            m, o, log_dir, {"batch_size": 64}, every=EVERY, histogram_every=HIST_EVERY
        ),
        on_step=on_step,
    )
    return log_dir, expected, model


@pytest.mark.parametrize(
    "tag",
    [
        T.TRAIN_LOSS,
        T.TRAIN_ACC,
        T.LR,
        T.GRAD_GLOBAL_NORM,
        T.grad_norm_tag("0"),
        T.grad_norm_tag("2"),
        T.grad_norm_tag("4"),
        T.update_ratio_tag("0"),
        T.update_ratio_tag("4"),
        T.weight_norm_tag("2"),
        T.dead_fraction_tag("1"),
        T.saturated_fraction_tag("3"),
        T.INPUT_MEAN,
        T.INPUT_STD,
        T.LABEL_ENTROPY,
        T.LABEL_ENTROPY_SEEN,
    ],
)
def test_tag_matches_direct_computation(mlp_run, tag):
    log_dir, expected, _ = mlp_run
    recorded = read_scalars(log_dir)[tag]
    want = expected[tag]
    assert sorted(recorded) == sorted(want), (
        f"{tag}: recorded at steps {sorted(recorded)}, expected {sorted(want)}"
    )
    for step, value in want.items():
        assert recorded[step] == pytest.approx(value, rel=1e-4, abs=1e-6), f"{tag} at step {step}"


def test_every_step_and_sampled_schedules(mlp_run):
    log_dir, _, _ = mlp_run
    scalars = read_scalars(log_dir)
    assert sorted(scalars[T.STEP_SECONDS]) == list(range(STEPS))
    assert all(v > 0 for v in scalars[T.STEP_SECONDS].values())
    assert sorted(scalars[T.INPUT_MEAN]) == list(range(0, STEPS, EVERY))
    assert T.STEP_SKIPPED not in scalars  # every optimizer step ran
    # noise-scale windows close at the last step of each full window
    assert sorted(scalars[T.GRAD_NOISE_SCALE]) == [EVERY - 1 + k * EVERY for k in range(STEPS // EVERY)]
    assert all(v > 0 for v in scalars[T.GRAD_NOISE_SCALE].values())


def test_histograms_match_the_weights(mlp_run):
    log_dir, _, model = mlp_run
    hists = read_histograms(log_dir)
    assert set(hists) == {T.hist_weight_tag(n) for n in "024"} | {T.hist_grad_tag(n) for n in "024"}
    assert sorted(hists[T.hist_weight_tag("0")]) == [0, 10, 20]
    for _step, h in hists[T.hist_weight_tag("0")].items():
        assert h.num == model[0].weight.numel()
        assert sum(h.bucket) == model[0].weight.numel()
        assert len(h.bucket) == 30 and h.bucket_limit[-1] == pytest.approx(h.max)
        assert h.min < 0 < h.max


def test_run_json_describes_the_run(mlp_run):
    log_dir, _, _ = mlp_run
    data = json.loads((log_dir / "run.json").read_text())
    assert data["status"] == "finished" and data["steps"] == STEPS
    assert data["hparams"] == {"batch_size": 64} and data["batch_size"] == 64
    assert data["optimizer"]["type"] == "SGD"
    assert data["optimizer"]["param_groups"][0]["lr"] == 0.05
    assert data["optimizer"]["param_groups"][0]["momentum"] == 0.9
    layers = {layer["name"]: layer for layer in data["model"]["layers"]}
    assert layers["0"]["activation_after"] == "relu" and layers["2"]["activation_after"] == "tanh"
    assert layers["0"]["parameters"] == 64 * 64 + 64
    assert data["model"]["activations"] == {"relu": ["1"], "tanh": ["3"]}
    checks = {c["layer"]: c for c in data["init_check"]}
    assert checks["0"]["expected"] == "he" and checks["2"]["expected"] == "xavier"
    assert checks["0"]["fan_in"] == 64
    # PyTorch's default init: std = 1/sqrt(3·fan_in) = 0.41 × He's sqrt(2/fan_in)
    assert checks["0"]["ratio"] == pytest.approx(math.sqrt(1 / 6), rel=0.1)
    assert not checks["0"]["constant"]
    assert data["torch_version"] == torch.__version__ and data["world_size"] == 1
    assert data["collector"]["every"] == EVERY and data["collector_errors"] == []
    # The logits' 10 classes, seen without num_classes= being given: the rules' chance level ln 10.
    assert data["num_classes"] == 10


def test_constant_initialization_is_flagged(tmp_path, digits):
    model = mlp()
    torch.nn.init.zeros_(model[2].weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch(model, opt, tmp_path).close()
    checks = {c["layer"]: c for c in json.loads((tmp_path / "run.json").read_text())["init_check"]}
    assert checks["2"]["constant"] and checks["2"]["std"] == 0.0
    assert not checks["0"]["constant"]


def test_lstm_forget_gate_bias_is_checked(tmp_path):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 16, num_layers=2)
    with torch.no_grad():
        lstm.bias_ih_l0[16:32].fill_(0.5)
        lstm.bias_hh_l0[16:32].fill_(0.5)
        lstm.bias_ih_l1[16:32].fill_(0.0)
        lstm.bias_hh_l1[16:32].fill_(0.0)
    watch(lstm, torch.optim.SGD(lstm.parameters(), lr=0.1), tmp_path).close()
    checks = json.loads((tmp_path / "run.json").read_text())["init_check"]
    forget = [c for c in checks if c["param"] == "forget_gate_bias"]
    assert len(forget) == 1 and forget[0]["forget_gate_bias_mean"] == pytest.approx(0.5)  # (1.0 + 0.0) / 2
    assert {c["param"] for c in checks if c["param"] != "forget_gate_bias"} == {
        "weight_ih_l0",
        "weight_ih_l1",
    }


def test_functional_relu_dead_units_at_next_layer_input(tmp_path, digits):
    X, y = digits
    torch.manual_seed(0)
    model = FunctionalReLUNet()
    with torch.no_grad():
        model.fc1.bias[:12] = -50.0  # 12 of 48 units can never fire
    expected = {}

    def on_step(step, m, xb, yb, out):
        if step % EVERY == 0:
            with torch.no_grad():
                expected[step] = float((torch.relu(m.fc1(xb)).amax(0) <= 0).float().mean())

    train(model, X, y, steps=11, collector=lambda m, o: watch(m, o, tmp_path, every=EVERY), on_step=on_step)
    recorded = read_scalars(tmp_path)[T.dead_fraction_tag("fc2")]
    assert sorted(recorded) == [0, 5, 10]
    for step, value in expected.items():
        assert recorded[step] == pytest.approx(value) and value >= 12 / 48
    assert T.dead_fraction_tag("fc1") not in read_scalars(tmp_path)  # fc1 sees the data, not an activation
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["model"]["activations"]["relu_functional_at_input_of"] == ["fc2"]


def test_conv_dead_channels_are_counted_per_channel(tmp_path, digits):
    X, y = digits
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        model.bn.bias[:2] = -100.0  # two of eight channels dead after BatchNorm + ReLU
    train(model, X, y, steps=6, collector=lambda m, o: watch(m, o, tmp_path, every=EVERY))
    recorded = read_scalars(tmp_path)
    assert recorded[T.dead_fraction_tag("act")][0] == pytest.approx(2 / 8)
    assert {T.grad_norm_tag(n) for n in ("conv", "bn", "fc")} <= set(recorded)
    assert T.dead_fraction_tag("fc") not in recorded  # the ReLU module already covers fc's input


def test_learning_rate_of_every_param_group_follows_the_scheduler(tmp_path, digits):
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": list(model[2].parameters()) + list(model[4].parameters())},
        ],
        lr=0.01,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    collector = watch(model, opt, tmp_path)
    for _ in range(7):
        loss = F.cross_entropy(model(X[:32]), y[:32])
        loss.backward()
        opt.step()
        opt.zero_grad()
        collector.step(loss=loss)
        sched.step()
    collector.close()
    scalars = read_scalars(tmp_path)
    assert scalars[T.lr_tag(0)] == pytest.approx({s: 0.1 * 0.5 ** (s // 3) for s in range(7)})
    assert scalars[T.lr_tag(1)] == pytest.approx({s: 0.01 * 0.5 ** (s // 3) for s in range(7)})
    assert T.lr_tag(1) == "opt/lr/group1"


def test_values_of_any_shape_land_under_their_tags(tmp_path, digits):
    """A flush copies every pending value with one `cat`: one-element values shaped (1, 1)
    alone, and mixed with the statistics' vectors and 0-d losses (where that `cat` fails
    and each value is flattened on its own), all come out under their own tags."""
    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    collector = watch(model, opt, tmp_path, stats_budget=None)
    collector.log_scalars({"extra/alone": torch.full((1, 1), 2.0)}, step=0)
    collector.flush()  # a flush of (1, 1) values only
    for step in range(3):
        loss = F.cross_entropy(model(X[:32]), y[:32])
        loss.backward()
        opt.step()
        opt.zero_grad()
        collector.step(loss=loss.reshape(1, 1))  # a loss shaped (1, 1) that requires grad: kept by reference
        collector.log_scalars(
            {"extra/matrix": torch.full((2, 2), float(step)), "extra/number": step + 0.5}, step=step
        )
    collector.close()
    scalars = read_scalars(tmp_path)
    assert scalars["extra/alone"] == {0: 2.0}
    assert scalars["extra/matrix"] == {0: 0.0, 1: 1.0, 2: 2.0}  # averaged
    assert scalars["extra/number"] == {0: 0.5, 1: 1.5, 2: 2.5}
    assert sorted(scalars[T.TRAIN_LOSS]) == [0, 1, 2] and sorted(scalars[T.GRAD_GLOBAL_NORM]) == [0, 1, 2]
    assert all(1.0 < v < 4.0 for v in scalars[T.TRAIN_LOSS].values())  # ln(10) at the start: not a norm


SAMPLED_SIGNALS = {
    "update_ratios": lambda tag: tag.startswith((T.UPDATE_RATIO_PREFIX, T.WEIGHT_NORM_PREFIX)),
    "activations": lambda tag: tag.startswith("act/"),
    "noise_scale": lambda tag: tag == T.GRAD_NOISE_SCALE,
    "histograms": lambda tag: tag.startswith("hist/"),
}


@pytest.mark.parametrize("switched_off", sorted(SAMPLED_SIGNALS))
def test_each_sampled_signal_switches_off_alone(tmp_path, digits, switched_off):
    """A switch turns off its own tags and nothing else (weight histograms were once
    taken with the update ratios, and went with them)."""
    X, y = digits
    settings = {"every": 2, "histogram_every": 2, "noise_window": 2}
    off = {**settings, switched_off: False}
    train(mlp(), X, y, steps=8, collector=lambda m, o: watch(m, o, tmp_path / "all", **settings))
    train(mlp(), X, y, steps=8, collector=lambda m, o: watch(m, o, tmp_path / "off", **off))

    def tags(run: str) -> set[str]:
        return set(read_scalars(tmp_path / run)) | set(read_histograms(tmp_path / run))

    belongs = SAMPLED_SIGNALS[switched_off]
    assert any(belongs(tag) for tag in tags("all"))
    assert tags("off") == {tag for tag in tags("all") if not belongs(tag)}


def test_layers_inside_wrappers_are_named_as_in_the_bare_model(tmp_path, digits):
    """Activation checkpointing (`checkpoint_wrapper`, as FSDP setups use) puts a wrapper
    between a block and its layers (``0._checkpoint_wrapped_module.0``): tags name them
    as the bare model does, and the values are the same (the recomputed forward pass
    in backward is not measured twice)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    def model(wrapped: bool) -> nn.Module:
        torch.manual_seed(0)
        block = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        return nn.Sequential(checkpoint_wrapper(block) if wrapped else block, nn.Linear(64, 10))

    X, y = digits
    for wrapped in (False, True):
        log_dir = tmp_path / str(wrapped)
        train(
            model(wrapped),
            X,
            y,
            steps=6,
            collector=lambda m, o, log_dir=log_dir: watch(m, o, log_dir, every=2),
        )
    bare, wrapped = read_scalars(tmp_path / "False"), read_scalars(tmp_path / "True")
    assert T.dead_fraction_tag("0.1") in bare and T.grad_norm_tag("0.0") in bare
    assert sorted(wrapped) == sorted(bare)
    for tag, values in bare.items():
        if tag != T.STEP_SECONDS:
            assert wrapped[tag] == pytest.approx(values, rel=1e-6), tag


class TiedEmbedding(nn.Module):
    """A language-model shape: the output layer shares the embedding's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(16, 12)
        self.mid = nn.Linear(12, 12)
        self.head = nn.Linear(12, 16, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mid(self.emb(x)))).mean(dim=1)


def test_a_tied_weight_is_counted_once_in_the_global_norm(tmp_path):
    """The shared weight shows under both of its layers, and the global gradient norm
    (and the noise scale built on it) counts it once; counted twice, it read high."""
    torch.manual_seed(0)
    model = TiedEmbedding()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    collector = watch(model, opt, tmp_path, every=1)
    expected = {}
    for step in range(3):
        x, y = torch.randint(0, 16, (8, 5)), torch.randint(0, 16, (8,))
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        grads = {name: p.grad.double() for name, p in model.named_parameters()}  # the tied weight once
        expected[step] = {
            T.GRAD_GLOBAL_NORM: torch.sqrt(sum(g.pow(2).sum() for g in grads.values())).item(),
            T.grad_norm_tag("emb"): grads["emb.weight"].norm().item(),
            T.grad_norm_tag("head"): grads["emb.weight"].norm().item(),
        }
        opt.step()
        collector.step(loss=loss)
    collector.close()
    scalars = read_scalars(tmp_path)
    for step, values in expected.items():
        for tag, value in values.items():
            assert scalars[tag][step] == pytest.approx(value, rel=1e-5), (tag, step)
    assert scalars[T.update_ratio_tag("head")] == pytest.approx(scalars[T.update_ratio_tag("emb")], rel=1e-6)


def test_a_parametrized_layer_is_one_layer(tmp_path, digits):
    """`weight_norm` and `spectral_norm` compute a layer's weight from parameters kept
    under `parametrizations.weight`: they belong to the layer (one `grad/norm/0`, not a
    second `grad/norm/0.parametrizations.weight`)."""
    from torch.nn.utils.parametrizations import spectral_norm, weight_norm

    X, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(weight_norm(nn.Linear(64, 32)), nn.ReLU(), spectral_norm(nn.Linear(32, 10)))
    expected = {}

    def measure(step, model, xb, yb, out):
        expected[step] = {
            T.grad_norm_tag(name): torch.cat([p.grad.reshape(-1) for p in model[int(name)].parameters()])
            .norm()
            .item()
            for name in ("0", "2")
        }

    train(model, X, y, steps=4, on_step=measure, collector=lambda m, o: watch(m, o, tmp_path, every=2))
    scalars = read_scalars(tmp_path)
    assert not any("parametrizations" in tag for tag in scalars)
    for step, values in expected.items():
        for tag, value in values.items():
            assert scalars[tag][step] == pytest.approx(value, rel=1e-5), (tag, step)
    assert sorted(scalars[T.update_ratio_tag("0")]) == [0, 2]


class TinyLanguageModel(nn.Module):
    def __init__(self, vocabulary: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocabulary, 16)
        self.head = nn.Linear(16, vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.emb(tokens)))  # (batch, tokens, vocabulary)


class TinySegmenter(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, classes, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)  # (batch, classes, height, width)


def test_a_segmenter_s_accuracy_counts_every_labelled_pixel(tmp_path):
    """(batch, classes, height, width) logits with (batch, height, width) labels, as
    F.cross_entropy takes them: train/acc over every pixel, labels of -100 (its
    ignore_index) left out; before, only (batch, classes) counted. Label entropy stays
    a per-example class mix."""
    torch.manual_seed(0)
    model = TinySegmenter()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    collector = watch(model, opt, tmp_path)
    expected = {}
    for step in range(5):
        images, targets = torch.randn(4, 1, 6, 6), torch.randint(0, 3, (4, 6, 6))
        targets[0, :2] = -100
        opt.zero_grad()
        out = model(images)
        loss = F.cross_entropy(out, targets, ignore_index=-100)
        loss.backward()
        opt.step()
        labelled = targets != -100
        expected[step] = (out.argmax(1) == targets)[labelled].float().mean().item()
        collector.step(loss=loss, outputs=out, targets=targets)
    collector.close()
    scalars = read_scalars(tmp_path)
    assert scalars[T.TRAIN_ACC] == pytest.approx(expected, rel=1e-6)
    assert T.LABEL_ENTROPY not in scalars


def test_a_language_model_s_accuracy_is_taken_as_its_loss_takes_the_tokens(tmp_path):
    """(batch, tokens, vocabulary) logits with (batch, tokens) labels could be shifted by
    one token or not (Hugging Face shifts inside the model): labels that are the model's
    input ids are taken as unshifted, the logits of token t against the label of token
    t + 1, as the loss takes them. Flattened and shifted as the loss takes them, every
    labelled token counts too. (tests/test_collector_language_models.py trains both
    ways of shifting.)"""
    torch.manual_seed(0)
    model = TinyLanguageModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for flattened in (False, True):
        collector = watch(model, opt, tmp_path / str(flattened))
        expected = {}
        for step in range(4):
            tokens = torch.randint(0, 12, (4, 9))
            opt.zero_grad()
            logits = model(tokens)
            predicted, labels = logits[:, :-1].reshape(-1, 12), tokens[:, 1:].reshape(-1)
            loss = F.cross_entropy(predicted, labels)
            loss.backward()
            opt.step()
            expected[step] = (predicted.argmax(-1) == labels).float().mean().item()
            if flattened:
                collector.step(loss=loss, outputs=predicted, targets=labels)
            else:
                collector.step(loss=loss, outputs=logits, targets=tokens)
        collector.close()
        scalars = read_scalars(tmp_path / str(flattened))
        assert scalars[T.TRAIN_ACC] == pytest.approx(expected, rel=1e-6)
        assert T.LABEL_ENTROPY not in scalars  # the tokens' mix is the language's, not the batches'


def _accuracy(out: torch.Tensor, yb: torch.Tensor) -> float:
    return (out.argmax(1) == yb).float().mean().item()


def _train_for_accuracy(collector, model, opt, X, y, steps, batch_of, after_step=None, forward=None):
    """Train; return each step's accuracy as computed at the step, before anything else runs."""
    expected = {}
    start = 0
    for step in range(steps):
        batch = batch_of(step)
        xb, yb = X[start : start + batch], y[start : start + batch]
        start = (start + batch) % (len(X) - 64)
        opt.zero_grad()
        out = model(xb) if forward is None else forward(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        expected[step] = _accuracy(out, yb)
        collector.step(loss=loss, outputs=out, targets=yb)
        if after_step is not None:
            after_step(step, out)
    collector.close()
    return expected


def test_accuracy_is_recorded_on_every_step(tmp_path, digits):
    """Past the first 200 steps the gradient norms are spread out by the budget; the
    accuracy is not: each step's logits and labels are kept until the flush, which
    computes them all at once, per shape (every 7th batch here is smaller)."""
    X, y = digits
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, stats_budget=None, stats_every=5, flush_steps=30)
    expected = _train_for_accuracy(collector, model, opt, X, y, 250, lambda s: 20 if s % 7 == 6 else 32)
    scalars = read_scalars(tmp_path)
    assert sorted(scalars[T.GRAD_GLOBAL_NORM]) == list(range(0, 250, 5))
    assert scalars[T.TRAIN_ACC] == pytest.approx(expected, abs=1e-6)
    assert collector.errors == []


def test_quiet_steps_record_loss_accuracy_and_every_learning_rate(tmp_path, digits):
    """Steps with nothing to record but loss, accuracy, learning rates and step time take
    a short path of their own (`_record_quiet_step`); what it records is what the full
    path would, step by step, with every group's learning rate moving every step. From
    step 60 one rate is a tensor that the scheduler updates in place: such a step takes
    the full path, which copies it."""
    X, y = digits
    model = mlp()
    second = list(model[2].parameters()) + list(model[4].parameters())
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1}, {"params": second}], lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.98**s)
    collector = watch(model, opt, tmp_path, stats_budget=None, stats_every=10, every=40, flush_steps=25)
    full_path = []
    record_step = collector._record_step

    def counted_record_step(*args):
        full_path.append(collector._step)
        record_step(*args)

    collector._record_step = counted_record_step
    expected = {T.TRAIN_LOSS: {}, T.TRAIN_ACC: {}, T.lr_tag(0): {}, T.lr_tag(1): {}}
    for step in range(100):
        if step == 60:
            opt.param_groups[1]["lr"] = torch.tensor(opt.param_groups[1]["lr"])
        xb, yb = X[step * 16 : step * 16 + 32], y[step * 16 : step * 16 + 32]
        opt.zero_grad()
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        expected[T.TRAIN_LOSS][step] = loss.item()
        expected[T.TRAIN_ACC][step] = _accuracy(out, yb)
        expected[T.lr_tag(0)][step] = float(opt.param_groups[0]["lr"])
        expected[T.lr_tag(1)][step] = float(opt.param_groups[1]["lr"])
        collector.step(loss=loss, outputs=out, targets=yb)
        sched.step()
    collector.close()
    scalars = read_scalars(tmp_path)
    for tag, want in expected.items():
        assert scalars[tag] == pytest.approx(want, rel=1e-6), tag
    assert sorted(scalars[T.STEP_SECONDS]) == list(range(100))
    # statistics every 10th step, a sample and its noise window from every 40th
    quiet = [s for s in range(60) if s % 10 and s % 40 >= 5]
    assert full_path == [s for s in range(100) if s not in quiet]
    assert collector.errors == []


def test_logits_changed_in_place_lose_only_that_step_s_accuracy(tmp_path, digits):
    """A kept tensor changed before the flush cannot give its step's accuracy: it is left
    out and reported once, and from then on the accuracy is measured at once, on the
    statistics steps."""
    X, y = digits
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, stats_budget=None, stats_every=2, flush_steps=6)

    def negate_step_3(step, out):
        if step == 3:
            with torch.no_grad():
                out.neg_()

    with pytest.warns(RuntimeWarning, match="accuracy by reference"):
        expected = _train_for_accuracy(collector, model, opt, X, y, 12, lambda s: 32, negate_step_3)
    acc = read_scalars(tmp_path)[T.TRAIN_ACC]
    # the flush after step 5 finds step 3 changed; steps 6-11 are measured at once, on
    # the statistics steps (every 2nd)
    assert sorted(acc) == [0, 1, 2, 4, 5, 6, 8, 10]
    assert acc == pytest.approx({s: expected[s] for s in acc}, abs=1e-6)
    assert len(collector.errors) == 1 and "step 3" in collector.errors[0]


def _train_sliced_logits(tmp_path, digits, width, steps, kept_bytes=None):
    """Logits sliced from a `width`-wide output: a view, which keeps the whole alive."""
    X, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collector = watch(model, opt, tmp_path, stats_budget=None, stats_every=3, num_classes=10)

    def note_kept_bytes(step, out):
        if kept_bytes is not None:
            kept_bytes.append(collector._accuracy._kept_bytes)

    def sliced(xb):
        return model(xb)[:, :10]

    expected = _train_for_accuracy(collector, model, opt, X, y, steps, lambda s: 32, note_kept_bytes, sliced)
    return read_scalars(tmp_path)[T.TRAIN_ACC], expected


def test_logits_of_a_large_storage_are_measured_at_once(tmp_path, digits):
    """Logits whose storage is over 4 MiB are not kept: their accuracy is measured at
    once, on the statistics steps."""
    acc, expected = _train_sliced_logits(tmp_path, digits, 40_000, 9)  # 32 x 40,000 floats: 5 MB
    assert sorted(acc) == [0, 3, 6]
    assert acc == pytest.approx({s: expected[s] for s in (0, 3, 6)}, abs=1e-6)


def test_kept_logits_are_read_before_they_hold_too_much(tmp_path, digits):
    """1 MiB a step: the kept tensors are read every 16 steps (16 MiB), long before the
    flush, and every step still gets its accuracy."""
    kept_bytes: list[int] = []
    acc, expected = _train_sliced_logits(tmp_path, digits, 8192, 40, kept_bytes)
    assert acc == pytest.approx(expected, abs=1e-6)
    assert 0 < max(kept_bytes) < 16 << 20 and kept_bytes.count(0) >= 2
