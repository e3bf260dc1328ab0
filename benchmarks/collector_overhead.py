"""Cost of the collector per training step, measured in one interleaved run.

Copies of each model train on synthetic data in alternating blocks of `--block` steps,
in a rotating order, in two phases: plain against `watch()` at default settings, then
plain against the naive reference (TensorBoard's `SummaryWriter.add_histogram` of every
parameter each step), so that the reference's garbage and writer thread never run in
the collector's blocks. A block of 50 steps holds exactly one of the collector's
sampled steps, so a block's mean step time carries the sampled work at its real rate;
a block ends once what its arm logged is on disk (`flush`), so background writing is
charged to the arm that caused it, never to the one that runs next. Printed: the median
over blocks of the mean step time; the median over rounds of each block's ratio to the
plain block of the same round (all work, the sampled steps included); the ratio of
the median single steps (a typical step: where the gradient norms and accuracy are
spread out to every few steps, one without them); and how often the collector took
those at the end (``1/6``: every 6th step). A second plain copy runs in the
collector's phase as a control: its ratio, 1.000 on a quiet machine, shows the noise
of the run.

The run re-executes itself with glibc's malloc told to keep freed memory
(`MALLOC_ENV`; `--system-malloc` keeps the defaults): by default glibc hands memory
back to the OS past thresholds that move with the allocation pattern, and then every
step page-faults its activations in afresh. Measured on the CNN: 750 minor faults and
+5-9% on each step of one arm and none in the next, with or without the collector,
changing from run to run. That measures where the heap happened to end, not the
collector.

    python benchmarks/collector_overhead.py [--device cuda] [--blocks 40] [--breakdown] [--compile]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from collectors import watch

# Fixed glibc malloc thresholds: nothing up to 32 MB is mmapped per allocation, and
# freed heap memory is kept (see the module docstring).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}

# The collector's settings per arm: defaults, and for --breakdown the defaults less one thing.
SETTINGS = {
    "collector": {},
    "sampled_off": {"update_ratios": False, "activations": False, "histograms": False, "noise_scale": False},
    "stats_every_step": {"stats_budget": None},
}
LABELS = {
    "plain": "without",
    "plain_again": "without, a second copy",
    "collector": "with watch() (defaults)",
    "sampled_off": "  sampled signals off",
    "stats_every_step": "  norms+accuracy every step",
    "add_histogram": "add_histogram every step",
}


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )


def bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


class Arm:
    """One copy of the model with its optimizer and its way of logging."""

    def __init__(
        self, make: Callable[[], nn.Module], device: torch.device, kind: str, log_dir: str, compiled: bool = False
    ) -> None:
        torch.manual_seed(0)
        self.model = make().to(device)
        if compiled:  # compiled in the first (warm-up) block
            self.model = torch.compile(self.model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.kind = kind
        self.collector = None
        if kind in SETTINGS:
            self.collector = watch(self.model, self.opt, f"{log_dir}/{kind}", **SETTINGS[kind])
        self.writer = None
        if kind == "add_histogram":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(f"{log_dir}/naive")
        self.step_count = 0

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
        """Wait until what this arm logged is on disk: its writer thread's work is charged to it."""
        if self.collector is not None:
            self.collector.flush(wait=True)
        elif self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()
        if self.writer is not None:
            self.writer.close()


def interleave(
    arms: list[Arm], data: list, blocks: int, args: argparse.Namespace, sync: Callable[[], None]
) -> dict[str, tuple[list[float], list[float]]]:
    """Per arm: the mean step time of each block, and every single step's time."""
    block_means: dict[str, list[float]] = {arm.kind: [] for arm in arms}
    single: dict[str, list[float]] = {arm.kind: [] for arm in arms}
    for block in range(args.warmup_blocks + blocks):
        # The arms take turns in a rotating order, so that whatever one leaves running
        # (a writer thread, a warm or cold cache) falls on each of the others alike.
        for arm in arms[block % len(arms):] + arms[: block % len(arms)]:
            gc.collect()  # garbage another arm left is not collected on this arm's time
            sync()
            start = time.perf_counter()
            for i in range(args.block):
                t0 = time.perf_counter()
                arm.step(*data[(block * args.block + i) % len(data)])
                if block >= args.warmup_blocks:
                    single[arm.kind].append(time.perf_counter() - t0)
            arm.drain()
            sync()
            if block >= args.warmup_blocks:
                block_means[arm.kind].append((time.perf_counter() - start) / args.block)
    return {kind: (block_means[kind], single[kind]) for kind in block_means}


def measure(name: str, make: Callable[[], nn.Module], shape: tuple[int, ...], batch: int, args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    data = [
        (torch.randn(batch, *shape, generator=gen).to(device), torch.randint(0, 10, (batch,), generator=gen).to(device))
        for _ in range(16)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as log_dir:
        # Each way of logging is paired with its own plain arm in a phase of its own: the
        # naive reference's garbage and writer thread never run inside the collector's blocks.
        phases = [["plain_again", *(SETTINGS if args.breakdown else ["collector"])], ["add_histogram"]]
        for kinds, blocks in zip(phases, (args.blocks, args.naive_blocks)):
            arms = [Arm(make, device, kind, log_dir, args.compile) for kind in ["plain", *kinds]]
            timed = interleave(arms, data, blocks, args, sync)
            for arm in arms:
                arm.close()
            strides = {arm.kind: arm.collector.stats_stride for arm in arms if arm.collector is not None}
            plain_blocks, plain_single = timed["plain"]
            if not rows:
                rows.append((LABELS["plain"], statistics.median(plain_blocks), 1.0, 1.0, ""))
            for kind in kinds:
                kind_blocks, single = timed[kind]
                # Each round's block against the plain block of the same round: drift of the
                # machine (other load, clock changes) between rounds cancels out.
                ratio = statistics.median(b / p for b, p in zip(kind_blocks, plain_blocks))
                single_ratio = statistics.median(single) / statistics.median(plain_single)
                stride = f"1/{strides[kind]}" if kind in strides else ""
                rows.append((LABELS[kind], statistics.median(kind_blocks), ratio, single_ratio, stride))
    rounds = f"{args.blocks} blocks x {args.block} steps ({args.naive_blocks} for the reference)"
    how = f"{device.type}{', torch.compile' if args.compile else ''}, {torch.get_num_threads()} threads"
    print(f"\n{name} (batch {batch}, {rounds}, {how})")
    print(f"  {'':<28}{'step (block median)':>20}{'ratio':>8}{'single-step median ratio':>27}{'norms':>8}")
    for label, median, ratio, single_ratio, stride in rows:
        print(f"  {label:<28}{median * 1e3:>17.3f} ms{ratio:>8.3f}{single_ratio:>27.3f}{stride:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--naive-blocks", type=int, default=10, help="blocks for the add_histogram reference (a ratio of several x)")
    parser.add_argument("--block", type=int, default=50, help="steps per block (default: the collector's sampling interval)")
    parser.add_argument("--warmup-blocks", type=int, default=2)
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the collector with its sampled signals off, and with gradient norms and accuracy every step",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile every copy of the model (inductor; the collector's sampled steps run eagerly)"
    )
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's malloc defaults (see above)")
    args = parser.parse_args()
    fixed = all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())
    if not args.system_malloc and not fixed and sys.platform.startswith("linux"):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    print(f"torch {torch.__version__}; malloc: {'fixed thresholds' if fixed else 'system defaults'}")
    measure("784-512-512-256-10 ReLU MLP", mlp, (1, 28, 28), 128, args)
    measure("BatchNorm CNN", bn_cnn, (1, 28, 28), 64, args)


if __name__ == "__main__":
    main()
