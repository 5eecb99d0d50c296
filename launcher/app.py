"""The launcher's job, from a composed Hydra config to the node's exit code."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf

from launcher.config import check_run_dir, load_job_config
from launcher.environments import LocalEnvironment, SlurmEnvironment, detect
from launcher.errors import CONFIG_ERROR_EXIT_CODE, ConfigError, UncheckedConfig, as_config_error
from launcher.launches import JobFailed, Launch
from launcher.local import LocalLaunch
from launcher.slurm.allocation import Allocation
from launcher.slurm.submit import plan_submission
from launcher.slurm.task import SlurmTask
from launcher.targets import describe_plugins
from launcher.validation import check_config, check_schedule
from trainer.contract import SUMMARY_FILE


def exit_on_config_error(error: ConfigError) -> NoReturn:
    """The one way a config is refused on the command line: its line (and hint) on stderr, exit
    code 2, before anything is started or written."""
    print(f"error: {error}", file=sys.stderr)
    if error.hint:
        print(error.hint, file=sys.stderr)
    sys.exit(CONFIG_ERROR_EXIT_CODE)


# A single run's job as ValidateBeforeStart checked it, for Hydra's task function to take over:
# one check, one port pick, one CUDA probe per run. Keyed by run directory and config.
_checked_before_start: dict[str, Launch] = {}


def _run_key(cfg: DictConfig, run_dir: Path) -> str:
    without_hydra = OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"])
    return f"{run_dir.absolute()}\n{OmegaConf.to_yaml(without_hydra)}"


def validated_job(cfg: DictConfig, run_dir: Path, keep: bool = False) -> Launch:
    """The launch, or a one-line error and exit code 2 before anything is started or written.
    ``keep``: the callback's check, handed to the task function's call for the same config."""
    key = _run_key(cfg, run_dir)
    if not keep and key in _checked_before_start:
        return _checked_before_start.pop(key)
    try:
        launch = load_checked(cfg, run_dir)
    except Exception as error:  # whatever a check raised: one line, not a traceback
        exit_on_config_error(as_config_error(error))
    if keep:
        _checked_before_start[key] = launch
    return launch


def load_checked(cfg: DictConfig, run_dir: Path) -> Launch:
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
            submission = plan_submission(cfg, run_dir)
            check_run_dir(cfg, run_dir, shared=False)  # submitting: no task of the job started yet
            check_schedule(values, submission.nodes * submission.tasks_per_node)
            return submission
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
        return LocalLaunch(job) if job.slurm_rank is None else SlurmTask(job)
    except ConfigError:
        raise
    except Exception as error:
        raise UncheckedConfig(error) from error


def run(cfg: DictConfig) -> float | None:
    """Hydra's task function (a single run was already validated by ``ValidateBeforeStart``, and
    its launch is reused here); returns the objective for sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from launcher.slurm.submit import SLURM_SWEEP_HINT

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    sweep_point = HydraConfig.get().mode == RunMode.MULTIRUN
    if sweep_point and OmegaConf.select(cfg, "launcher.name") == "slurm":
        # One submission per point would end the sweep at its first point (ValidateBeforeStart
        # refuses this up front; here for a sweep it could not read, e.g. launcher=glob(*)).
        exit_on_config_error(ConfigError("launcher", "slurm", SLURM_SWEEP_HINT))
    if sweep_point:
        try:
            launch = load_checked(cfg, run_dir)
        except ConfigError as error:
            raise JobFailed(f"{error}" + (f"\n{error.hint}" if error.hint else "")) from None
    else:
        launch = validated_job(cfg, run_dir)
    if answer_dry_run(launch):  # the one place a dry run is answered (also for a single run's callback)
        return None
    try:
        launch.run(cfg, sweep_point)
    except JobFailed as failed:
        if sweep_point:
            raise
        sys.exit(failed.code)
    return objective(run_dir)


def answer_dry_run(launch: Launch) -> bool:
    """For a single run (``ValidateBeforeStart``, before Hydra creates the run directory) and for
    every sweep point (before anything starts): print what would run and return True; then
    nothing may start. (A dry-run ``SubmitPlan`` refuses to submit as well.)"""
    if launch.dry_run:
        print(launch.describe(), flush=True)
    return launch.dry_run


def objective(run_dir: Path) -> float | None:
    """The value a sweeper optimises (Optuna: minimise): the job's final val_loss."""
    summary = run_dir / SUMMARY_FILE
    return float(json.loads(summary.read_text())["val_loss"]) if summary.exists() else None
