"""The workload every peer script trains, and what each measures and writes, the same way.

``bench/peers/run.py`` reads one ``summary.json`` per run, in the format of
``bench/handwritten_ddp.py`` (the baseline), so the peer scripts (Lightning's Trainer, Fabric,
accelerate) take its command line and write the same keys. The model, the reduction, the
evaluation and the weights digest are imported from the baseline rather than copied, so the peers
cannot drift from it: same MLP with the same initialisation (seeded before it is built), same
cached data, SGD (lr 0.1, momentum 0.9, weight decay 1e-4) with a cosine stepped after every
optimizer step, batch 64 per rank.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, where the baseline lives
from handwritten_ddp import all_reduce, evaluate, mlp, weights_sha256


def arguments(description: str) -> argparse.ArgumentParser:
    """The baseline's command line, so ``run.py`` builds every peer's arguments alike."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True, help="the trainer's synthetic-*.npz")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--summary", type=Path, required=True, help="JSON written by rank 0")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def set_threads(local_processes: int) -> None:
    """Split the cores between the ranks as the baseline does: on a small machine the frameworks'
    own defaults differ, and the bench compares the frameworks, not their thread counts."""
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_processes))


def datasets(npz: Path) -> tuple[TensorDataset, TensorDataset]:
    """(train, val) from the cached synthetic data set, exactly as the baseline reads it."""
    with np.load(npz) as arrays:
        train = TensorDataset(torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]))
        val = TensorDataset(torch.from_numpy(arrays["x_val"]), torch.from_numpy(arrays["y_val"]))
    return train, val


def model_for(train: TensorDataset) -> nn.Sequential:
    """The baseline's MLP, sized from the data; built after seeding, so its initial weights match."""
    features, labels = train.tensors
    return mlp(features.shape[1], int(labels.max()) + 1)


def sgd(parameters: Iterable[torch.Tensor]) -> torch.optim.SGD:
    return torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4)


def cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The baseline's schedule: a cosine from lr to 0 over ``total_steps`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))


class StepClock:
    """One rank's training-loop time (evaluation excluded), samples, steps, and first step.

    An epoch ends at its last optimizer step, not when the epoch's hook runs: Lightning evaluates
    before its ``on_train_epoch_end``, and that time must not count as training.
    """

    def __init__(self) -> None:
        self.first_step_unix_s = 0.0
        self.train_time_s = 0.0
        self.samples = 0
        self.steps = 0
        self._epoch_start = self._last_step = 0.0

    def start_epoch(self) -> None:
        self._epoch_start = self._last_step = time.perf_counter()

    def step_done(self, samples: int) -> None:
        """After an optimizer step and the schedule's step."""
        if not self.first_step_unix_s:
            self.first_step_unix_s = time.time()
        self.samples += samples
        self.steps += 1
        self._last_step = time.perf_counter()

    def end_epoch(self) -> None:
        self.train_time_s += self._last_step - self._epoch_start


def train_loop(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               train_loader: DataLoader, val_loader: DataLoader, backward: Callable[[torch.Tensor], None],
               epochs: int) -> tuple[StepClock, float, float]:
    """The baseline's loop, for the peers that leave the loop to the user (Fabric, accelerate):
    each passes its own ``backward``. Returns the clock and the last epoch's (val_loss, val_acc)."""
    clock = StepClock()
    val_loss, val_acc = float("nan"), float("nan")
    for _ in range(epochs):
        clock.start_epoch()
        for inputs, targets in train_loader:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            optimizer.step()
            scheduler.step()
            clock.step_done(targets.numel())
        clock.end_epoch()
        val_loss, val_acc = evaluate(model, val_loader)
    return clock, val_loss, val_acc


def write_summary(clock: StepClock, model: nn.Module, epochs: int, val_loss: float, val_acc: float,
                  path: Path) -> None:
    """Every rank calls it (it reduces over the ranks); rank 0 writes the baseline's summary keys.

    ``first_step_unix_s`` is the latest rank's first step: the job has stepped once when every
    rank has. Throughput is all ranks' samples over the mean per-rank training time.
    """
    total_samples, time_sum = all_reduce([clock.samples, clock.train_time_s])
    (first_step_done,) = all_reduce([clock.first_step_unix_s], dist.ReduceOp.MAX)
    world_size = dist.get_world_size()
    mean_train_time = time_sum / world_size
    if dist.get_rank() != 0:
        return
    summary = {
        "world_size": world_size,
        "epochs": epochs,
        "global_step": clock.steps,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "train_samples_per_s": total_samples / mean_train_time if mean_train_time > 0 else 0.0,
        "first_step_unix_s": first_step_done,
        "weights_sha256": weights_sha256(model),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
