"""The sample runs, as a table: one small `Case` per run, each with the fault it injects.

A case is data (`DataSpec`), a model factory, optimizer settings (`OptimSpec`),
batch size and epochs, and the collector's sampling intervals (chosen per case so
that every rule has enough samples while the committed run stays small). `fault`
says in words what was done wrong; `expect` lists the rules that must fire on it at
warning or critical (empty for a healthy run, which must raise none at all), the
injected fault's rule first: the diagnosis must name it first, as the root cause of the
others. Both go into the run's ``case.json``.

Every number here was chosen by looking at the resulting curves (see
``python -m sample_runs.generate``, which prints them), not by tuning until a rule
fires: a case that does not really show its fault is a wrong case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch
from torch import nn

from sample_runs import models as M
from sample_runs.data import DataSpec, Split


@dataclass(frozen=True)
class OptimSpec:
    """A case's optimizer; the defaults are the healthy MLP's (SGD lr 0.05, momentum 0.9, weight decay 5e-4)."""

    kind: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4

    def build(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.kind == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def hparams(self) -> dict[str, Any]:
        out: dict[str, Any] = {"optimizer": self.kind, "lr": self.lr, "weight_decay": self.weight_decay}
        if self.kind == "sgd":
            out["momentum"] = self.momentum
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
    seed: int = 0
    stop_when_nonfinite: bool = True  # end training after the epoch whose loss went NaN/Inf

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
)


def case_names() -> list[str]:
    return [case.name for case in CASES]


def get_case(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no sample case {name!r}; known: {', '.join(case_names())}")
