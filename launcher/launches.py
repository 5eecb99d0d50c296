"""The one interface every way of starting a checked job implements, and what they share.

``launcher.app.load_checked`` turns a composed config into exactly one ``Launch``: this machine's
ranks under torchrun or mp_spawn (``launcher.local``), this Slurm task as its rank
(``launcher.slurm.task``), or a submission to Slurm (``launcher.slurm.submit``). The task function
then needs no type switch: a dry run prints ``describe()``, anything else calls ``run()``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from omegaconf import DictConfig, OmegaConf

from launcher.failures import FAILURE_FILE
from trainer.contract import CONFIG_FILE

if TYPE_CHECKING:
    from launcher.config import JobConfig

log = logging.getLogger("launcher")


class JobFailed(RuntimeError):
    """The job ran and failed (the reason is logged where it was found). A single run exits with
    ``code``; a sweep point raises it so Hydra records the point and runs the others."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Launch(Protocol):
    """A checked job, ready to start: nothing of it has started or been written yet."""

    @property
    def run_dir(self) -> Path: ...

    @property
    def dry_run(self) -> bool: ...

    def describe(self) -> str:
        """What ``run()`` would do (each rank's command, or the sbatch script), for ``dry_run``."""
        ...

    def run(self, cfg: DictConfig, sweep_point: bool) -> None:
        """Start the job and see it end; raises ``JobFailed`` when it did not succeed."""
        ...


@dataclass(frozen=True)
class JobLaunch:
    """A launch of a job this machine checked (its ranks here, or this Slurm task as its rank):
    what the interface asks of it comes from the job."""

    job: JobConfig

    @property
    def run_dir(self) -> Path:
        return self.job.run_dir

    @property
    def dry_run(self) -> bool:
        return self.job.dry_run


def prepare_run_dir(cfg: DictConfig, job: JobConfig) -> None:
    """Write the config every rank reads; drop the failure report of an earlier attempt (and,
    with ``overwrite=true``, first every output of the earlier run the directory held).

    Atomically: with one Slurm task per rank, every task writes the same file at about the same
    time, and a rank must never read a half-written one.
    """
    from launcher.config import outputs_to_replace, resolved_config
    from launcher.environments import SlurmEnvironment

    shared = job.slurm_rank is not None or job.nodes > 1 or SlurmEnvironment.detect(os.environ)
    replaced = outputs_to_replace(cfg, job.run_dir, shared)
    for path in replaced:  # overwrite=true: nothing of the earlier run mixes with this one
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if replaced:
        log.warning("overwrite=true: removed the earlier run's %s from %s",
                    ", ".join(path.name for path in replaced), job.run_dir)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    target = job.run_dir / CONFIG_FILE
    # Unique per host and process: the tasks of a Slurm step, on several nodes, write it at once.
    partial = target.with_name(f".config.yaml.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(partial, "w") as file:
        file.write(OmegaConf.to_yaml(OmegaConf.create(resolved_config(cfg, job))))
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, target)
    (job.run_dir / FAILURE_FILE).unlink(missing_ok=True)

