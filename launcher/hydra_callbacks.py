"""Hydra callbacks: validate before Hydra creates the run directory; keep a sweep's report current."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class ValidateBeforeStart(Callback):
    """Check the config, and answer ``dry_run``, before Hydra creates or touches the run directory.

    A rejected run or a dry run must leave no trace: no new directory, no overwritten files.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from launcher import plan
        from launcher.app import validated_job

        HydraConfig.instance().set_config(config)
        from launcher.submit import SubmitPlan

        job = validated_job(config, Path(str(config.hydra.run.dir)).absolute())
        if job.dry_run:
            print(job.describe() if isinstance(job, SubmitPlan) else plan.describe(job))
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
