"""Realistic synthetic training signals, for the rules' tests, the benchmark and demos.

A healthy classification run is not a clean exponential: each step's loss is the mean
over a batch of per-example losses, most of them small and a few large (the examples
the model still gets wrong). `batch_losses` draws exactly that, so "healthy" test
curves carry the heavy-tailed minibatch noise of real runs and a rule that is quiet
on them is quiet for the right reason.
"""

from __future__ import annotations

import math

import numpy as np


def decay(n: int, start: float = 2.3, floor: float = 0.05, tau: float | None = None) -> np.ndarray:
    """An exponentially decaying trend from `start` to `floor` with time constant `tau` (n/6 by default)."""
    tau = tau if tau is not None else n / 6
    return floor + (start - floor) * np.exp(-np.arange(n) / tau)


def noisy(trend: np.ndarray, sigma: float = 0.15, seed: int = 0) -> np.ndarray:
    """`trend` times log-normal noise of `sigma` (multiplicative: the noise shrinks with the loss)."""
    rng = np.random.default_rng(seed)
    return trend * rng.lognormal(0.0, sigma, trend.shape[0])


def batch_losses(trend: np.ndarray, batch: int, seed: int = 0, classes: int = 10) -> np.ndarray:
    """Per-step mean cross-entropy of `batch` examples whose expected loss follows `trend`.

    Each example is wrong with a probability that makes the mean match `trend`; a
    wrong example costs ~Exp(ln C), a right one ~Exp(trend/20). Small batches then give
    the wide, heavy-tailed band of real small-batch runs.
    """
    rng = np.random.default_rng(seed)
    big = math.log(classes)
    small = trend / 20
    p_wrong = np.clip((trend - small) / (big - small), 0.0, 1.0)
    wrong = rng.random((trend.shape[0], batch)) < p_wrong[:, None]
    losses = np.where(
        wrong,
        rng.exponential(big, (trend.shape[0], batch)),
        rng.exponential(1.0, (trend.shape[0], batch)) * small[:, None],
    )
    return losses.mean(axis=1)


def steps(n: int, every: int = 1, start: int = 0) -> np.ndarray:
    """Steps 0, every, 2*every, ... (n of them)."""
    return start + every * np.arange(n, dtype=np.int64)


SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")


def lr_schedule(n: int, kind: str = "constant", base: float = 0.1) -> np.ndarray:
    """A learning rate per step: constant, step decay (/10 at 50% and 75%), cosine, or warm-up + cosine."""
    t = np.arange(n) / max(n - 1, 1)
    if kind == "constant":
        return np.full(n, base)
    if kind == "step":
        return base * np.where(t < 0.5, 1.0, np.where(t < 0.75, 0.1, 0.01))
    if kind == "cosine":
        return base * 0.5 * (1 + np.cos(np.pi * t))
    if kind == "warmup_cosine":
        warm = 0.05
        return base * np.where(t < warm, t / warm, 0.5 * (1 + np.cos(np.pi * (t - warm) / (1 - warm))))
    raise ValueError(kind)


def healthy_run(
    n: int = 3000,
    batch: int = 64,
    tau: float | None = None,
    schedule: str = "constant",
    seed: int = 0,
    n_layers: int = 4,
    every: int = 50,
    val_every: int | None = None,
    per_example: bool = True,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """Scalars and run.json-like meta of a healthy classification run with every canonical tag.

    The loss decays with minibatch noise (`batch_losses`, or log-normal noise when
    `per_example` is False, for long runs); gradient norms, update ratios and weight
    norms follow the learning-rate schedule; validation tracks training with a small
    gap. Tests inject one fault at a time into these signals.
    """
    from trainscope.logformat import tags as T  # local: this module is otherwise numpy only

    rng = np.random.default_rng(seed)
    s = steps(n)
    lr = lr_schedule(n, schedule)
    trend = decay(n, tau=tau)
    loss = batch_losses(trend, batch, seed=seed) if per_example else noisy(trend, 0.15, seed)
    layers = [f"features.{2 * i}" for i in range(n_layers - 1)] + ["classifier"]
    lr_share = lr / lr.max()
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = {
        T.TRAIN_LOSS: (s, loss),
        T.TRAIN_ACC: (s, np.clip(1.0 - trend / 2.4 + rng.normal(0, 0.5 / math.sqrt(batch), n), 0, 1)),
        T.LR: (s, lr),
        T.GRAD_GLOBAL_NORM: (s, (0.5 + trend) * rng.lognormal(0.0, 0.25, n)),
        T.STEP_SKIPPED: (s, np.zeros(n)),
        T.STEP_SECONDS: (s, 0.02 * rng.lognormal(0.0, 0.1, n)),
    }
    sampled = s[::every]
    m = sampled.shape[0]
    for i, name in enumerate(layers):
        scalars[T.grad_norm_tag(name)] = (s, (0.1 + 0.05 * i) * (0.5 + trend) * rng.lognormal(0.0, 0.3, n))
        ratio = 2e-3 * lr_share[::every] * rng.lognormal(0.0, 0.3, m)
        scalars[T.update_ratio_tag(name)] = (sampled, ratio)
        scalars[T.weight_norm_tag(name)] = (sampled, (4.0 + i) * (1 + 0.3 * (1 - np.exp(-sampled / (n / 3)))))
        if name != "classifier":
            scalars[T.dead_fraction_tag(name)] = (sampled, np.clip(rng.normal(0.15, 0.05, m), 0, 1))
            scalars[T.saturated_fraction_tag(name)] = (sampled, np.clip(rng.normal(0.03, 0.01, m), 0, 1))
    scalars[T.INPUT_MEAN] = (sampled, rng.normal(0.0, 0.05, m))
    scalars[T.INPUT_STD] = (sampled, rng.normal(1.0, 0.05, m))
    scalars[T.LABEL_ENTROPY] = (sampled, np.clip(rng.normal(0.96, 0.02, m), 0, 1))
    scalars[T.LABEL_ENTROPY_SEEN] = (sampled, np.minimum(1.0, 0.9 + 0.1 * sampled / n))
    scalars[T.GRAD_NOISE_SCALE] = (sampled, 3.0 * batch * rng.lognormal(0.0, 0.5, m))
    val_every = val_every or max(n // 12, 1)
    val_steps = s[val_every - 1 :: val_every]
    val_trend = decay(n, tau=tau)[val_steps] * 1.1 + 0.02
    scalars[T.VAL_LOSS] = (val_steps, val_trend * rng.lognormal(0.0, 0.02, val_steps.shape[0]))
    scalars[T.VAL_ACC] = (val_steps, np.clip(1.0 - val_trend / 2.4, 0, 1))
    meta = {
        "status": "finished",
        "batch_size": batch,
        "hparams": {"num_classes": 10, "lr": float(lr.max())},
        "optimizer": {
            "type": "SGD",
            "param_groups": [{"lr": float(lr[-1]), "momentum": 0.9, "weight_decay": 0.0}],
        },
        "model": {
            "class": "Net",
            "layers": [
                {"name": name, "type": "Linear", "parameters": 1000, "trainable": True} for name in layers
            ],
            "activations": {"relu": layers[:-1]},
        },
        "init_check": [
            {
                "layer": name,
                "param": "weight",
                "type": "Linear",
                "shape": [128, 128],
                "fan_in": 128,
                "std": 1 / math.sqrt(3 * 128),
                "mean": 0.0,
                "constant": False,
                "activation": "relu",
                "expected": "he",
                "expected_std": math.sqrt(2 / 128),
                "ratio": 1 / math.sqrt(6),
            }
            for name in layers
        ],
        "collector": {"every": every},
    }
    return scalars, meta
