"""A Slurm task's side of a job: the task becomes its rank in-process (``srun python -m launcher``,
the templates, and every task ``launcher=slurm`` submitted), records its failure in the shared run
directory, and is found there by whoever watches the job."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from launcher import plan
from launcher.child import ERROR_DIR_ENV, run_target
from launcher.cli import hydra_quote
from launcher.failures import first_failure, recorded_failures
from launcher.launches import JobFailed, JobLaunch, prepare_run_dir
from launcher.slurm import FAILURES_DIR
from launcher.supervise import run_forwarding_signals
from trainer.contract import threads_per_rank

log = logging.getLogger("launcher")



@dataclass(frozen=True)
class SlurmTask(JobLaunch):
    """This task of a Slurm step is one rank: it runs the target here and spawns nothing.

    Failures are recorded under ``DIR/failures``, where ``launcher=slurm`` finds the failing rank's
    traceback; srun's ``--kill-on-bad-exit`` stops the other tasks. A sweep point (Hydra's
    submitit launcher) runs the rank as a child instead: the task process must outlive it to hand
    its result to submitit, and must not let submitit's USR2 handler requeue the job before the
    ranks have checkpointed.
    """

    def describe(self) -> str:
        return plan.describe(self.job, f"(in this process) python {' '.join(self.job.target.python_args())}")

    def run(self, cfg: DictConfig, sweep_point: bool) -> None:
        job, rank = self.job, self.job.slurm_rank
        assert rank is not None
        prepare_run_dir(cfg, job)
        os.environ.update(
            {
                **rank.env(),
                "MASTER_ADDR": job.master_addr,
                "MASTER_PORT": str(job.master_port),
                ERROR_DIR_ENV: str(job.run_dir / FAILURES_DIR),
                **job.network_env(),
                **job.rank_env(),
            }
        )
        os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(job.local_world_size)))
        log.info("Slurm task: rank %d of %d (node %d, local rank %d) in %s", rank.rank,
                 job.world_size, job.node_rank, rank.local_rank, job.run_dir)
        if not sweep_point:
            run_target(job.target.kind, job.target.name, list(job.target.args), failure_reported_above=False)
            return
        code = run_forwarding_signals([sys.executable, "-m", "launcher.child", job.target.kind,
                                       job.target.name, *job.target.args])
        if code:
            raise JobFailed(failure_report(job.run_dir) or f"rank {rank.rank} exited with code {code}", code)


class RankTask:
    """What every Slurm task runs (pickled by submitit): ``python -m launcher OVERRIDES``.

    The launcher in the task sees the Slurm step and becomes its rank. Time-limit signals go to
    the ranks, which checkpoint and requeue the job themselves; submitit's own handler would requeue
    at once, before the checkpoint is written, so this process only passes signals on.
    """

    def __init__(self, overrides: list[str], run_dir: Path) -> None:
        self.overrides = overrides
        self.run_dir = run_dir

    def __call__(self) -> int:
        command = [sys.executable, "-m", "launcher", *self.overrides, run_dir_override(self.run_dir)]
        code = run_forwarding_signals(command)
        if code:
            raise RuntimeError(failure_report(self.run_dir) or f"rank exited with code {code}")
        return code


def failure_report(run_dir: Path) -> str | None:
    """The first recorded failure of the job's last attempt, with its traceback."""
    failures_dir = run_dir / FAILURES_DIR
    recorded = recorded_failures(failures_dir) if failures_dir.is_dir() else []
    if not recorded:
        return None
    failure = first_failure(failures_dir, {failure.rank: (1, failure.time) for failure in recorded})
    return failure.describe() if failure else None


def run_dir_override(run_dir: Path) -> str:
    """``hydra.run.dir=`` for the tasks, quoted so that Hydra reads back exactly ``run_dir``."""
    return f"hydra.run.dir={hydra_quote(str(run_dir))}"
