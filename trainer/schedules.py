"""Optimizer and learning-rate schedule, built from ``optim`` and ``sched``.

``sched.interval`` says when the schedule moves: once per optimizer step (``step``) or once per
epoch (``epoch``). A schedule whose ``total`` is ``auto`` is given the number of those intervals in
the whole run, which only the trainer knows (it depends on the data set, world size, batch size
and accumulation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LRScheduler

from trainer.options import LR_SCALING_RULES, SCHEDULE_INTERVALS

# optim.scale_lr: the configured lr is what one process would use; the rule scales it with the
# number of processes (Goyal et al.'s linear rule, or the square-root rule often used with Adam).
LR_SCALING: dict[str, Callable[[int], float]] = dict(zip(LR_SCALING_RULES, (
    lambda world_size: 1.0,
    lambda world_size: float(world_size),
    lambda world_size: math.sqrt(world_size),
), strict=True))


def build_optimizer(optim: DictConfig, params: Iterable[torch.nn.Parameter],
                    world_size: int) -> torch.optim.Optimizer:
    """Instantiate ``optim`` (any ``_target_``), its lr scaled by ``optim.scale_lr``."""
    options = OmegaConf.to_container(optim, resolve=True)
    assert isinstance(options, dict)
    rule = options.pop("scale_lr", "none")
    if rule not in LR_SCALING:
        raise ValueError(f"optim.scale_lr={rule!r}: allowed: {', '.join(LR_SCALING)}")
    options["lr"] = options["lr"] * LR_SCALING[rule](world_size)
    return instantiate(options, params=params)


def build_scheduler(sched: DictConfig, optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int, epochs: int) -> LRScheduler | None:
    """Instantiate ``sched.scheduler`` (None: constant lr), filling ``total: auto``."""
    if sched.scheduler is None:
        return None
    if sched.interval not in SCHEDULE_INTERVALS:
        raise ValueError(f"sched.interval={sched.interval!r}: allowed: {', '.join(SCHEDULE_INTERVALS)}")
    options = OmegaConf.to_container(sched.scheduler, resolve=True)
    assert isinstance(options, dict)
    if options.get("total") == "auto":
        options["total"] = epochs * (steps_per_epoch if sched.interval == "step" else 1)
    return instantiate(options, optimizer=optimizer)


def warmup_cosine_factor(t: int, total: int, warmup: int, warmup_start_factor: float,
                         min_lr_ratio: float) -> float:
    """The lr multiplier after ``t`` intervals: linear warm-up, then half a cosine down to
    ``min_lr_ratio``, held there past ``total``."""
    if t < warmup:
        return warmup_start_factor + (1.0 - warmup_start_factor) * t / warmup
    decay = max(total - warmup, 1)
    progress = min(t - warmup, decay) / decay
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LRScheduler):
    """Linear warm-up over ``warmup`` intervals, then cosine decay until ``total``.

    The lr is a closed-form function of the interval count, so the scheduler's whole state is that
    count: a resumed run continues on exactly the same curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int = 0,
                 warmup_start_factor: float = 0.01, min_lr_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
        if not 0 <= warmup <= total:
            raise ValueError(f"sched.scheduler.warmup={warmup}: allowed: 0..total ({total} intervals)")
        self.total, self.warmup = total, warmup
        self.warmup_start_factor, self.min_lr_ratio = warmup_start_factor, min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        factor = warmup_cosine_factor(self.last_epoch, self.total, self.warmup,
                                      self.warmup_start_factor, self.min_lr_ratio)
        return [base_lr * factor for base_lr in self.base_lrs]
