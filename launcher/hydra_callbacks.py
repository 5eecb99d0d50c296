"""Hydra callback that validates the config before Hydra creates the run directory."""

from __future__ import annotations

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
