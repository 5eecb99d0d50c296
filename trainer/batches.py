"""Batches on the device: any structure moved as a whole, the copy overlapping the compute."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from trainer.tasks import map_tensors, tensors_in


def to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    """The batch, of any structure, on ``device`` (4-D tensors in NHWC with ``channels_last``)."""
    def move(tensor: torch.Tensor) -> torch.Tensor:
        if channels_last and tensor.dim() == 4:
            return tensor.to(device, non_blocking=True, memory_format=torch.channels_last)
        return tensor.to(device, non_blocking=True)

    return map_tensors(batch, move)


def on_device(loader: Iterable[Any], device: torch.device, channels_last: bool) -> Iterator[Any]:
    """The loader's batches on ``device``, each batch's copy overlapping the compute
    of the batch before it.

    On CUDA the batch (pinned by the loader) is copied asynchronously on a side stream, and the
    compute stream waits for that copy only where it reaches the batch: as the step loop never waits
    for the GPU, the host queues batch k+1's copy while the GPU still computes batch k, one batch
    ahead. The loader itself is not read ahead: a batch fetched before the step in front of it is
    checkpointed would have drawn its augmentation (without workers, from this process's RNG)
    before the RNG state the checkpoint saves, and a resumed run would augment it differently.
    On CPU there is nothing to copy: the batches pass through in the loader's order.
    """
    if device.type != "cuda":
        for batch in loader:
            yield to_device(batch, device, channels_last)
        return
    copies, compute = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    for batch in loader:
        with torch.cuda.stream(copies):
            batch = to_device(batch, device, channels_last)
        compute.wait_stream(copies)
        for tensor in tensors_in(batch):
            tensor.record_stream(compute)  # its memory is reused only once the compute stream is done
        yield batch
