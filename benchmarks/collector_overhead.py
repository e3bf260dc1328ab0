"""Cost of the collector per training step, measured in one interleaved run.

Copies of each model train on synthetic data in alternating blocks of `--block` steps,
in a rotating order, in two parts: plain against `watch()` at default settings, then
plain against the naive reference (TensorBoard's `SummaryWriter.add_histogram` of every
parameter each step), so that the reference's garbage and writer thread never run in
the collector's blocks. Within a part, each way of logging (or none) moves to the next
copy of the model at every phase, so that each copy carries each of them for the same
number of rounds: copies of one model differ by 1-2% in speed, the same copy in every
round (where their memory happened to land), and a role held by one copy all run
carried that difference. Each phase attaches a fresh collector past the first 200
steps (`start_step`), whose statistics on every step are a one-off, and starts with
`--warmup-blocks` unmeasured blocks.

A block of 50 steps holds exactly one of the collector's sampled steps, so a block's
mean step time carries the sampled work at its real rate; a block ends once what its
arm handed to its writer thread is on disk, so background writing is charged to the
arm that caused it, never to the one that runs next. It does not flush what is
pending: the collector flushes every 100 steps, and a flush forced at the end of
every 50-step block would cost it twice its flushes. Printed: the median over blocks
of the mean step time; the median over rounds of each block's ratio to the plain
blocks of the same round (all work, the sampled steps included), with a 95% bootstrap
interval over the rounds; the ratio of the median single steps (a typical step: where
the gradient norms and accuracy are spread out to every few steps, one without them);
and how often the collector took those at the end of its phases (``1/6``: every 6th
step). A second plain copy runs beside the collector as a control: its ratio to the
first, 1.000 on a quiet machine, shows the noise of the run; the other ratios are to
the mean of both copies' blocks, which halves the baseline's share of the noise.

On this 2-core virtual machine one block's ratio varies by 3-6% from round to round
(other tenants' load); the median of 40 rounds then still moved by ±1.5% from run to
run, hence 120 rounds by default (~6 minutes for both models on a CPU).

The run re-executes itself with glibc's malloc told to keep freed memory
(`MALLOC_ENV`; `--system-malloc` keeps the defaults): by default glibc hands memory
back to the OS past thresholds that move with the allocation pattern, and then every
step page-faults its activations in afresh. Measured on the CNN: 750 minor faults and
+5-9% on each step of one arm and none in the next, with or without the collector,
changing from run to run. That measures where the heap happened to end, not the
collector.

    python benchmarks/collector_overhead.py [--device cuda] [--blocks 120] [--breakdown] [--compile]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainscope.collectors import watch
from trainscope.collectors.cadence import FULL_START

# Fixed glibc malloc thresholds: nothing up to 32 MB is mmapped per allocation, and
# freed heap memory is kept (see the module docstring).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}

# The collector's settings per arm: defaults, and for --breakdown the defaults less one
# thing, and its bookkeeping alone (loss, learning rate, accuracy, step time: no
# gradient norms past the first 200 steps, no sampled step).
NOTHING_SAMPLED = {"update_ratios": False, "activations": False, "histograms": False, "noise_scale": False}
SETTINGS = {
    "collector": {},
    "sampled_off": NOTHING_SAMPLED,
    "stats_every_step": {"stats_budget": None},
    "bookkeeping": {**NOTHING_SAMPLED, "every": 1_000_000, "stats_budget": None, "stats_every": 1_000_000},
}
LABELS = {
    "plain": "without",
    "plain_again": "without, a second copy",
    "collector": "with watch() (defaults)",
    "sampled_off": "  sampled signals off",
    "stats_every_step": "  norms every step",
    "bookkeeping": "  no norms, nothing sampled",
    "add_histogram": "add_histogram every step",
}


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


class Arm:
    """One copy of the model with its optimizer, and the way of logging it has in the
    current phase (`role`): none for the plain roles."""

    def __init__(self, make: Callable[[], nn.Module], device: torch.device, compiled: bool = False) -> None:
        torch.manual_seed(0)
        self.model = make().to(device)
        if compiled:  # compiled in the first (warm-up) block
            self.model = torch.compile(self.model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.role = "plain"
        self.collector = None
        self.writer = None
        self.step_count = 0

    def attach(self, role: str, log_dir: str) -> None:
        self.role = role
        if role in SETTINGS:
            # Past the first FULL_START steps, whose statistics on every step are a one-off;
            # a multiple of 50, so that each block starts with a sampled step.
            start = FULL_START + self.step_count
            self.collector = watch(self.model, self.opt, log_dir, start_step=start, **SETTINGS[role])
        elif role == "add_histogram":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir)

    def detach(self) -> int | None:
        """Close this phase's way of logging; the collector's last stride, if it had one."""
        stride = None
        if self.collector is not None:
            stride = self.collector.stats_stride
            self.collector.close()
        if self.writer is not None:
            self.writer.close()
        self.role, self.collector, self.writer = "plain", None, None
        return stride

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        out = self.model(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
        self.opt.step()
        if self.collector is not None:
            self.collector.step(loss=loss, outputs=out, targets=y, inputs=x)
        elif self.writer is not None:
            for name, p in self.model.named_parameters():
                self.writer.add_histogram(name, p, self.step_count)
        self.step_count += 1

    def drain(self) -> None:
        """Wait until what this arm handed to its writer thread is on disk: the
        writing is charged to it. The collector's pending steps wait for its own flush."""
        if self.collector is not None:
            self.collector._flusher.writer.wait()  # flush(wait=True) would add a flush
        elif self.writer is not None:
            self.writer.flush()


class Timings:
    """Per role: each measured block's mean step time (in rounds, for ratios within a
    round), every single step's time, and the collector's strides at phase ends."""

    def __init__(self, roles: list[str]) -> None:
        self.blocks: dict[str, list[float]] = {role: [] for role in roles}
        self.single: dict[str, list[float]] = {role: [] for role in roles}
        self.strides: dict[str, list[int]] = {role: [] for role in roles}


def run_phase(
    arms: list[Arm],
    data: list,
    blocks: int,
    args: argparse.Namespace,
    sync: Callable[[], None],
    timings: Timings,
) -> None:
    """`blocks` measured rounds after the warm-up ones, each arm one block a round."""
    for block in range(args.warmup_blocks + blocks):
        measured = block >= args.warmup_blocks
        # The arms take turns in a rotating order, so that whatever one leaves running
        # (a writer thread, a warm or cold cache) falls on each of the others alike.
        for arm in arms[block % len(arms) :] + arms[: block % len(arms)]:
            gc.collect()  # garbage another arm left is not collected on this arm's time
            sync()
            start = time.perf_counter()
            for _ in range(args.block):
                t0 = time.perf_counter()
                arm.step(*data[arm.step_count % len(data)])
                if measured:
                    timings.single[arm.role].append(time.perf_counter() - t0)
            arm.drain()
            sync()
            if measured:
                timings.blocks[arm.role].append((time.perf_counter() - start) / args.block)


def interleave(
    roles: list[str],
    arms: list[Arm],
    data: list,
    blocks: int,
    args: argparse.Namespace,
    sync: Callable[[], None],
    log_dir: str,
) -> Timings:
    """Each role (a way of logging, or none) takes each copy of the model in turn, one
    phase per copy: a copy that runs faster or slower than the others (where its memory
    happened to land: 1-2% here, the same copy in every round) then weighs on every role
    alike instead of on the one it carries all run."""
    timings = Timings(roles)
    per_phase = -(-blocks // len(roles))
    for phase in range(len(roles)):
        for i, role in enumerate(roles):
            arms[(i + phase) % len(arms)].attach(role, f"{log_dir}/{role}.{phase}")
        run_phase(arms, data, per_phase, args, sync, timings)
        for arm in arms:
            role = arm.role
            stride = arm.detach()
            if stride is not None:
                timings.strides[role].append(stride)
    return timings


def measure(
    name: str, make: Callable[[], nn.Module], shape: tuple[int, ...], batch: int, args: argparse.Namespace
) -> None:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    data = [
        (
            torch.randn(batch, *shape, generator=gen).to(device),
            torch.randint(0, 10, (batch,), generator=gen).to(device),
        )
        for _ in range(16)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        # Each way of logging is paired with its own plain copies in a phase of its own: the
        # naive reference's garbage and writer thread never run inside the collector's blocks.
        phases = [["plain_again", *(SETTINGS if args.breakdown else ["collector"])], ["add_histogram"]]
        for kinds, blocks in zip(phases, (args.blocks, args.naive_blocks)):
            roles = ["plain", *kinds]
            arms = [Arm(make, device, args.compile) for _ in roles]
            timed = interleave(roles, arms, data, blocks, args, sync, log_dir)
            plain_blocks, plain_single = timed.blocks["plain"], timed.single["plain"]
            if not rows:
                rows.append((LABELS["plain"], statistics.median(plain_blocks), 1.0, "", 1.0, ""))
            # Per round, the mean of the plain copies' blocks (the control's only the first's).
            baseline_roles = [role for role in roles if role.startswith("plain")]
            baseline = [
                statistics.mean(round_blocks)
                for round_blocks in zip(*(timed.blocks[r] for r in baseline_roles))
            ]
            baseline_single = [t for role in baseline_roles for t in timed.single[role]]
            for kind in kinds:
                control = kind == "plain_again"
                # Each round's block against the plain blocks of the same round: drift of the
                # machine (other load, clock changes) between rounds cancels out.
                ratios = [b / p for b, p in zip(timed.blocks[kind], plain_blocks if control else baseline)]
                single = plain_single if control else baseline_single
                single_ratio = statistics.median(timed.single[kind]) / statistics.median(single)
                stride = stride_label(timed.strides[kind])
                median = statistics.median(timed.blocks[kind])
                rows.append(
                    (LABELS[kind], median, statistics.median(ratios), interval(ratios), single_ratio, stride)
                )
    rounds = f"{args.blocks} blocks x {args.block} steps ({args.naive_blocks} for the reference)"
    how = f"{device.type}{', torch.compile' if args.compile else ''}, {torch.get_num_threads()} threads"
    print(f"\n{name} (batch {batch}, {rounds}, {how})")
    print(
        f"  {'':<28}{'step (block median)':>20}{'ratio':>8}{'95% interval':>15}{'single-step median ratio':>27}{'norms':>11}"
    )
    for label, median, ratio, spread, single_ratio, stride in rows:
        print(
            f"  {label:<28}{median * 1e3:>17.3f} ms{ratio:>8.3f}{spread:>15}{single_ratio:>27.3f}{stride:>11}"
        )


def interval(ratios: list[float], resamples: int = 2000) -> str:
    """95% bootstrap interval of the median of `ratios` (rounds drawn with replacement):
    how far the printed median could move in another run of this length."""
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return f"{medians[int(0.025 * resamples)]:.3f}-{medians[int(0.975 * resamples) - 1]:.3f}"


def stride_label(strides: list[int]) -> str:
    """``1/8``, or ``1/6-8`` where the phases' collectors ended at different strides."""
    if not strides:
        return ""
    low, high = min(strides), max(strides)
    return f"1/{low}" if low == high else f"1/{low}-{high}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", type=int, default=120)
    parser.add_argument(
        "--naive-blocks",
        type=int,
        default=10,
        help="blocks for the add_histogram reference (a ratio of several x)",
    )
    parser.add_argument(
        "--block", type=int, default=50, help="steps per block (default: the collector's sampling interval)"
    )
    parser.add_argument("--warmup-blocks", type=int, default=2)
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the collector with its sampled signals off, with gradient norms every step, and with neither"
        " norms nor anything sampled (its bookkeeping alone)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every copy of the model (inductor; the collector's sampled steps run eagerly)",
    )
    parser.add_argument(
        "--system-malloc", action="store_true", help="keep glibc's malloc defaults (see above)"
    )
    args = parser.parse_args()
    fixed = all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())
    if not args.system_malloc and not fixed and sys.platform.startswith("linux"):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    print(f"torch {torch.__version__}; malloc: {'fixed thresholds' if fixed else 'system defaults'}")
    measure("784-512-512-256-10 ReLU MLP", mlp, (1, 28, 28), 128, args)
    measure("BatchNorm CNN", bn_cnn, (1, 28, 28), 64, args)


if __name__ == "__main__":
    main()
