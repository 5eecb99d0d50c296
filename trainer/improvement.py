"""Whether a monitored validation metric improved: ``save.best`` and ``trainer.early_stop``.

The metrics are reduced over all ranks before this is asked, so every rank gets the same answer
and they all stop after the same epoch, or all write ``best.pt`` at the same one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from trainer.options import Best, EarlyStop, ImprovementMode, improvement_mode


@dataclass(frozen=True)
class Improvement:
    monitor: str  # a key of the validation metrics: val_loss, val_acc, val_NAME
    mode: ImprovementMode  # min | max
    min_delta: float = 0.0  # a change smaller than this is no improvement

    @classmethod
    def from_options(cls, options: Best | EarlyStop) -> Improvement | None:
        """None where the block is off (``monitor: null``)."""
        if options.monitor is None:
            return None
        min_delta = options.min_delta if isinstance(options, EarlyStop) else 0.0
        return cls(options.monitor, improvement_mode(options.monitor, options.mode), min_delta)

    def improves(self, metrics: Mapping[str, float], best: float | None) -> bool:
        if self.monitor not in metrics:
            raise KeyError(f"{self.monitor} is not among the validation metrics ({', '.join(metrics)})")
        value = metrics[self.monitor]
        if math.isnan(value):
            return False
        if best is None:
            return True
        return value < best - self.min_delta if self.mode is ImprovementMode.min else value > best + self.min_delta
