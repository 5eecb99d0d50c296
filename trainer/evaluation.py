"""Validation: the loss and every configured metric over the whole validation set, reduced
exactly over the ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from trainer.batches import on_device
from trainer.tasks import Step


@torch.no_grad()
def evaluate(model: torch.nn.Module, step: Step, loader: DataLoader, device: torch.device,
             channels_last: bool) -> dict[str, float]:
    """``val_loss`` and every metric over the whole validation set: sums reduced over ranks, then
    divided.

    The sums stay on the device until the end (float64, so they equal Python floats added in
    order): reading them per batch would wait for the GPU on every batch."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    sums: dict[str, list[torch.Tensor]] = {}  # metric: [sum, count]
    count = 0
    for batch in on_device(loader, device, channels_last):
        batch_loss, samples, batch_sums = step.evaluation_sums(model, batch)
        loss_sum += batch_loss
        count += samples
        for name, (value, of) in batch_sums.items():
            totals = sums.setdefault(name, [torch.zeros((), dtype=torch.float64, device=device)] * 2)
            totals[0] = totals[0] + value.double()
            totals[1] = totals[1] + of
    model.train()
    names = sorted(sums)  # the same order on every rank
    count_on_device = torch.full((), count, dtype=torch.float64, device=device)  # a fill, not a copy
    reduced = torch.stack([loss_sum, count_on_device, *(total for name in names for total in sums[name])])
    dist.all_reduce(reduced)
    values = reduced.tolist()
    metrics = {"val_loss": values[0] / values[1]}
    for index, name in enumerate(names):
        metrics[f"val_{name}"] = values[2 + 2 * index] / values[3 + 2 * index]
    return metrics


def metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4f}" for name, value in metrics.items())
