"""The launcher's job, from a composed Hydra config to the node's exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf

from launcher import plan
from launcher.allocation import Allocation
from launcher.child import ERROR_DIR_ENV, PARENT_PID_ENV, run_target
from launcher.config import JobConfig, load_job_config, resolved_config
from launcher.environments import LocalEnvironment, SlurmEnvironment, detect
from launcher.errors import (
    CONFIG_ERROR_EXIT_CODE,
    ConfigError,
    StartFailed,
    UncheckedConfig,
    as_config_error,
)
from launcher.failures import FAILURE_FILE, first_failure, recorded_failures, write_failure
from launcher.local_store import FILE_STORE_ENV
from launcher.modes import get_mode
from launcher.rank_output import LOGS_SUBDIR, log_file_name
from launcher.submit import SubmitPlan, failure_report, plan_submission
from launcher.supervise import Interrupted, run_forwarding_signals, supervised
from launcher.targets import describe_plugins
from launcher.validation import check_config, check_schedule
from launcher.warm import warm_start

log = logging.getLogger("launcher")

JOB_ID_ENV = "LAUNCHER_JOB_ID"
SLURM_FAILURES_DIR = "failures"


def exit_on_config_error(error: ConfigError) -> NoReturn:
    """The one way a config is refused on the command line: its line (and hint) on stderr, exit
    code 2, before anything is started or written."""
    print(f"error: {error}", file=sys.stderr)
    if error.hint:
        print(error.hint, file=sys.stderr)
    sys.exit(CONFIG_ERROR_EXIT_CODE)


# A single run's job as ValidateBeforeStart checked it, for Hydra's task function to take over:
# one check, one port pick, one CUDA probe per run. Keyed by run directory and config.
_checked_before_start: dict[str, JobConfig | SubmitPlan] = {}


def _run_key(cfg: DictConfig, run_dir: Path) -> str:
    without_hydra = OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"])
    return f"{run_dir.absolute()}\n{OmegaConf.to_yaml(without_hydra)}"


def validated_job(cfg: DictConfig, run_dir: Path, keep: bool = False) -> JobConfig | SubmitPlan:
    """The job, or a one-line error and exit code 2 before anything is started or written.
    ``keep``: the callback's check, handed to the task function's call for the same config."""
    from launcher.config import check_run_dir

    key = _run_key(cfg, run_dir)
    if not keep and key in _checked_before_start:
        return _checked_before_start.pop(key)
    try:
        job = load_checked(cfg, run_dir)
        if isinstance(job, SubmitPlan):  # submitting: no task of the job has started yet
            check_run_dir(cfg, run_dir, shared=False)
    except Exception as error:  # whatever a check raised: one line, not a traceback
        exit_on_config_error(as_config_error(error))
    if keep:
        _checked_before_start[key] = job
    return job


def load_checked(cfg: DictConfig, run_dir: Path) -> JobConfig | SubmitPlan:
    """The job as this environment (a plain machine, a Slurm step) determines it, every key
    checked first (``launcher.validation``): the one entry point of validation (command line,
    sweep point, ``launch()``). Any failure is a ``ConfigError``, even where a check itself
    raised another exception, so no caller starts a job on a config that was not checked."""
    try:
        values = check_config(cfg)
        environment = detect()
        if OmegaConf.select(cfg, "launcher.name") == "slurm":
            if not isinstance(environment, LocalEnvironment):
                raise ConfigError("launcher", "slurm", "submits a job from outside Slurm; inside an "
                                  "allocation run `srun python -m launcher` (one task per rank)")
            plan = plan_submission(cfg, run_dir)
            check_schedule(values, plan.nodes * plan.tasks_per_node)
            return plan
        if isinstance(environment, SlurmEnvironment):
            job = load_job_config(cfg, run_dir, Allocation.from_slurm(environment))
        elif isinstance(environment, LocalEnvironment):
            job = load_job_config(cfg, run_dir)
        else:
            raise ConfigError(
                "environment",
                environment.name,
                "this process already has a rank (RANK/WORLD_SIZE set by torchrun); run the "
                "launcher from a plain shell, or run `python -m trainer CONFIG` as the rank directly",
            )
        check_schedule(values, job.world_size)
        if job.target.is_trainer:
            job = dataclasses.replace(job, plugins=describe_plugins(values))
        return job
    except ConfigError:
        raise
    except Exception as error:
        raise UncheckedConfig(error) from error


def prepare_run_dir(cfg: DictConfig, job: JobConfig) -> None:
    """Write the config every rank reads; drop the failure report of an earlier attempt (and,
    with ``overwrite=true``, first every output of the earlier run the directory held).

    Atomically: with one Slurm task per rank, every task writes the same file at about the same
    time, and a rank must never read a half-written one.
    """
    import shutil

    from launcher.config import outputs_to_replace

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
    target = job.run_dir / "config.yaml"
    # Unique per host and process: the tasks of a Slurm step, on several nodes, write it at once.
    partial = target.with_name(f".config.yaml.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(partial, "w") as file:
        file.write(OmegaConf.to_yaml(OmegaConf.create(resolved_config(cfg, job))))
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, target)
    (job.run_dir / FAILURE_FILE).unlink(missing_ok=True)


def cpu_threads_per_rank(local_procs: int) -> int:
    """Each rank's share of this machine's cores, so processes x threads never exceeds them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // local_procs)


def run_as_slurm_rank(job: JobConfig, sweep_point: bool) -> None:
    """``srun python -m launcher``: this task is one rank; run the target here, spawn nothing.

    Failures are recorded under ``DIR/failures`` (the run dir is shared by every task), where
    ``launcher=slurm`` finds the failing rank's traceback; srun's ``--kill-on-bad-exit`` stops
    the other tasks. A sweep point (Hydra's submitit launcher) runs the rank as a child instead:
    the task process must outlive it to hand its result to submitit, and must not let
    submitit's USR2 handler requeue the job before the ranks have checkpointed.
    """
    assert job.slurm_rank is not None
    os.environ.update(
        {
            **job.slurm_rank.env(),
            "MASTER_ADDR": job.master_addr,
            "MASTER_PORT": str(job.master_port),
            ERROR_DIR_ENV: str(job.run_dir / SLURM_FAILURES_DIR),
            **job.network_env(),
            **job.rank_env(),
        }
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads_per_rank(job.local_world_size)))
    log.info("Slurm task: rank %d of %d (node %d, local rank %d) in %s", job.slurm_rank.rank,
             job.world_size, job.node_rank, job.slurm_rank.local_rank, job.run_dir)
    if not sweep_point:
        run_target(job.target.kind, job.target.name, list(job.target.args))
        return
    code = run_forwarding_signals([sys.executable, "-m", "launcher.child", job.target.kind,
                                   job.target.name, *job.target.args])
    if code:
        raise JobFailed(failure_report(job.run_dir) or f"rank {job.slurm_rank.rank} exited with code {code}")


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
    os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads_per_rank(job.local_world_size)))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def launch(job: JobConfig) -> int:
    """Start this node's ranks and supervise them; returns the node's exit code."""
    with tempfile.TemporaryDirectory(prefix="launcher-errors-") as error_dir, job_environment(job, error_dir):
        log.info("starting %d rank(s) on %s (%s, %s, local_addr %s, interface %s) in %s",
                 job.local_world_size, plan.node_place(job), job.mode.name, job.backend,
                 job.local_addr, job.socket_ifname or "as in the environment", job.run_dir)
        try:
            with warm_start(job), supervised(job.mode.shutdown_grace_s):
                exits = get_mode(job.mode.name).run(job)
        except Interrupted as stop:
            log.error("interrupted (%s): stopped every rank", stop)
            return 128 + stop.signum
        except StartFailed as why:
            log.error("job failed to start: %s", why)
            return 1
        failure = first_failure(Path(error_dir), exits)
        recovered_from = recorded_failures(Path(error_dir)) if failure is None else []
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


class JobFailed(RuntimeError):
    """A sweep point failed: raised (not exited) so Hydra records it and runs the other points."""


def run(cfg: DictConfig) -> float | None:
    """Hydra's task function (a single run was already validated by ``ValidateBeforeStart``, and
    its job is reused here); returns the objective for sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from launcher.hydra_callbacks import answer_dry_run
    from launcher.submit import SLURM_SWEEP_HINT

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    sweep_point = HydraConfig.get().mode == RunMode.MULTIRUN
    if sweep_point and OmegaConf.select(cfg, "launcher.name") == "slurm":
        # One submission per point would end the sweep at its first point (ValidateBeforeStart
        # refuses this up front; here for a sweep it could not read, e.g. launcher=glob(*)).
        exit_on_config_error(ConfigError("launcher", "slurm", SLURM_SWEEP_HINT))
    if sweep_point:
        try:
            job = load_checked(cfg, run_dir)
        except ConfigError as error:
            raise JobFailed(f"{error}" + (f"\n{error.hint}" if error.hint else "")) from None
    else:
        job = validated_job(cfg, run_dir)
    if answer_dry_run(job):  # the one place a dry run is answered (also for a single run's callback)
        return None
    if isinstance(job, SubmitPlan):
        sys.exit(job.submit())
    prepare_run_dir(cfg, job)
    if job.slurm_rank is not None:
        run_as_slurm_rank(job, sweep_point)
        return None
    code = launch(job)
    if code and sweep_point:
        failure = job.run_dir / FAILURE_FILE
        raise JobFailed(f"exit code {code}" + (f"; see {failure}" if failure.exists() else ""))
    if code:
        sys.exit(code)
    return objective(job.run_dir)


def objective(run_dir: Path) -> float | None:
    """The value a sweeper optimises (Optuna: minimise): the job's final val_loss."""
    summary = run_dir / "summary.json"
    return float(json.loads(summary.read_text())["val_loss"]) if summary.exists() else None
