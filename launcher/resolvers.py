"""Config resolvers used in ``conf/``. In a module of their own (not ``__main__``) so that configs
pickled for Slurm jobs by submitit can find them again."""

from __future__ import annotations

import functools
import os
import time

from omegaconf import OmegaConf


@functools.cache
def run_stamp() -> str:
    """The default run directory's name: the same for every task of a Slurm step and for its
    requeues (so ``resume=auto`` finds the checkpoint), else the start time.

    The start time to the millisecond, then this process's id: ``2025-01-31/14-05-09.123-4711``.
    It sorts by time, and two launches started at the same moment on one machine never share a
    directory (two live processes never have the same id). Cached: Hydra resolves it more than once.
    """
    if "SLURM_JOB_ID" in os.environ and ("SLURM_STEP_ID" in os.environ or "SLURM_STEPID" in os.environ):
        if "SLURM_ARRAY_JOB_ID" in os.environ:
            return f"slurm-{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    now = time.time()
    return f"{time.strftime('%Y-%m-%d/%H-%M-%S', time.localtime(now))}.{int(now * 1000) % 1000:03d}-{os.getpid()}"


def gpus_per_node(spec: object, gpus: object, backend: object) -> object:
    """GPUs per node to ask Slurm for (``launcher=slurm`` and the sweep preset). ``auto``: an
    integer ``gpus`` (one rank per GPU) unless backend=gloo; ``gpus=auto`` or a list: ``gpus``
    only with backend=nccl; else 0. Any other ``spec`` is the user's, returned as given."""
    if spec != "auto":
        return spec
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        return 0 if backend == "gloo" else gpus
    return gpus if backend == "nccl" else 0


def slurm_gpus(spec: object, gpus: object, backend: object) -> object:
    """``gpus_per_node`` for Hydra's submitit launcher: None (no ``--gpus-per-node``) for 0."""
    count = gpus_per_node(spec, gpus, backend)
    return None if count == 0 else count


def slurm_cpus(spec: object, partition: object, tasks_per_node: object) -> object:
    """``cpus_per_task`` for Hydra's submitit launcher: ``auto`` is the partition's CPUs per node
    over the tasks per node, asked of ``sinfo`` (``launcher.slurm.cpus``); else as given."""
    from launcher.slurm.cpus import resolve_cpus_per_task

    return resolve_cpus_per_task(spec, partition, tasks_per_node)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)
    OmegaConf.register_new_resolver("slurm_cpus", slurm_cpus, replace=True)
