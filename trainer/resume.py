"""Resuming with another configuration: what may change, what is refused, what is re-derived.

Every checkpoint carries a fingerprint of what decided its sample order (seed, batch size,
accumulation, the training set's length, shuffle/drop_last; the world size is handled by
restarting the epoch) and its learning-rate schedule (epochs, lr, schedule settings, optimizer
steps per epoch). On resume:

- a changed sample order mid-epoch is refused (the position inside the epoch would skip or repeat
  samples); at an epoch boundary it is allowed, with a warning;
- a changed schedule (e.g. ``trainer.epochs`` raised) re-derives the schedule for the new settings
  at the run's position, with a warning, instead of continuing the checkpoint's curve (whose end
  may already be reached: lr 0).
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LRScheduler

from trainer.options import DataLoaderOptions, TrainerOptions
from trainer.schedules import build_scheduler

ORDER_KEYS = ("seed", "data.batch_size", "trainer.accumulate", "train set length", "data.shuffle",
              "data.drop_last")
SCHEDULE_KEYS = ("trainer.epochs", "optim.lr (after optim.scale_lr)", "sched",
                 "optimizer steps per epoch")


def fingerprint(cfg: DictConfig, trainer: TrainerOptions, loader: DataLoaderOptions, world_size: int,
                train_samples: int, lr: float, steps_per_epoch: int) -> dict[str, Any]:
    return {
        "seed": int(cfg.seed),
        "world_size": world_size,
        "data.batch_size": loader.batch_size,
        "trainer.accumulate": trainer.accumulate,
        "train set length": int(train_samples),
        "data.shuffle": loader.shuffle,
        "data.drop_last": loader.drop_last,
        "trainer.epochs": trainer.epochs,
        "optim.lr (after optim.scale_lr)": float(lr),
        "sched": json.dumps(OmegaConf.to_container(cfg.sched, resolve=True), sort_keys=True),
        "optimizer steps per epoch": int(steps_per_epoch),
    }


def changed(keys: tuple[str, ...], saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [key for key in keys if key in saved and saved[key] != current[key]]


def describe(keys: list[str], saved: dict[str, Any], current: dict[str, Any]) -> str:
    return ", ".join(f"{key} {saved[key]!r} in the checkpoint, {current[key]!r} now" for key in keys)


def check_sample_order(saved: dict[str, Any], current: dict[str, Any], epoch: int, step_in_epoch: int,
                       log: logging.Logger) -> None:
    """Refuse a changed sample order mid-epoch; warn at an epoch boundary."""
    keys = changed(ORDER_KEYS, saved, current)
    if not keys:
        return
    if step_in_epoch > 0:
        raise ValueError(
            f"cannot resume mid-epoch (epoch {epoch}, micro-batch {step_in_epoch}) with another "
            f"sample order: {describe(keys, saved, current)}; resume with the checkpoint's values "
            f"(or from a checkpoint at an epoch boundary)")
    log.warning("resuming at the start of epoch %d with another sample order: %s", epoch,
                describe(keys, saved, current))


def rederive_schedule(sched: DictConfig, optimizer: torch.optim.Optimizer, base_lrs: list[float],
                      steps_per_epoch: int, epochs: int, position: int) -> LRScheduler | None:
    """The schedule the current settings give, moved to ``position`` intervals (replayed: exact
    for every scheduler), the optimizer's lr set from the current ``base_lrs``."""
    for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = lr
        group.pop("initial_lr", None)
    scheduler = build_scheduler(sched, optimizer, steps_per_epoch, epochs)
    if scheduler is not None:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore")
            for _ in range(position):
                scheduler.step()
    return scheduler
