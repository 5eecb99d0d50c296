"""``launcher=torchrun`` and ``launcher=mp_spawn``: this machine's ranks, started and supervised here."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from omegaconf import DictConfig

from launcher import plan
from launcher.child import ERROR_DIR_ENV, PARENT_PID_ENV
from launcher.config import JobConfig
from launcher.errors import StartFailed
from launcher.failures import FAILURE_FILE, first_failure, recorded_failures, write_failure
from launcher.launches import JobFailed, JobLaunch, prepare_run_dir
from launcher.local_store import FILE_STORE_ENV
from launcher.modes import get_mode
from launcher.rank_output import LOGS_SUBDIR, log_file_name
from launcher.scratch import scratch_directory
from launcher.supervise import Interrupted, supervised
from launcher.warm import warm_start
from trainer.contract import threads_per_rank

log = logging.getLogger("launcher")

JOB_ID_ENV = "LAUNCHER_JOB_ID"


@dataclass(frozen=True)
class LocalLaunch(JobLaunch):
    """This node's ranks as children of this process (torchrun's agent, or mp_spawn)."""

    def describe(self) -> str:
        return plan.describe(self.job, get_mode(self.job.mode.name).command_line(self.job))

    def run(self, cfg: DictConfig, sweep_point: bool) -> None:
        prepare_run_dir(cfg, self.job)
        code = launch_ranks(self.job)
        if code:
            failure = self.job.run_dir / FAILURE_FILE
            raise JobFailed(f"exit code {code}" + (f"; see {failure}" if failure.exists() else ""), code)


@contextlib.contextmanager
def job_environment(job: JobConfig, error_dir: str) -> Iterator[None]:
    """What this job's ranks inherit, exported for the job only: a sweep runs several jobs in one
    launcher process, and one point's interface or thread count must not leak into the next."""
    saved = dict(os.environ)
    os.environ.update(
        {
            ERROR_DIR_ENV: error_dir,
            PARENT_PID_ENV: str(os.getpid()),
            JOB_ID_ENV: os.environ.get(JOB_ID_ENV, uuid.uuid4().hex),
            **job.network_env(),
            **job.rank_env(),
        }
    )
    if job.uses_file_store:
        os.environ[FILE_STORE_ENV] = os.path.join(error_dir, "store")
    # Set before any rank starts, identically in both modes (torchrun would export 1, spawn
    # nothing), so every rank's OpenMP pool is sized before torch starts a thread.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(job.local_world_size)))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def launch_ranks(job: JobConfig) -> int:
    """Start this node's ranks and supervise them; returns the node's exit code."""
    with scratch_directory() as scratch, job_environment(job, str(scratch.errors)):
        log.info("starting %d rank(s) on %s (%s, %s, local_addr %s, interface %s) in %s",
                 job.local_world_size, plan.node_place(job), job.mode.name, job.backend,
                 job.local_addr, job.socket_ifname or "as in the environment", job.run_dir)
        try:
            with warm_start(job, scratch), supervised(job.mode.shutdown_grace_s):
                exits = get_mode(job.mode.name).run(job)
        except Interrupted as stop:
            log.error("interrupted (%s): stopped every rank", stop)
            return 128 + stop.signum
        except StartFailed as why:
            log.error("job failed to start: %s", why)
            return 1
        failure = first_failure(scratch.errors, exits)
        recovered_from = recorded_failures(scratch.errors) if failure is None else []
    if failure is None:
        if recovered_from:
            log.warning("recovered by %d restart(s) from: %s",
                        max(f.attempt for f in recovered_from) + 1, recovered_from[0].describe())
        log.info("all ranks finished")
        return 0
    write_failure(job.run_dir, failure)
    log.error("job failed: %s", failure.describe())
    log.error("every rank's output: %s", job.run_dir / LOGS_SUBDIR / log_file_name("N"))
    return 1
