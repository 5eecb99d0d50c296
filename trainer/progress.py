"""Where a run stands: the counters a checkpoint carries, and the losses not yet read from the
device."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from trainer.monitor import Monitor


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    step_in_epoch: int = 0  # micro-batches already taken in `epoch` (the sampler's position)
    global_step: int = 0
    epoch_loss_sum: float = 0.0  # this rank's loss x samples in `epoch` (up to the last UnreadLosses.read)
    epoch_samples: int = 0
    epoch_time_s: float = 0.0  # this rank's training time in `epoch` (evaluation excluded)
    train_time_s: float = 0.0
    train_samples: int = 0  # this rank's samples over the whole run
    first_step_unix_s: float = 0.0  # when this rank finished its first optimizer step
    # Decided from metrics reduced over all ranks, hence the same on every rank:
    best_value: float | None = None  # save.best: the monitored value of best.pt
    early_stop_best: float | None = None  # trainer.early_stop: the best monitored value so far
    epochs_since_best: int = 0  # ... and the epochs since it was reached

    def start_epoch(self, epoch: int) -> Progress:
        """The same run, at the beginning of ``epoch``: the epoch-local counters start over."""
        return replace(self, epoch=epoch, step_in_epoch=0, epoch_loss_sum=0.0, epoch_samples=0,
                       epoch_time_s=0.0)

    def add_time(self, seconds: float) -> None:
        self.epoch_time_s += seconds
        self.train_time_s += seconds

    # The counters that differ between ranks: each rank's own are checkpointed (one row per rank).
    PER_RANK = ("epoch_loss_sum", "epoch_samples", "epoch_time_s", "train_time_s", "train_samples",
                "first_step_unix_s")

    def gather_per_rank(self, device: torch.device) -> torch.Tensor:
        """Every rank's own counters, a float64 row per rank (collective)."""
        mine = torch.tensor([float(getattr(self, name)) for name in self.PER_RANK], dtype=torch.float64,
                            device=device)
        rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, mine)
        return torch.stack(rows).cpu()

    def with_own(self, row: torch.Tensor) -> Progress:
        """This progress with this rank's own counters from its checkpointed row."""
        values = row.tolist()
        return replace(self, **{name: type(getattr(self, name))(value)
                                for name, value in zip(self.PER_RANK, values, strict=True)})


class UnreadLosses:
    """This rank's training losses, kept on the device until the host reads them.

    Reading a device tensor (``loss.item()``) waits for every kernel queued before it: once per
    micro-batch, that would leave the GPU idle while the host prepares the next step. So each
    micro-batch's loss stays on the device as it is (one scalar each), and `read` brings the
    unread ones over in one transfer: at the logging interval (``trainer.log_every_steps``),
    before a checkpoint and at the epoch's end. The host then adds them up as Python floats in the
    order they came, so the epoch's sum is the very number that reading each loss at once gives.
    """

    def __init__(self) -> None:
        self.unread: list[tuple[torch.Tensor, int, float]] = []  # (loss, samples, lr) per micro-batch
        self.charted: list[tuple[int, int]] = []  # (global step, index in unread) for TensorBoard

    def add(self, loss: torch.Tensor, samples: int, lr: float) -> None:
        """A micro-batch's mean loss over ``samples``, and the lr its optimizer step uses."""
        self.unread.append((loss.detach(), samples, lr))

    def chart(self, global_step: int) -> None:
        """TensorBoard charts the last micro-batch's loss and lr as this optimizer step's."""
        self.charted.append((global_step, len(self.unread) - 1))

    def read(self, progress: Progress, monitor: Monitor) -> float:
        """One transfer: the losses added into ``progress``, the charted ones and the last one to
        ``monitor``; returns the last micro-batch's loss (nan when none came since the last read)."""
        if not self.unread:
            return math.nan
        values = torch.stack([loss for loss, _, _ in self.unread]).tolist()
        for value, (_, samples, _) in zip(values, self.unread, strict=True):
            progress.epoch_loss_sum += value * samples
        charted = [(step, values[index], self.unread[index][2]) for step, index in self.charted]
        monitor.losses_read(charted, values[-1], self.unread[-1][2])
        self.unread.clear()
        self.charted.clear()
        return values[-1]
