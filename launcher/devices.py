"""Which CUDA device a rank uses: one rule for the launcher's check, its dry run, and the trainer
(``trainer.distributed.cuda_device_index`` writes the same rule again: the trainer never imports
the launcher; a test holds the two to the same table).

A process sees the devices CUDA shows it (``CUDA_VISIBLE_DEVICES``, which Slurm sets per task with
``--gpus-per-task=1`` or ``--gpu-bind``). The ranks that share that view are the node's local ranks
when one launcher starts them, or one rank for a Slurm task that is its rank:

- one visible device, one rank sees it: ``cuda:0`` (a bound task; whatever its local rank);
- several: ``cuda:LOCAL_RANK`` (every rank of the node sees every device);
- too few for the ranks that share the view: refused, naming what is visible.
"""

from __future__ import annotations

from launcher.errors import ConfigError


def describe_visible(visible: int, cuda_visible_devices: str | None) -> str:
    """``2 visible devices (CUDA_VISIBLE_DEVICES=2,3)``."""
    counted = f"{visible} visible device{'' if visible == 1 else 's'}"
    return counted if cuda_visible_devices is None else f"{counted} (CUDA_VISIBLE_DEVICES={cuda_visible_devices})"


def cuda_device_index(visible: int, cuda_visible_devices: str | None, sharing: int, local_rank: int) -> int:
    """The CUDA device index (relative to what is visible) of the rank ``local_rank``, one of
    ``sharing`` ranks that see the same ``visible`` devices."""
    what = describe_visible(visible, cuda_visible_devices)
    if visible < 1:
        raise ConfigError("backend", "nccl", f"needs CUDA, and this process sees no device ({what}); "
                          "allowed here: gloo, auto")
    if visible == 1 and sharing == 1:
        return 0
    if visible < sharing:
        raise ConfigError("backend", "nccl", f"needs one CUDA device per process: {sharing} processes "
                          f"on this node, {what}; lower gpus or use gloo")
    if local_rank >= visible:
        raise ConfigError("backend", "nccl", f"local rank {local_rank} needs CUDA device {local_rank}, "
                          f"this task sees {what}; give each task one GPU (--gpus-per-task=1) or "
                          "every task all of the node's GPUs")
    return local_rank


def physical_device(cuda_visible_devices: str | None, index: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` entry that CUDA numbers ``index``, if it says."""
    if not cuda_visible_devices:
        return None
    entries = [entry.strip() for entry in cuda_visible_devices.split(",")]
    return entries[index] if index < len(entries) else None
