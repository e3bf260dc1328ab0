"""The sample runs, as a table: one small `Case` per run, each with the fault it injects.

A case is data (`DataSpec`), a model factory, optimizer settings (`OptimSpec`),
batch size and epochs, the collector's sampling intervals (chosen per case so that
every rule has enough samples while the committed run stays small), and the few
faults that live in the training loop itself (no ``optimizer.zero_grad()``, gradient
clipping, single steps at a multiple of the learning rate), as named fields that `sample_runs.training`
honours. `fault`
says in words what was done wrong; `expect` lists the rules that must fire on it at
warning or critical (empty for a healthy run, which must raise none at all), the
injected fault's rule first: the diagnosis must name it first, as the root cause of the
others. Both go into the run's ``case.json``.

Every number here was chosen by looking at the resulting curves (see
``python -m sample_runs.generate``, which prints them), not by tuning until a rule
fires: a case that does not really show its fault is a wrong case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from trainscope.sample_runs import models as M
from trainscope.sample_runs.data import DataSpec, Split


@dataclass(frozen=True)
class OptimSpec:
    """A case's optimizer; the defaults are the healthy MLP's (SGD lr 0.05, momentum 0.9, weight decay
    5e-4). AdamW decays the matrices only, as nanoGPT does."""

    kind: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)  # Adam and AdamW only

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.kind == "adamw":
            # nanoGPT's configure_optimizers: decay the matrices (Linear and Embedding weights),
            # not the biases and LayerNorm gains: two parameter groups.
            params = [p for p in model.parameters() if p.requires_grad]
            groups = [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ]
            return torch.optim.AdamW(groups, lr=self.lr, betas=self.betas)
        if self.kind == "adam":
            return torch.optim.Adam(
                model.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay
            )
        return torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def hparams(self) -> dict[str, Any]:
        out: dict[str, Any] = {"optimizer": self.kind, "lr": self.lr, "weight_decay": self.weight_decay}
        if self.kind == "sgd":
            out["momentum"] = self.momentum
        elif self.betas != (0.9, 0.999):  # torch's default is not worth recording
            out["betas"] = list(self.betas)
        return out


ModelFactory = Callable[[Split], nn.Module]


@dataclass(frozen=True)
class Case:
    name: str  # the run's folder name: what it shows
    fault: str  # what was injected, in words ("none" for a healthy run)
    expect: tuple[str, ...]  # rule ids that must fire at warning/critical; the first is the injected fault,
    # which the diagnosis must name first, as its root cause
    model: ModelFactory
    data: DataSpec = DataSpec()
    optim: OptimSpec = OptimSpec()  # the healthy run's SGD settings unless a case says otherwise
    batch_size: int = 32
    epochs: int = 10
    every: int = 10  # collector: sampled signals every 10 steps = 45 samples in a 450-step run
    histogram_every: int = 100  # collector: histograms every 100 steps (the largest records: keep few)
    # collector: gradient norms every step; a model of many layers records them every k-th step (its
    # per-layer norms are most of a run's records), as the collector's time budget would on a real run
    stats_every: int = 1
    seed: int = 0
    stop_when_nonfinite: bool = True  # end training after the epoch whose loss went NaN/Inf
    # The faults that live in the training loop itself (sample_runs.training honours them):
    zero_grad: bool = True  # False: never call optimizer.zero_grad(), so gradients add up step after step
    # Clip the gradients' global norm to this before every step (clip_grad_norm_); None: no clipping.
    clip_grad_norm: float | None = None
    # Steps (0-based) taken at lr_pulse_factor times the learning rate, as a faulty schedule would set it.
    lr_pulse_steps: tuple[int, ...] = ()
    lr_pulse_factor: float = 1.0

    @property
    def healthy(self) -> bool:
        return not self.expect


# --- model factories (named, so a case reads as a sentence) ------------------------------


def mlp_relu(split: Split) -> nn.Module:
    """The healthy MLP: 64-128-64-10 with ReLU modules in an nn.Sequential."""
    return M.mlp((split.num_features, 128, 64, split.num_classes))


def cnn(split: Split) -> nn.Module:
    return M.ConvNet(split.num_classes)


def mlp_leaky(split: Split) -> nn.Module:
    """The healthy MLP's shape with LeakyReLU: its units cannot die, so a too-high lr shows in the loss."""
    return M.mlp((split.num_features, 128, 64, split.num_classes), activation=nn.LeakyReLU)


def mlp_tanh(split: Split) -> nn.Module:
    return M.mlp((split.num_features, 128, 64, split.num_classes), activation=nn.Tanh)


def mlp_sigmoid(split: Split) -> nn.Module:
    return M.mlp((split.num_features, 128, 64, split.num_classes), activation=nn.Sigmoid)


def mlp_one_unit(split: Split) -> nn.Module:
    """A hidden layer of a single unit: every class must be told apart by one number."""
    return M.mlp((split.num_features, 1, split.num_classes))


def mlp_wide(split: Split) -> nn.Module:
    return M.mlp((split.num_features, 512, 512, split.num_classes))


def mlp_negative_bias(split: Split) -> nn.Module:
    """F.relu-style MLP whose hidden biases start at -1: most pre-activations are negative from step 0."""
    return M.hidden_bias_init(M.MLP(split.num_features, 64, split.num_classes), -1.0)


def deep_sigmoid(split: Split) -> nn.Module:
    """Six sigmoid hidden layers: each multiplies the backward signal by at most 0.25."""
    return M.mlp((split.num_features,) + (64,) * 6 + (split.num_classes,), activation=nn.Sigmoid)


def deep_relu(split: Split) -> nn.Module:
    """Six ReLU hidden layers, no normalization: nothing bounds the signal from layer to layer."""
    return M.mlp((split.num_features,) + (64,) * 6 + (split.num_classes,))


def tanh_unit_normal_init(split: Split) -> nn.Module:
    """Weights drawn from N(0, 1) whatever the fan-in (``W = randn(...)``): pre-activations of std ~8."""
    return M.normal_init(mlp_tanh(split), 1.0)


def sigmoid_zero_init(split: Split) -> nn.Module:
    return M.zero_init(mlp_sigmoid(split))


def deep_relu_tiny_init(split: Split) -> nn.Module:
    """``W = 0.01 * randn(...)``: fine for one layer, but the signal shrinks ~18x per layer over six."""
    return M.normal_init(deep_relu(split), 0.01)


def mlp_relu_on_logits(split: Split) -> nn.Module:
    """The healthy MLP with an ``nn.ReLU()`` after its output layer: logits can never be negative."""
    return nn.Sequential(*mlp_relu(split), nn.ReLU())


def mlp_output_init_large(split: Split) -> nn.Module:
    """The healthy MLP whose output layer is drawn from N(0, 3^2): ~40x PyTorch's default (std 0.072)."""
    return M.output_init(mlp_relu(split), 3.0)


def cnn_wide_hidden(split: Split) -> nn.Module:
    """The healthy CNN with a dense hidden layer of 2,048 units (not 64): far more than 10 digits need."""
    return M.ConvNet(split.num_classes, hidden=2048)


def gpt_char(split: Split) -> nn.Module:
    """The tiny GPT: 2 blocks, 4 heads, 48-dimensional embeddings, context of the split's windows."""
    return M.GPT(split.num_classes, block_size=int(split.x_train.shape[1]))


# --- the table ---------------------------------------------------------------------------

CASES: tuple[Case, ...] = (
    Case(
        name="healthy_mlp",
        fault="none: standardized digits, MLP 64-128-64-10 with ReLU, SGD lr 0.05 momentum 0.9, weight decay "
        "5e-4, batch 32, shuffled, 10 epochs",
        expect=(),
        model=mlp_relu,
    ),
    Case(
        name="healthy_cnn",
        fault="none: digits as 8x8 images, two-conv CNN with batch norm (F.relu in forward), Adam lr 1e-3, "
        "weight decay 1e-4, batch 32, shuffled, 10 epochs",
        expect=(),
        model=cnn,
        optim=OptimSpec("adam", lr=1e-3, weight_decay=1e-4),
    ),
    Case(
        name="gpt_char_healthy",
        fault="none: a tiny GPT in nanoGPT's shape (token and position embeddings, two pre-LayerNorm blocks "
        "of causal self-attention with 4 heads and a GELU MLP, a final LayerNorm, a head tied to the token "
        "embedding; GPT-2's N(0, 0.02) init, residual projections scaled by 1/sqrt(2 * 2 layers)) on 24k "
        "characters of generated sentences (33 symbols) in 32-character windows, targets shifted by one; "
        "AdamW lr 3e-3, betas (0.9, 0.99), weight decay 0.1 on the matrices only, batch 32, 10 epochs; the "
        "loss falls from ln 33 = 3.50 to 0.60 nats per character (validation 0.61, 78% of next characters "
        "right)",
        expect=(),
        model=gpt_char,
        data=DataSpec(dataset="text"),
        optim=OptimSpec("adamw", lr=3e-3, weight_decay=0.1, betas=(0.9, 0.99)),
        every=20,
        histogram_every=200,
        stats_every=4,
    ),
    Case(
        name="cnn_silent_units_healthy",
        fault="none: silent units in an over-wide layer: the healthy CNN with a dense hidden layer of 2,048 "
        "units (the healthy CNN has 64) and Adam lr 3e-3, weight decay 1e-4; 67% of that layer's units fall "
        "silent within 50 steps (zero for every example of a batch) and stay so, while the rest carry the "
        "task: validation accuracy 99.4%",
        expect=(),
        model=cnn_wide_hidden,
        optim=OptimSpec("adam", lr=3e-3, weight_decay=1e-4),
    ),
    Case(
        name="lr_far_too_high_nan",
        fault="learning rate far too high: SGD lr 0.3 with momentum 0.9 (6x the healthy run's) on a "
        "LeakyReLU MLP; the loss climbs, the gradients blow up and training turns to NaN within two epochs",
        expect=("lr_too_high", "exploding_gradients", "nonfinite"),
        model=mlp_leaky,
        optim=OptimSpec(lr=0.3),
    ),
    Case(
        name="lr_far_too_high_dead",
        fault="learning rate far too high, the network dead: SGD lr 1.5 with momentum 0.9 (30x the healthy "
        "run's) on the healthy MLP; within ten steps the loss spikes to the hundreds, the weights grow a "
        "thousandfold and most ReLUs die, and the loss then sits at chance (ln 10 = 2.30) to the end, never "
        "NaN",
        expect=("lr_too_high", "dead_relu"),
        model=mlp_relu,
        optim=OptimSpec(lr=1.5),
    ),
    Case(
        name="lr_too_high_oscillating",
        fault="learning rate too high: SGD lr 1.0 with momentum 0.9 on a tanh MLP; too high to converge, not "
        "high enough to blow up: the loss jumps around at a high level and accuracy never improves after "
        "the first epoch",
        expect=("lr_too_high",),
        model=mlp_tanh,
        optim=OptimSpec(lr=1.0),
    ),
    Case(
        name="lr_too_low",
        fault="learning rate far too low: SGD lr 1e-3 with momentum 0.9 (50x below the healthy run's); the "
        "loss creeps down in a straight line and is still far from converged after 10 epochs",
        expect=("lr_too_low",),
        model=mlp_relu,
        optim=OptimSpec(lr=1e-3),
    ),
    Case(
        name="noisy_batch_size_2",
        fault="batch size 2: every step's gradient comes from two examples, so the per-step loss scatters "
        "widely around its trend (SGD lr 0.01, no momentum: the healthy lr 0.05 with momentum kills the "
        "network at this batch size); one epoch",
        expect=("noisy_batches",),
        model=mlp_relu,
        optim=OptimSpec(lr=0.01, momentum=0.0),
        batch_size=2,
        epochs=1,
        every=25,
        histogram_every=350,
    ),
    Case(
        name="overfitting",
        fault="overfitting: 100 training examples (of 1,437), a wide MLP 64-512-512-10 with 300k parameters, "
        "no weight decay, no dropout, Adam lr 1e-3 for 100 epochs; validation loss bottoms out early and "
        "climbs while the training loss goes to zero",
        expect=("overfitting",),
        model=mlp_wide,
        data=DataSpec(train_subset=100),
        optim=OptimSpec("adam", lr=1e-3, weight_decay=0.0),
        batch_size=20,
        epochs=100,
        histogram_every=250,
    ),
    Case(
        name="underfitting",
        fault="far too little capacity: a hidden layer of one unit (64-1-10); train and validation accuracy "
        "stall together below 30%",
        expect=("underfitting",),
        model=mlp_one_unit,
    ),
    Case(
        name="loss_plateau",
        fault="loss stalls early at a high value: a sigmoid MLP with plain SGD (lr 0.01, no momentum) sits "
        "on its initial plateau at ln 10 = 2.30 for all 10 epochs",
        expect=("loss_plateau",),
        model=mlp_sigmoid,
        optim=OptimSpec(lr=0.01, momentum=0.0),
    ),
    Case(
        name="dead_relu",
        fault="dead ReLUs: hidden biases initialized to -1 in an MLP that calls F.relu in forward; nearly "
        "all units of the second hidden layer output zero for every example, and the loss stays at ln 10 "
        "for six epochs",
        expect=("dead_relu",),
        model=mlp_negative_bias,
    ),
    Case(
        name="vanishing_gradients",
        fault="vanishing gradients: six sigmoid hidden layers (64 units each); the first layer's gradient is "
        "about 1e-5 of the last layer's and the network does not learn",
        expect=("vanishing_gradients",),
        model=deep_sigmoid,
        optim=OptimSpec(lr=0.1),
    ),
    Case(
        name="exploding_gradients",
        fault="exploding gradients: six ReLU layers without normalization, SGD lr 0.1 with momentum 0.9 and "
        "no gradient clipping; after learning for a few epochs the gradient norm spikes by three orders of "
        "magnitude, the loss jumps to hundreds and the network never recovers",
        expect=("exploding_gradients",),
        model=deep_relu,
        optim=OptimSpec(lr=0.1, weight_decay=0.0),
    ),
    Case(
        name="saturated_activations",
        fault="saturated tanh units: weights initialized from N(0, 1) regardless of fan-in (8-11x Xavier), "
        "so most tanh outputs sit at +-1 where the gradient is ~0",
        expect=("bad_initialization", "saturated_activations"),
        model=tanh_unit_normal_init,
    ),
    Case(
        name="zero_init",
        fault="zero initialization: every weight and bias of a sigmoid MLP set to 0; all units of a layer "
        "compute the same value and get the same gradient, so they never differ (after 10 epochs the 128 "
        "first-layer units still have identical weights) and the loss stays near ln 10",
        expect=("bad_initialization",),
        model=sigmoid_zero_init,
    ),
    Case(
        name="bad_init_scale",
        fault="badly scaled initialization: W = 0.01 * randn in a six-layer ReLU MLP (18x below He); the "
        "signal shrinks layer by layer, the output is nearly constant and the loss never leaves ln 10",
        expect=("bad_initialization",),
        model=deep_relu_tiny_init,
    ),
    Case(
        name="unnormalized_inputs",
        fault="unnormalized inputs: the digits' raw 0-16 pixel values (mean 4.9, std 6.0) fed to the "
        "healthy MLP and optimizer; the first steps' gradients are ~7x the healthy run's, 90% of the first "
        "layer's units die and validation accuracy bounces between 60% and 86%",
        expect=("unnormalized_inputs",),
        model=mlp_relu,
        data=DataSpec(scaling="raw"),
    ),
    Case(
        name="unnormalized_inputs_tanh",
        fault="unnormalized inputs saturate a tanh network: the digits' raw 0-16 pixel values (mean 4.9, std "
        "6.0) fed to a tanh MLP with the healthy run's optimizer; the first layer's pre-activations are "
        "tens of times too large and most of its outputs sit at +-1",
        expect=("unnormalized_inputs", "saturated_activations"),
        model=mlp_tanh,
        data=DataSpec(scaling="raw"),
    ),
    Case(
        name="unshuffled_data",
        fault="unshuffled data: the training set sorted by class and never shuffled, so each batch holds "
        "one or two digits; the model chases the current class and forgets the others",
        expect=("unshuffled_data",),
        model=mlp_relu,
        data=DataSpec(sorted_by_class=True),
    ),
    Case(
        name="weight_growth",
        fault="unbounded weight growth: no weight decay, SGD lr 0.1 with momentum 0.9 for 20 epochs; weight "
        "norms grow 8-13x and are still growing when training turns unstable (with weight_decay=5e-4 the "
        "same run stays at 98% validation accuracy)",
        expect=("weight_growth",),
        model=mlp_relu,
        optim=OptimSpec(lr=0.1, weight_decay=0.0),
        epochs=20,
        every=15,
        histogram_every=300,
    ),
    Case(
        name="gradients_never_zeroed",
        fault="gradients never zeroed: the healthy MLP and optimizer with optimizer.zero_grad() left out, so "
        "every step's gradient is added to all before it; the gradient norm rises at every one of the first "
        "48 steps (0.55 at step 0, 26 at step 20, 267 at step 48, where the healthy run's first steps stay "
        "at 0.55-0.66), the loss passes 10 at step 20 and reaches the hundreds, every unit of the second "
        "hidden layer dies, and the accumulated gradient, frozen at 267 from then on, drives the weights "
        "8,800x up; accuracy at chance",
        expect=("gradients_not_zeroed",),
        model=mlp_relu,
        zero_grad=False,
    ),
    Case(
        name="nothing_training",
        fault="nothing trains: torch.nn.utils.clip_grad_norm_(model.parameters(), 0.0) before every step "
        '(meant as "no clipping") with the healthy MLP and optimizer scales every gradient by 0; the only '
        "update left is SGD's weight decay (||dw||/||w|| = 2.5e-4 at every step, where the healthy run's "
        "reach 0.05), and the loss stays at ln 10 = 2.31 from the first step to the last, accuracy at 6%, "
        "while the gradients before clipping (given to the collector as grad_norm, as its docs ask) are "
        "0.5-0.8",
        expect=("nothing_training",),
        model=mlp_relu,
        clip_grad_norm=0.0,
    ),
    Case(
        name="relu_on_logits",
        fault="ReLU on the logits: the healthy MLP with an nn.ReLU() after its output layer, fed to "
        "F.cross_entropy; no logit can go below 0, 4 of the 10 output units die (zero for every example), "
        "their digits can only win ties, and validation accuracy stalls at 58% (the healthy run: 98%)",
        expect=("activation_on_logits",),
        model=mlp_relu_on_logits,
    ),
    Case(
        name="lm_targets_not_shifted",
        fault="language-model targets not shifted: the healthy GPT run with targets equal to the inputs (y = "
        "x, not the next characters), in training and validation batches alike; causal attention sees the "
        "current character, so the model only has to copy it: validation loss 0.088 after the first epoch "
        "(43 steps), train and validation loss 0.001 and accuracy 100% at the end (the shifted twin: 0.61 "
        "and 78%)",
        expect=("too_good_to_be_true",),
        model=gpt_char,
        data=DataSpec(dataset="text", shift_targets=False),
        optim=OptimSpec("adamw", lr=3e-3, weight_decay=0.1, betas=(0.9, 0.99)),
        every=20,
        histogram_every=200,
        stats_every=4,
    ),
    Case(
        name="output_init_too_large",
        fault="output layer initialized far too large: the healthy MLP's last layer drawn from N(0, 3^2), "
        "~40x PyTorch's default std of 0.072; the first losses are 7.0, 13.8 and 10.1 where ln 10 = 2.30 is "
        "expected, the early gradients (up to 42; the healthy run's reach 4.3) kill 86% of the last hidden "
        "layer's ReLUs, and validation accuracy stays at 52-70% (the healthy run: 98%)",
        expect=(
            "bad_initialization",
            "initial_loss_off",
        ),  # the init is the fault; the loss off ln C shows it
        model=mlp_output_init_large,
    ),
    Case(
        name="loss_spikes",
        fault="loss spikes: the healthy MLP's run with the learning rate multiplied by 50 (0.05 to 2.5) for "
        "single steps, at steps 50, 100, 150 and 200, as a faulty schedule might set it (opt/lr records "
        "each); the loss after each jumps from its level of 0.1-0.5 to 12.8, 6.4, 3.4 and 1.3 nats, is back "
        "within about 10 steps, and training recovers: final train loss 0.0014 and validation accuracy 97.2% "
        "(the healthy run: 0.0028 and 97.8%)",
        expect=("loss_spikes",),
        model=mlp_relu,
        lr_pulse_steps=(50, 100, 150, 200),
        lr_pulse_factor=50.0,
    ),
)


def case_names() -> list[str]:
    return [case.name for case in CASES]


def get_case(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no sample case {name!r}; known: {', '.join(case_names())}")
