"""Hydra callbacks: validate before Hydra creates the run directory; keep a sweep's report current."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from launcher.errors import ConfigError, as_config_error


def ends_the_run_on_error(hook: Callable[..., None]) -> Callable[..., None]:
    """Hydra turns a callback's exception into a warning, then creates the run directory and runs
    the task. A check (or a dry run) that fails in a callback must end the run there, before
    anything is written: as one line and exit code 2, whatever the exception (one of another
    kind, say an int where a check expected a string, is still the config's)."""

    @functools.wraps(hook)
    def checked(*args: Any, **kwargs: Any) -> None:
        from launcher.app import exit_on_config_error

        try:
            hook(*args, **kwargs)
        except Exception as error:
            exit_on_config_error(as_config_error(error))

    return checked


def _sweeps_launcher_slurm(config: DictConfig) -> bool:
    """``-m launcher=slurm`` (or a sweep over ``launcher`` that includes slurm)."""
    from launcher.slurm.submit import sweep_overrides

    if OmegaConf.select(config, "launcher.name") == "slurm":
        return True
    for override in sweep_overrides(config) or []:
        if override.get_key_element() == "launcher" and override.is_sweep_override():
            with contextlib.suppress(Exception):  # glob(): checked again in each point (app.run)
                if "slurm" in list(override.sweep_string_iterator()):
                    return True
    return False


class ValidateBeforeStart(Callback):
    """Check the config, and answer ``dry_run``, before Hydra creates or touches the run directory
    (a single run) or submits anything (a sweep).

    A rejected run or a dry run must leave no trace: no new directory, no overwritten files.
    """

    @ends_the_run_on_error
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from launcher.app import answer_dry_run, validated_job

        HydraConfig.instance().set_config(config)
        launch = validated_job(config, Path(str(config.hydra.run.dir)).absolute(), keep=True)
        if answer_dry_run(launch):
            sys.exit(0)

    @ends_the_run_on_error
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before the sweeper expands the sweep and its launcher submits the points: one
        ``launcher=slurm`` submission per point is refused (it would end the sweep after the
        first point); every key the sweep does not vary is checked once, here; on Slurm
        (``hydra/launcher=slurm``) every option the plugin hands to submitit is checked, and a dry
        run prints the sbatch script and submits nothing."""
        from launcher.slurm import submit
        from launcher.validation import check_config

        HydraConfig.instance().set_config(config)
        if _sweeps_launcher_slurm(config):
            raise ConfigError("launcher", "slurm", submit.SLURM_SWEEP_HINT)
        check_config(config)  # the sweep's values are checked in each point (app.run)
        if not submit.is_slurm_sweep(config):
            return  # local points: each is checked, and answers dry_run, in app.run
        sweep = submit.check_slurm_sweep(config)
        if config.dry_run:
            print(sweep.describe(submit.sweep_points(config)), flush=True)
            sys.exit(0)


class SweepReport(Callback):
    """Keep the sweep report current: rewritten after every point, so it can be read mid-sweep.

    A point that failed before its ranks could write ``failure.json`` (a config error) gets one
    here, so the report shows its error too.
    """

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        from launcher.failures import FAILURE_FILE
        from launcher.report import write_report

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN or os.environ.get("SLURM_PROCID", "0") != "0":
            return  # a single run, or a Slurm task other than rank 0 of a point
        failure = Path(hydra_cfg.runtime.output_dir) / FAILURE_FILE
        if job_return.status == JobStatus.FAILED and not failure.exists():
            failure.write_text(json.dumps({"error": str(job_return._return_value)}))
        write_report(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from launcher.report import write_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            write_report(sweep_dir)
