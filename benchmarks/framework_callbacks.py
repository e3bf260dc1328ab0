"""Cost of the framework callbacks per training step, measured in one interleaved run.

A Lightning `Trainer` (an MLP on digits) and a Hugging Face `Trainer` (a tiny GPT-2 built
from its config, on generated text) each fit the same model from the same seed, with and
without `TrainScopeCallback`, in alternating rounds (the order flips every round). A
timing callback reads the clock at the end of step `--skip` and of the last step, so a
fit's time per step leaves out the Trainer's setup and the collector's first 200 steps
(gradient norms on every one of them, a one-off), and covers its steady state at default
settings (`every=50`, `stats_budget=0.005`). Printed per framework: the median step time
of each arm and the median over rounds of the ratio with/without, with a 95% bootstrap
interval over the rounds.

    python benchmarks/framework_callbacks.py [--rounds 15] [--steps 400] [--skip 200] [--only lightning|hf]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


def bootstrap(ratios: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws)]


class _Clock:
    def __init__(self, skip: int, steps: int) -> None:
        self.skip, self.steps = skip, steps
        self.start = self.end = 0.0

    def tick(self, step: int) -> None:
        if step == self.skip:
            self.start = time.perf_counter()
        elif step == self.steps:
            self.end = time.perf_counter()

    def seconds_per_step(self) -> float:
        return (self.end - self.start) / (self.steps - self.skip)


# ---- Lightning ----------------------------------------------------------------------


def lightning_fit(steps: int, skip: int, with_callback: bool) -> float:
    import lightning.pytorch as L
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from trainscope.collectors.lightning_callback import TrainScopeCallback

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    X, y = load_digits(return_X_y=True)
    data = TensorDataset(torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y))
    loader = DataLoader(data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))

    class Timer(L.Callback, _Clock):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            self.tick(trainer.global_step)

    timer = Timer(skip, steps)
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [timer] + ([TrainScopeCallback()] if with_callback else [])
        trainer = L.Trainer(
            default_root_dir=tmp,
            max_steps=steps,
            callbacks=callbacks,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        trainer.fit(Module(), loader)
    return timer.seconds_per_step()


# ---- Hugging Face ---------------------------------------------------------------------


def hf_fit(steps: int, skip: int, with_callback: bool) -> float:
    import transformers

    from trainscope.collectors.hf_callback import TrainScopeCallback

    words = ("the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "red", "big", "and", "fox", "hid")
    rng = random.Random(0)
    text = ""
    while len(text) < 40_000:
        text += " ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) + ". "
    alphabet = sorted(set(text))
    ids = torch.tensor([alphabet.index(c) for c in text])
    length = 32

    class Windows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return (len(ids) - length) // length

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            window = ids[i * length : (i + 1) * length]
            return {"input_ids": window, "labels": window.clone()}

    config = transformers.GPT2Config(
        vocab_size=len(alphabet),
        n_positions=length,
        n_embd=64,
        n_layer=2,
        n_head=2,
        activation_function="relu",
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)

    class Timer(transformers.TrainerCallback, _Clock):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.tick(state.global_step)

    timer = Timer(skip, steps)
    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=16,
            learning_rate=1e-3,
            logging_steps=50,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        callbacks = [timer] + ([TrainScopeCallback()] if with_callback else [])
        trainer = transformers.Trainer(model=model, args=args, train_dataset=Windows(), callbacks=callbacks)
        trainer.train()
    return timer.seconds_per_step()


# ---- the run --------------------------------------------------------------------------


def measure(name: str, fit: Callable[[int, int, bool], float], rounds: int, steps: int, skip: int) -> None:
    fit(steps, skip, True)  # warm-up: imports, first allocations
    plain: list[float] = []
    watched: list[float] = []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        times = {arm: fit(steps, skip, arm) for arm in order}
        plain.append(times[False])
        watched.append(times[True])
    ratios = [w / p for w, p in zip(watched, plain)]
    low, high = bootstrap(ratios)
    print(
        f"{name}: {statistics.median(plain) * 1e3:.2f} ms/step plain, {statistics.median(watched) * 1e3:.2f} ms/step"
        f" with TrainScopeCallback; ratio {statistics.median(ratios):.3f} (95% CI {low:.3f}-{high:.3f},"
        f" {rounds} rounds, steps {skip}-{steps})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--skip", type=int, default=200, help="steps left out at the start of each fit")
    parser.add_argument("--only", choices=("lightning", "hf"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.only != "hf":
        measure("Lightning", lightning_fit, args.rounds, args.steps, args.skip)
    if args.only != "lightning":
        measure("HF Trainer", hf_fit, args.rounds, args.steps, args.skip)


if __name__ == "__main__":
    main()
