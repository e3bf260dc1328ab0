"""Loss-curve rules: nonfinite, lr_too_high, lr_too_low, loss_plateau, noisy_batches.

Each table row builds a short hand-made run and states what the rule must say about
it: fire (severity, step, numbers in the message), stay quiet, or skip with a reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from rules_support import Fires, Quiet, Skips, check

from trainscope.analyzers.rules.common import make_run
from trainscope.analyzers.rules.loss_plateau import check as loss_plateau
from trainscope.analyzers.rules.lr_too_high import check as lr_too_high
from trainscope.analyzers.rules.lr_too_low import check as lr_too_low
from trainscope.analyzers.rules.noisy_batches import check as noisy_batches
from trainscope.analyzers.rules.nonfinite import check as nonfinite
from trainscope.analyzers.rules.synthetic import batch_losses, decay, noisy, steps
from trainscope.logformat import tags as T

N = 2000
S = steps(N)
LAYERS = ("features.0", "features.2", "classifier")


def run_of(loss, n=N, meta=None, **extra):
    """A run with `loss` as train/loss over steps 0..n-1 plus `extra` {tag: (steps, values)}."""
    scalars = {T.TRAIN_LOSS: (steps(n), loss)}
    scalars.update({tag.replace("__", "/"): v for tag, v in extra.items()})
    return make_run(scalars, meta)


def healthy(seed=0, batch=32, n=N, tau=None):
    return batch_losses(decay(n, tau=tau), batch, seed=seed)


def with_nans(values, at, kind=np.nan):
    out = values.copy()
    out[at] = kind
    return out


def ratios(value, every=50, n=N):
    """Update ratios of every layer, sampled every 50 steps."""
    s = steps(n // every, every)
    return {T.update_ratio_tag(name): (s, np.full(s.shape[0], value)) for name in LAYERS}


LIVE = {"status": "running"}  # a run still being written: "not enough data yet" is for these


def build(loss, scalars=None, meta=None):
    data = {T.TRAIN_LOSS: (steps(loss.shape[0]), loss)}
    data.update(scalars or {})
    return make_run(data, meta)


# --- nonfinite ---------------------------------------------------------------------------


def _skipped(at):
    flags = np.zeros(N)
    flags[at] = 1.0
    return {T.STEP_SKIPPED: (S, flags)}


NONFINITE_CASES = [
    pytest.param(
        build(with_nans(healthy(), slice(1200, None))),
        Fires(
            "critical", step=(1200, 1200), says=("train/loss became NaN at step 1,200", "still non-finite")
        ),
        id="loss-nan-to-the-end",
    ),
    pytest.param(
        build(
            with_nans(healthy(), slice(701, None)),  # the update took the Inf: every later loss is NaN
            {T.grad_norm_tag("features.2"): (S, with_nans(np.ones(N), [700], np.inf))},
        ),
        Fires("critical", step=(700, 700), layer="features.2", says=("grad/norm/features.2 became Inf",)),
        id="layer-grad-inf",
    ),
    pytest.param(
        build(
            healthy(),
            {
                T.GRAD_GLOBAL_NORM: (S, with_nans(np.ones(N), [100, 400, 900], np.inf)),
                **_skipped([100, 400, 900]),
            },
        ),
        Fires("info", step=(100, 100), says=("3 step(s) had inf/NaN gradients", "skipped")),
        id="amp-skipped-only-info",
    ),
    pytest.param(
        build(
            healthy(), {T.GRAD_GLOBAL_NORM: (S, with_nans(np.ones(N), [100, 500], np.inf)), **_skipped([100])}
        ),
        Fires("critical", step=(500, 500)),
        id="amp-skip-then-real-inf",
    ),
    pytest.param(build(healthy()), Quiet(), id="healthy"),
    pytest.param(make_run({}), Skips("needs train/loss or gradient norms"), id="missing"),
]


@pytest.mark.parametrize("run, expect", NONFINITE_CASES)
def test_nonfinite(run, expect):
    check(nonfinite, run, expect)


def test_nonfinite_points_at_the_gradient_spike_before_it():
    grad = np.ones(N)
    grad[995:1000] = 500.0
    run = build(
        with_nans(healthy(), slice(1000, None)), {T.GRAD_GLOBAL_NORM: (S, with_nans(grad, slice(1000, None)))}
    )
    (f,) = check(nonfinite, run, Fires("critical", step=(1000, 1000)))
    assert "500x its median of 1" in f.message


# --- lr_too_high -------------------------------------------------------------------------


def _diverging():
    trend = decay(N, tau=200, floor=0.3)
    trend[1200:] = 0.3 * np.exp(np.linspace(0, np.log(10), N - 1200))
    return noisy(trend, 0.1)


def _blow_up_then_dead():
    loss = noisy(np.full(N, 2.4), 0.02)
    loss[:5] = 2.3
    loss[8:14] = 80.0
    return loss


def _rising_with_grad():
    trend = decay(N, tau=200, floor=0.5)
    trend[1500:] = 0.5 * np.linspace(1, 1.6, N - 1500)
    grad = np.ones(N)
    grad[1500:] = np.linspace(1, 4, N - 1500)
    return noisy(trend, 0.05), {T.GRAD_GLOBAL_NORM: (S, noisy(grad, 0.1))}


def _jumping_without_progress():
    rng = np.random.default_rng(0)
    loss = 2.3 * np.repeat(rng.choice([0.6, 1.0, 1.7], N // 10), 10) * rng.lognormal(0, 0.05, N)
    loss[:20] = 2.3
    return loss


LR_HIGH_CASES = [
    pytest.param(
        build(_jumping_without_progress()),
        Fires("warning", step=(1000, 1000), says=("jumps by about 70% between neighbouring stretches",)),
        id="jumps-wildly-without-progress",
    ),
    pytest.param(
        build(_diverging()),
        Fires("critical", step=(1200, 1400), says=("climbed from its best 0.298", "10x its best")),
        id="diverging",
    ),
    pytest.param(
        build(_blow_up_then_dead()),
        Fires("critical", step=(8, 8), says=("blew up to 80", "never recovered: it is now 2.39")),
        id="blow-up-never-recovered",
    ),
    pytest.param(
        build(*_rising_with_grad()),
        Fires("warning", step=(1400, 1600), says=("the loss changed +", "gradient norm grew")),
        id="loss-and-grad-norm-rising",
    ),
    pytest.param(
        build(healthy(), {**ratios(0.3), T.LR: (S, np.full(N, 0.5))}),
        Fires("warning", says=("0.3 of their norm", "against a healthy ~0.001")),
        id="huge-update-ratios",
    ),
    pytest.param(build(healthy(seed=1)), Quiet(), id="healthy-batch-32"),
    pytest.param(build(healthy(seed=2, batch=4)), Quiet(), id="healthy-batch-4-noisy"),
    pytest.param(build(noisy(decay(N), 0.4, seed=3)), Quiet(), id="healthy-lognormal-noise"),
    pytest.param(build(healthy(), ratios(2e-3)), Quiet(), id="healthy-update-ratios"),
    pytest.param(
        build(healthy()[:30], meta=LIVE), Skips("not enough data yet: 30 of 50"), id="live-too-short"
    ),
    pytest.param(build(healthy()[:30]), Quiet(), id="ended-short-is-judged"),
    pytest.param(build(healthy()[:3]), Skips("3 of 4"), id="ended-truly-too-short"),
    pytest.param(
        build(with_nans(healthy(), slice(20, None)), meta=LIVE),
        Skips("NaN/Inf from step 20"),
        id="went-nan-early",
    ),
    pytest.param(make_run({}), Skips("needs train/loss"), id="missing"),
]


@pytest.mark.parametrize("run, expect", LR_HIGH_CASES)
def test_lr_too_high(run, expect):
    check(lr_too_high, run, expect)


def test_lr_too_high_suggests_a_learning_rate_from_the_update_ratio():
    run = build(healthy(), {**ratios(0.3), T.LR: (S, np.full(N, 0.5))})
    (f,) = lr_too_high(run)
    assert f.evidence["suggested_lr"] == pytest.approx(0.5 * 1e-3 / 0.3)
    assert "from 0.5 to about 0.00167" in f.advice[0] and "first guess" in f.advice[0]


# --- lr_too_low --------------------------------------------------------------------------


def _linear(drop=0.25, n=N, seed=0):
    return noisy(2.3 - drop * np.arange(n) / n, 0.01, seed)


LR_LOW_CASES = [
    pytest.param(
        build(_linear()),
        Fires("warning", step=(0, 0), says=("(2.3 -> 2.06)", "almost linearly")),
        id="slow-straight-line",
    ),
    pytest.param(
        build(_linear(0.05), {**ratios(2e-5), T.LR: (S, np.full(N, 1e-3))}),
        Fires("warning", says=("only 2e-5 of their norm",)),
        id="tiny-update-ratios",
    ),
    pytest.param(build(healthy()), Quiet(), id="healthy-decay"),
    pytest.param(build(healthy(tau=N / 3)), Quiet(), id="healthy-slower-decay"),
    pytest.param(build(_linear(), ratios(2e-3)), Quiet(), id="straight-but-healthy-updates"),
    pytest.param(
        build(
            healthy(),
            {
                T.LR: (S, 0.1 * (1 + np.cos(np.pi * S / N)) / 2),
                **{t: (s, 2e-3 * (1 + np.cos(np.pi * s / N)) / 2) for t, (s, _) in ratios(0).items()},
            },
        ),
        Quiet(),
        id="cosine-decay-tiny-ratios-at-the-end",
    ),
    pytest.param(
        build(_linear(), {T.LR: (S, np.linspace(1e-4, 0.1, N))}), Skips("still warming up"), id="warm-up"
    ),
    pytest.param(
        build(_linear(), {T.dead_fraction_tag("features.0"): (steps(40, 50), np.ones(40))}),
        Skips("dead"),
        id="dead-units-block-updates",
    ),
    pytest.param(
        build(_linear()[:60], meta=LIVE), Skips("not enough data yet: 60 of 100"), id="live-too-short"
    ),
    pytest.param(build(_linear()[:15]), Quiet(), id="ended-too-few-points-for-a-shape"),
]


@pytest.mark.parametrize("run, expect", LR_LOW_CASES)
def test_lr_too_low(run, expect):
    check(lr_too_low, run, expect)


def test_lr_too_low_suggests_at_most_ten_times_the_learning_rate():
    run = build(_linear(0.05), {**ratios(2e-5), T.LR: (S, np.full(N, 1e-3))})
    (f,) = lr_too_low(run)
    assert f.evidence["suggested_lr"] == pytest.approx(1e-2)
    assert "from 0.001 to about 0.01" in f.advice[0]


# --- loss_plateau ------------------------------------------------------------------------

M = 3000
SM = steps(M)


def _stuck(level=2.0):
    return noisy(np.full(M, level), 0.03)


def _late_flat(tau=350):
    return noisy(decay(M, tau=tau, floor=0.5), 0.02)


PLATEAU_CASES = [
    pytest.param(
        build(_stuck(), ratios(0.02, n=M), {"hparams": {"num_classes": 10}}),
        Fires(
            "warning",
            says=("has not come down", "stayed around 2 over 2,999 steps", "87% of the chance level ln 10"),
        ),
        id="never-learned",
    ),
    pytest.param(
        build(_stuck(), ratios(0.02, n=M), {"hparams": {"num_classes": 10}, "status": "running"}),
        Fires(
            "warning",
            step=(0, 100),
            says=("stayed at about 2 for", "100% of where it started", "87% of the chance level ln 10"),
        ),
        id="stuck-high-live",
    ),
    pytest.param(
        build(_late_flat(), {T.LR: (SM, np.full(M, 0.1))}),
        Fires("info", step=(1000, 2100), says=("flattened at about 0.5", "constant at 0.1")),
        id="late-plateau-constant-lr-info",
    ),
    pytest.param(
        build(_late_flat(), {T.LR: (SM, np.where(SM < 2500, 0.1, 0.01))}),
        Quiet(),
        id="late-plateau-lr-already-decayed",
    ),
    pytest.param(build(_late_flat()), Quiet(), id="late-plateau-lr-unknown"),
    pytest.param(
        build(_late_flat(tau=150)),
        Fires("warning", step=(400, 1000), says=("has not improved since", "of the run")),
        id="no-progress-for-most-of-the-run",
    ),
    pytest.param(
        build(_late_flat(tau=150), {T.LR: (SM, np.where(SM < 1200, 0.1, 0.001))}),
        Quiet(),
        id="most-of-the-run-flat-at-a-decayed-lr-is-the-schedule",
    ),
    pytest.param(
        build(_late_flat(tau=150), {T.VAL_LOSS: (steps(15, 200, start=199), np.linspace(1.0, 0.6, 15))}),
        Quiet(),
        id="most-of-the-run-flat-while-val-improves",
    ),
    pytest.param(build(_linear(n=M)), Quiet(), id="slow-straight-line-is-not-a-plateau"),
    pytest.param(build(_stuck(), ratios(1e-6, n=M)), Quiet(), id="tiny-updates-are-another-rules-case"),
    pytest.param(
        build(
            _stuck(),
            {**ratios(3e-4, n=M), T.LR: (SM, np.full(M, 0.01))},
            {"optimizer": {"type": "SGD", "param_groups": [{"lr": 0.01}]}},
        ),
        Fires("warning", says=("its updates are small (median update/weight ratio 3e-4)",)),
        id="stuck-high-with-small-updates",
    ),
    pytest.param(build(healthy(n=M)), Quiet(), id="healthy"),
    pytest.param(
        build(noisy(np.full(400, 2.0), 0.3), meta=LIVE),
        Skips("not enough data yet"),
        id="live-noisy-and-short-cannot-resolve-2pct",
    ),
    pytest.param(
        build(noisy(np.full(2000, 2.0), 0.3)),
        Fires("warning", says=("has not come down",)),
        id="ended-noisy-flat-never-learned",
    ),
    pytest.param(build(noisy(np.full(400, 2.0), 0.3)), Quiet(), id="ended-too-noisy-to-tell-10pct"),
    pytest.param(
        build(noisy(np.linspace(2.0, 1.5, 25), 0.08, seed=3)),
        Quiet(),
        id="ended-sparse-and-falling-25pct-learned",
    ),
    pytest.param(
        build(noisy(np.full(25, 950.0), 0.04, seed=4)),
        Fires("warning", says=("has not come down", "25 logged points")),
        id="ended-sparse-flat-never-learned",
    ),
    pytest.param(
        build(_stuck()[:150], meta=LIVE), Skips("not enough data yet: 150 of 200"), id="live-too-short"
    ),
]


@pytest.mark.parametrize("run, expect", PLATEAU_CASES)
def test_loss_plateau(run, expect):
    check(loss_plateau, run, expect)


# --- noisy_batches -----------------------------------------------------------------------


def _noise_scale(value, n=N):
    s = steps(n // 50, 50)
    return {T.GRAD_NOISE_SCALE: (s, np.full(s.shape[0], value))}


def small_batch(batch, seed=0):
    """A small-batch run that is still learning: a loss floor of 0.3 keeps mistakes in most batches."""
    return batch_losses(decay(N, floor=0.3), batch, seed=seed)


NOISY_CASES = [
    pytest.param(
        build(small_batch(2), meta={"batch_size": 2}),
        Fires("warning", step=(0, 0), says=("with 2 example(s) per batch (the notes recommend 16-128)",)),
        id="batch-2",
    ),
    pytest.param(build(small_batch(4, seed=1), meta={"batch_size": 4}), Fires("warning"), id="batch-4"),
    pytest.param(build(small_batch(8, seed=2), meta={"batch_size": 8}), Quiet(), id="batch-8"),
    pytest.param(build(healthy(batch=64), meta={"batch_size": 64}), Quiet(), id="batch-64"),
    pytest.param(
        build(noisy(decay(N, floor=1.5), 0.4), meta={"batch_size": 64}),
        Quiet(),
        id="wide-band-with-a-normal-batch-is-the-data",
    ),
    pytest.param(
        build(small_batch(2), _noise_scale(3), {"batch_size": 2}),
        Quiet(),
        id="noise-scale-below-2x-batch-vetoes",
    ),
    pytest.param(
        build(small_batch(2)),
        Fires("warning", says=("standard deviation", "does not log its batch size")),
        id="batch-size-unknown-batch-2",
    ),
    pytest.param(build(small_batch(4, seed=1)), Fires("warning"), id="batch-size-unknown-batch-4"),
    pytest.param(build(small_batch(8, seed=2)), Quiet(), id="batch-size-unknown-batch-8"),
    pytest.param(build(healthy(batch=32)), Quiet(), id="batch-size-unknown-batch-32"),
    pytest.param(
        build(noisy(decay(N // 10, floor=0.02), 0.05)),
        Quiet(),
        id="batch-size-unknown-averaged-log",
    ),
    pytest.param(
        # seed 1: a flat loss this noisy reads "fell 10%" on 8% of seeds (26% when the start was the
        # median of 20 points, which seed 0 passed by luck; see test_rules_robust's start-level section)
        build(noisy(np.full(N, 2.3), 0.5, seed=1), meta={"batch_size": 2}),
        Skips("has not fallen yet"),
        id="flat-loss",
    ),
    pytest.param(
        build(healthy()[:100], meta=LIVE), Skips("not enough data yet: 100 of 200"), id="live-too-short"
    ),
    pytest.param(build(healthy()[:15]), Skips("too short to judge"), id="ended-too-short"),
]


@pytest.mark.parametrize("run, expect", NOISY_CASES)
def test_noisy_batches(run, expect):
    check(noisy_batches, run, expect)


def test_noisy_batches_recommends_a_batch_from_the_noise_scale():
    run = build(small_batch(2), _noise_scale(100), {"batch_size": 2})
    (f,) = noisy_batches(run)
    assert "B_simple is about 100 (50x)" in f.message
    assert "from 2 to about 128" in f.advice[0]
    (f,) = noisy_batches(build(small_batch(2), meta={"batch_size": 2}))
    assert "from 2 to about 32" in f.advice[0]


def test_noisy_batches_counts_the_batch_of_a_step_over_every_data_parallel_rank():
    """run.json's batch size is one rank's; under DDP or FSDP a step averages every
    rank's. Tensor-parallel ranks share one batch (data_parallel_ranks 1); a run from
    before that key was written counts its world size."""
    losses = small_batch(2)
    (f,) = noisy_batches(build(losses, meta={"batch_size": 2, "world_size": 2, "data_parallel_ranks": 2}))
    assert "2 example(s) per batch on each of 2 ranks, 4 a step," in f.message
    assert f.title == "Loss is noisy from batch to batch (batch size 4)"
    assert "Increase the batch size of a step (all 2 ranks together) from 4 to about 32" in f.advice[0]
    assert (
        noisy_batches(build(losses, meta={"batch_size": 2, "world_size": 8, "data_parallel_ranks": 8})) == []
    )
    assert noisy_batches(build(losses, meta={"batch_size": 2, "world_size": 8})) == []  # an older run: DDP
    (f,) = noisy_batches(build(losses, meta={"batch_size": 2, "world_size": 8, "data_parallel_ranks": 1}))
    assert "with 2 example(s) per batch (the notes" in f.message  # tensor parallel: one batch
    # B_simple 6 is 3x one rank's batch but under 2x the step's 4: mostly signal, vetoed.
    assert noisy_batches(build(losses, _noise_scale(6), {"batch_size": 2, "data_parallel_ranks": 2})) == []
    assert len(noisy_batches(build(losses, _noise_scale(6), {"batch_size": 2}))) == 1


def test_unshuffled_batches_mute_the_loss_curve_rules():
    sampled = steps(N // 50, 50)
    run = build(
        _linear(),
        {
            T.LABEL_ENTROPY: (sampled, np.full(sampled.shape[0], 0.02)),
            T.LABEL_ENTROPY_SEEN: (sampled, np.full(sampled.shape[0], 0.99)),
        },
    )
    for rule in (lr_too_high, lr_too_low, loss_plateau, noisy_batches):
        check(rule, run, Skips("unshuffled"))


def test_plateau_with_small_updates_advises_raising_the_lr_and_cites_why():
    run = build(
        _stuck(),
        {**ratios(3e-4, n=M), T.LR: (SM, np.full(M, 0.01))},
        {"optimizer": {"type": "SGD", "param_groups": [{"lr": 0.01}]}},
    )
    [found] = loss_plateau(run)
    assert found.advice[0].startswith("Raise the learning rate") and "try 0.0333" in found.advice[0]
    assert "divide the learning rate" in found.advice[1]
    assert found.evidence["suggested_lr"] == pytest.approx(0.01 * 1e-3 / 3e-4)
    assert found.source.startswith('000 line 68: "如果loss曲线表现出线性')
    # the stuck-high run with healthy-sized updates keeps the "divide" advice
    [bouncing] = loss_plateau(build(_stuck(), ratios(0.02, n=M)))
    assert bouncing.advice[0].startswith("Divide the learning rate")


# --- nonfinite: a step AMP skipped in a log that does not record skips; the lr to lower ----------


def _fp16_fine_tune(n=70, inf_at=(33,), loss_nan_from=None, peak=2e-4):
    """A QLoRA-style chat fine-tune logged every step (Hugging Face trainer_state.json): lr warm-up to `peak`
    then linear decay, the loss falling from ~2.7 with batch noise, the gradient norm settling from ~3 to ~0.5;
    inf gradient norms at `inf_at` (fp16 overflow) and, optionally, a NaN loss from `loss_nan_from` on."""
    s = steps(n, 1, start=1)
    lr = np.minimum(np.arange(1, n + 1) / 8, 1.0) * peak * np.clip((n - np.arange(n)) / (n - 8), 0, 1)
    loss = noisy(decay(n, start=2.7, floor=0.25, tau=6), 0.2, seed=1)
    norm = noisy(0.5 + 3.0 * np.exp(-np.arange(n) / 8), 0.25, seed=2)
    norm[list(inf_at)] = np.inf
    if loss_nan_from is not None:
        loss[loss_nan_from:] = np.nan
        norm[loss_nan_from:] = np.nan
    return {T.TRAIN_LOSS: (s, loss), T.GRAD_GLOBAL_NORM: (s, norm), T.LR: (s, lr)}


def _collector_meta():
    """run.json of TrainScope's collector watching an optimizer: it records every skipped step."""
    return {"collector": {"every": 10}, "optimizer": {"type": "AdamW", "param_groups": [{"lr": 2e-4}]}}


NONFINITE_SKIP_CASES = [
    pytest.param(
        make_run(_fp16_fine_tune(), {"status": "finished"}),
        Fires(
            "info",
            step=(34, 34),
            says=("Inf on 1 logged step(s) (at step 34)", "the optimizer skipped the step"),
            evidence={"inferred": True, "skipped_steps": 1},
        ),
        id="one-inf-norm-then-finite-is-a-skipped-amp-step",
    ),
    pytest.param(
        make_run(_fp16_fine_tune(inf_at=(20, 21, 50)), {"hparams": {"fp16": True, "learning_rate": 2e-4}}),
        Fires("info", step=(21, 21), says=("the run trained in float16: its arguments set fp16=True",)),
        id="a-few-skips-with-fp16-in-the-arguments",
    ),
    pytest.param(
        make_run(_fp16_fine_tune(inf_at=(0, 1, 2, 3, 4, 5, 9))),
        Fires("info", step=(1, 1), says=("Inf on 7 logged step(s)", "the optimizer skipped the step")),
        id="opening-streak-while-the-scaler-finds-its-scale-then-one-more",
    ),
    pytest.param(
        make_run(_fp16_fine_tune(inf_at=(0, 1, 2, 3, 4, 5, 20, 30, 40, 50))),
        Fires("critical", step=(1, 1), says=("10 logged step(s) non-finite",)),
        id="opening-streak-then-repeated-inf-norms",
    ),
    pytest.param(
        make_run(_fp16_fine_tune(inf_at=(10, 18, 26, 34, 42, 50, 58))),
        Fires("critical", step=(11, 11), says=("grad/global_norm became Inf at step 11",)),
        id="repeated-inf-norms-stay-critical",
    ),
    pytest.param(
        make_run(_fp16_fine_tune(inf_at=(33,), loss_nan_from=34)),
        Fires("critical", step=(34, 34), says=("became Inf at step 34", "still non-finite")),
        id="inf-norm-then-nan-loss-was-taken",
    ),
    pytest.param(
        make_run(
            {**_fp16_fine_tune(), T.TRAIN_LOSS: (steps(70, 1, 1), with_nans(np.ones(70), slice(34, None)))}
        ),
        Fires("critical", step=(34, 34), says=("grad/global_norm became Inf at step 34",)),
        id="inf-norm-then-the-next-loss-nan",
    ),
    pytest.param(
        make_run(_fp16_fine_tune(inf_at=(69,))),
        Fires("critical", step=(70, 70)),
        id="inf-norm-at-the-last-logged-step",
    ),
    pytest.param(
        make_run(
            {**_fp16_fine_tune(inf_at=()), T.TRAIN_LOSS: (steps(70, 1, 1), with_nans(np.ones(70), [33]))}
        ),
        Fires("critical", step=(34, 34), says=("train/loss became NaN at step 34",)),
        id="one-nan-loss-stays-critical",
    ),
    pytest.param(
        make_run(_fp16_fine_tune(), _collector_meta()),
        Fires("critical", step=(34, 34)),
        id="collector-says-every-step-ran",
    ),
]


@pytest.mark.parametrize("run, expect", NONFINITE_SKIP_CASES)
def test_nonfinite_skipped_steps(run, expect):
    check(nonfinite, run, expect)


def test_nonfinite_advises_lowering_the_peak_learning_rate_not_the_decayed_one():
    [found] = nonfinite(make_run(_fp16_fine_tune(inf_at=(33,), loss_nan_from=34)))
    assert found.advice[0] == "Lower the peak learning rate: from 2e-4 to about 2e-5.", found.advice[0]


def _amp_digits(digits, lr=0.05, amp=True, init_scale=2.0**24, collector_dir=None, n=70, naive_log=False):
    """A real MLP on the digits under float16 autocast and a GradScaler whose initial scale is too large,
    so its first steps overflow and are skipped, as in a real fp16 run; returns HF Trainer log_history
    entries (loss, the norm clip_grad_norm_ returns after unscale_, lr) for every step. `naive_log`: the
    loss as log(softmax), without log-sum-exp, which a high lr drives to log(0)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from collector_helpers import mlp

    from trainscope.collectors import watch

    X, y = digits
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, enabled=amp)
    collector = watch(model, opt, collector_dir, scaler=scaler) if collector_dir else None
    history = []
    for step in range(1, n + 1):
        idx = torch.arange(step * 32, step * 32 + 32) % len(X)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
            out = model(X[idx]).float()
            loss = (
                -torch.log(torch.softmax(out, 1)[torch.arange(32), y[idx]]).mean()
                if naive_log
                else F.cross_entropy(out, y[idx])
            )
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
        scaler.step(opt)
        scaler.update()
        if collector:
            collector.step(loss=loss)
        history.append({"step": step, "loss": loss.item(), "grad_norm": norm.item(), "learning_rate": lr})
    if collector:
        collector.close()
    return history


def _trainer_state(tmp_path, history, name):
    """`history` as the Trainer writes trainer_state.json (json.dumps: inf as Infinity), read back."""
    from trainscope.analyzers.reading import read_logdir

    run_dir = tmp_path / name
    run_dir.mkdir()
    ended = {"step": history[-1]["step"], "train_loss": 1.0, "train_runtime": 1.0}
    doc = {
        "global_step": history[-1]["step"],
        "max_steps": history[-1]["step"],
        "log_history": history + [ended],
    }
    (run_dir / "trainer_state.json").write_text(json.dumps(doc))
    (run,) = read_logdir(run_dir).runs.values()
    return run


def test_nonfinite_on_a_real_fp16_run_with_grad_scaler_skips(tmp_path, digits):
    history = _amp_digits(digits, collector_dir=tmp_path / "collector")
    skipped = [h["step"] for h in history if not np.isfinite(h["grad_norm"])]
    assert skipped and skipped[0] == 1 and all(np.isfinite(h["loss"]) for h in history)
    # The Trainer's log: no record of skips, so the curves tell.
    [found] = nonfinite(_trainer_state(tmp_path, history, "hf"))
    assert found.severity == "info" and found.evidence["inferred"] is True, found.message
    assert found.evidence["skipped_steps"] == len(skipped)
    # TrainScope's collector on the same training records the skips itself.
    from trainscope.analyzers.reading import read_logdir

    (collected,) = read_logdir(tmp_path / "collector").runs.values()
    [found] = nonfinite(collected)
    assert found.severity == "info" and found.evidence["inferred"] is False, found.message


def test_nonfinite_on_a_real_divergence_stays_critical(tmp_path, digits):
    history = _amp_digits(digits, lr=10.0, amp=False, naive_log=True)
    assert not np.isfinite(history[-1]["loss"])
    [found] = nonfinite(_trainer_state(tmp_path, history, "hf"))
    assert found.severity == "critical" and "still non-finite" in found.message, found.message


# --- loss_plateau: fine-tunes and the window's wording ---------------------------------------


def _fine_tune(n=430, every=500, seed=0, lr=None, val=None):
    """A pretrained model's fine-tune, logged every 500 steps: the first point is the mean over the
    first steps (2.0), the loss then sits near its floor and falls 7% more as the lr is spent (its
    pace follows a linear decay 5e-5 -> 0), flat in the last 30% where the lr is < 30% of its peak."""
    t = np.arange(n) / (n - 1)
    spent = 2 * t - t**2  # share of the linear schedule's lr spent by t
    trend = 1.75 + 0.14 * (1 - spent)
    trend[0] = 2.0
    s = steps(n, every, start=every)
    scalars = {T.LR: (s, 5e-5 * (1 - t) if lr is None else np.full(n, lr))}
    if val is not None:
        scalars[T.VAL_LOSS] = (s[::43], val)
    return make_run({T.TRAIN_LOSS: (s, noisy(trend, 0.008, seed=seed)), **scalars})


def _stuck_after_drop(n=500, every=50, seed=0):
    """A loss that drops once (0.346 -> 0.312) and creeps to 0.3085 with tiny jitter, at an lr
    decayed linearly to 0: stuck at 89% of its start, the peak lr moved it no more than the end."""
    trend = 0.3085 + 0.0035 * np.exp(-np.arange(n) / (n / 4))
    trend[0] = 0.346
    s = steps(n, every, start=every - 1)
    return make_run({T.TRAIN_LOSS: (s, noisy(trend, 0.0007, seed=seed)), T.LR: (s, 1e-3 * (1 - s / s[-1]))})


def _lora_rise(n=48, every=5, seed=1):
    """A LoRA fine-tune at a constant 5e-4, logged every 5 steps: 2.1 -> 0.04 within 30 steps, then a
    noisy creep up to 0.07 over the last 14 points (multiplicative scatter of 30%)."""
    trend = decay(n, start=2.1, floor=0.04, tau=3.0)
    trend[-14:] = np.linspace(0.04, 0.07, 14)
    s = steps(n, every, start=every)
    return make_run({T.TRAIN_LOSS: (s, noisy(trend, 0.3, seed=seed)), T.LR: (s, np.full(n, 5e-4))})


PLATEAU_FINE_TUNE_CASES = [
    *(
        pytest.param(_fine_tune(seed=seed), Quiet(), id=f"fine-tune-falls-until-the-lr-decays-seed{seed}")
        for seed in range(3)
    ),
    pytest.param(
        _fine_tune(lr=5e-5, val=np.linspace(1.70, 1.62, 10)),
        Quiet(),
        id="fine-tune-falling-until-the-window-at-constant-lr-val-improving",
    ),
    pytest.param(
        _stuck_after_drop(),
        Fires(
            "warning",
            step=(0, 2000),
            says=("stayed at about 0.309 for the last", "89% of where it started", "decayed to 0"),
            evidence={"kind": "stuck_high"},
        ),
        id="stuck-after-a-first-drop-at-a-decayed-lr-still-fires",
    ),
    pytest.param(
        _lora_rise(),
        Fires(
            "info",
            says=(
                "has stopped falling at about",
                "rose 43% across the last 30% of the run, within the scatter",
            ),
            evidence={"kind": "late"},
        ),
        id="late-rise-within-the-scatter-says-rose",
    ),
]


@pytest.mark.parametrize("run, expect", PLATEAU_FINE_TUNE_CASES)
def test_loss_plateau_fine_tunes(run, expect):
    check(loss_plateau, run, expect)


def test_plateau_rise_is_not_called_flattened():
    [found] = loss_plateau(_lora_rise())
    assert found.title == "Loss has stopped falling at a constant learning rate: time for a decay"
    assert "flattened" not in found.message


# --- loss_plateau: "never learned" only where the log holds the untrained start ---------------


def _late_lightning_log(classes=7, seed=0, val_acc=0.574):
    """A Lightning CSVLogger run (log_every_n_steps=50: the first point at step 49, 48 in all) of a
    small tabular classifier short of inputs: its loss fell from ln C before step 49 and holds
    0.865 after a last 4% within the first epoch (2% batch scatter); a validation every 341 steps,
    its accuracy flat at `val_acc`."""
    n = 48
    trend = 0.865 + 0.04 * np.exp(-np.arange(n) / 3)
    s = steps(n, 50, start=49)
    val_steps = steps(7, 341, start=340)
    rng = np.random.default_rng(seed + 1)
    scalars = {
        T.TRAIN_LOSS: (s, noisy(trend, 0.02, seed=seed)),
        T.VAL_ACC: (val_steps, val_acc + rng.normal(0, 0.001, 7)),
    }
    return make_run(scalars, {"hparams": {"num_classes": classes}} if classes else None)


def _per_epoch_means(n=15, seed=0):
    """A Keras CSVLogger's loss, one mean per epoch (steps count epochs): the first epoch's mean
    0.94 holds the fall within it, later epochs sit at 0.87."""
    from dataclasses import replace

    trend = np.full(n, 0.87)
    trend[0] = 0.94
    run = make_run({T.TRAIN_LOSS: (steps(n), noisy(trend, 0.004, seed=seed))})
    return replace(run, epoch_axis=frozenset({T.TRAIN_LOSS}))


def _at_chance_from_step(first, n=250, every=3, level=1.386, classes=4, seed=0):
    """A 4-class model that never leaves chance: its per-epoch loss at ln 4 from the first log."""
    s = steps(n, every, start=first)
    return make_run(
        {T.TRAIN_LOSS: (s, noisy(np.full(n, level), 0.01, seed=seed))}, {"hparams": {"num_classes": classes}}
    )


def _small_steady_fine_tune(n=300, every=50, seed=0):
    """A pretrained model's fine-tune logged every 50 steps (first point at step 50, already near
    its floor): the loss falls 9% in all, at a pace that follows a linear lr decay to 0 and
    slows as it nears the floor (1.90 -> 1.73), with 0.6% scatter."""
    t = np.arange(n) / (n - 1)
    spent = 2 * t - t**2  # share of the linear schedule's lr spent by t
    trend = 1.6 + 0.3 * np.exp(-0.84 * spent)
    s = steps(n, every, start=every)
    return make_run({T.TRAIN_LOSS: (s, noisy(trend, 0.006, seed=seed)), T.LR: (s, 5e-5 * (1 - t))})


def _fell_little_and_stopped(n=300, seed=0):
    """Logged from step 0: the loss falls 5% over the first 45% of the run, then stays flat while
    the lr decays linearly: it stopped with the lr still high, no fine-tune's slow creep."""
    t = np.arange(n) / (n - 1)
    trend = 2.0 * (1 - 0.05 * np.clip(t / 0.45, 0, 1))
    s = steps(n, 10)
    return make_run({T.TRAIN_LOSS: (s, noisy(trend, 0.01, seed=seed)), T.LR: (s, 1e-3 * (1 - t))})


NEVER_LEARNED_START_CASES = [
    *(
        pytest.param(
            _late_lightning_log(seed=seed),
            Fires(
                "warning",
                step=(49, 49),
                says=(
                    "The train loss has stayed around",
                    "The log starts after the initial loss (its first point is at step 49)",
                    "the validation accuracy ends at 5",
                    "above chance (1/7 = 14%): the model learned early",
                ),
                evidence={"kind": "early_plateau", "accuracy_of": "validation"},
            ),
            id=f"late-log-accuracy-above-chance-is-an-early-plateau-seed{seed}",
        )
        for seed in range(3)
    ),
    pytest.param(
        _late_lightning_log(classes=None),
        Fires(
            "warning",
            says=("after the initial loss", "the number of classes is unknown: compare it with chance"),
            evidence={"kind": "early_plateau"},
        ),
        id="late-log-classes-unknown-is-an-early-plateau",
    ),
    pytest.param(
        _per_epoch_means(),
        Fires(
            "warning",
            says=("its first point is the mean over the first epoch",),
            evidence={"kind": "early_plateau"},
        ),
        id="per-epoch-means-are-no-initial-loss",
    ),
    pytest.param(
        _at_chance_from_step(2),
        Fires(
            "warning",
            step=(2, 2),
            says=("has not come down", "of the chance level ln 4"),
            evidence={"kind": "never_learned"},
        ),
        id="guard-logged-from-the-start-at-ln-c-never-learned",
    ),
    pytest.param(
        _at_chance_from_step(49),
        Fires("warning", evidence={"kind": "never_learned"}),
        id="guard-late-log-still-at-ln-c-never-learned",
    ),
    pytest.param(
        _late_lightning_log(classes=7, val_acc=0.15),
        Fires("warning", evidence={"kind": "never_learned"}),
        id="guard-late-log-accuracy-at-chance-never-learned",
    ),
    pytest.param(
        _fell_little_and_stopped(),
        Fires("warning", evidence={"kind": "never_learned"}),
        id="guard-fell-little-and-stopped-never-learned",
    ),
    *(
        pytest.param(
            _small_steady_fine_tune(seed=seed), Quiet(), id=f"fine-tune-falling-9pct-steadily-seed{seed}"
        )
        for seed in range(3)
    ),
]


@pytest.mark.parametrize("run, expect", NEVER_LEARNED_START_CASES)
def test_never_learned_needs_the_untrained_start(run, expect):
    check(loss_plateau, run, expect)


def test_early_plateau_advises_inputs_and_capacity_not_a_bug_hunt():
    [known] = loss_plateau(_late_lightning_log())
    assert known.advice[0].startswith("The loss stopped where this model gets on these inputs")
    assert not any("overfit a single batch" in line for line in known.advice)
    # with the number of classes unknown, the accuracy cannot be placed: the bug hunt is the last resort
    [unknown] = loss_plateau(_late_lightning_log(classes=None))
    assert unknown.advice[-1].startswith("If the accuracy is at chance")


def test_never_learned_says_what_shows_the_start_untrained():
    """The guards above, each with the evidence that lets its start stand for the untrained model's."""
    [initial] = loss_plateau(_at_chance_from_step(2))
    [at_ln_c] = loss_plateau(_at_chance_from_step(49))
    [at_chance] = loss_plateau(_late_lightning_log(classes=7, val_acc=0.15))
    assert [f.evidence["shown_by"] for f in (initial, at_ln_c, at_chance)] == [
        "initial",
        "chance_loss",
        "chance_accuracy",
    ]
    assert "the validation accuracy ends at 15%, at chance (1/7 = 14%)" in at_chance.message


# --- initial_loss_off: the start is judged before a blow-up takes over ----------------------------

C10 = {"hparams": {"num_classes": 10}}


def _starts_then_blows_up(start=2.3, onset=3, seed=0):
    """A noisy start at `start`, a geometric blow-up from step `onset` (lr far too high,
    as with reduction='sum' under a mean's lr), then a dead network sitting near chance."""
    opening = noisy(np.full(onset, start), 0.05, seed=seed)
    blow_up = np.geomspace(2.5 * start, 150 * start, 7)
    return np.concatenate((opening, blow_up, noisy(np.full(N - onset - 7, 2.4), 0.05, seed=seed)))


INITIAL_AFTER_BLOW_UP_CASES = [
    *(
        pytest.param(
            run_of(_starts_then_blows_up(onset=onset), meta=C10), Quiet(), id=f"at-chance-blows-up-at-{onset}"
        )
        for onset in (1, 2, 3, 5)
    ),
    pytest.param(
        run_of(_starts_then_blows_up(start=14.0), meta=C10),
        Fires("warning", step=(0, 0), says=("median of 14", "against ln 10 = 2.3")),
        id="starts-6x-above-chance-then-blows-up",
    ),
    pytest.param(
        run_of(np.concatenate(([14.0, 12.0, 11.0, 40.0], decay(N - 4, start=6.0))), meta=C10),
        Fires("warning", says=("first 3 losses",)),
        id="starts-6x-above-chance-with-an-early-spike",
    ),
]


@pytest.mark.parametrize("run, expect", INITIAL_AFTER_BLOW_UP_CASES)
def test_initial_loss_is_judged_before_the_loss_blows_up(run, expect):
    from trainscope.analyzers.rules.initial_loss_off import check as initial_loss_off

    check(initial_loss_off, run, expect)


def test_sum_reduction_lr_on_digits_blows_up_from_chance(tmp_path, digits):
    """reduction='sum' over a batch of 64 is the mean's gradient x 64: lr 0.05 x 64. The first loss
    is ln 10; the updates blow it up within a few steps: lr_too_high, not the initialization."""
    from collector_helpers import mlp, train

    from trainscope.analyzers.diagnose import diagnose_run
    from trainscope.analyzers.reading import read_logdir
    from trainscope.analyzers.rules.initial_loss_off import check as initial_loss_off
    from trainscope.collectors import watch

    X, y = digits
    train(mlp(), X, y, steps=200, lr=0.05 * 64, collector=lambda m, o: watch(m, o, tmp_path))
    run = read_logdir(tmp_path).runs["."]
    assert list(initial_loss_off(run)) == []
    assert "lr_too_high" in {f.rule for f in diagnose_run(run).findings if f.severity != "info"}
