"""``-m hydra/launcher=slurm_submit``: a sweep on Slurm that submits every point and returns.

Hydra's submitit launcher (``hydra/launcher=slurm``, the default mode) submits the sweep's points
as one Slurm array job and then waits for every point's result, holding the terminal. This
launcher submits exactly as the plugin does (same executor, same parameters, same array job, same
pickled callable: every task runs the plugin's ``__call__``) and returns at once, printing each
point's job id, the sweep directory and where its report will be. (Hydra instantiates launchers
only from the ``hydra_plugins`` namespace package: the config names this class's subclass
``hydra_plugins.ddp_launcher.SubmitAndExitSlurmLauncher``, which adds nothing.)

The report needs nobody waiting: each point runs Hydra's ``run_job`` in its own Slurm job, and
with it the ``SweepReport`` callback's ``on_job_end``, which rewrites the sweep report as that
point ends (``launcher.report`` serialises the writers).

What Hydra's sweeper gets back: one ``JobReturn`` per point with status COMPLETED and no return
value (COMPLETED only in the sense that the point was handed to Slurm: the result is in the point's
directory, not here), so the basic sweeper ends with exit code 0. A sweeper that needs the results
to choose the next points (Optuna, Nevergrad, Ax) cannot work this way: any sweeper other than
Hydra's basic one is refused (one line, exit code 2) before anything is submitted.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf  # type: ignore[import-untyped]
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (  # type: ignore[import-untyped]
    SlurmLauncher,
)
from omegaconf import DictConfig, OmegaConf

from launcher.errors import ConfigError
from launcher.report import REPORT_NAME

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
NEEDS_RESULTS = ("hydra/launcher=slurm_submit submits the points and exits, so a sweeper that "
                 "needs their results (Optuna, Nevergrad, Ax) gets none: use hydra/launcher=slurm, "
                 "which waits for them")


class SubmitAndExitSlurmLauncher(SlurmLauncher):
    """Hydra's submitit Slurm launcher, without the wait for the points' results."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        sweeper = OmegaConf.select(config, "hydra.sweeper._target_")
        if sweeper != BASIC_SWEEPER:  # before the sweeper writes or submits anything
            from launcher.app import exit_on_config_error

            exit_on_config_error(ConfigError("hydra.sweeper", sweeper, NEEDS_RESULTS))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        jobs = self.submit(job_overrides, initial_job_idx)
        self.print_submitted(jobs, job_overrides, initial_job_idx)
        returns = []
        for overrides in job_overrides:
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            ret.return_value = None  # submitted, not finished: the point's result is in its directory
            returns.append(ret)
        return returns

    def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        """The plugin's ``launch()`` up to its ``executor.map_array``: the submitit jobs, not waited
        for. (hydra-submitit-launcher 1.2; ``tests/test_slurm_sweep_submit.py`` holds the submitted
        script to the plugin's.)"""
        import submitit

        assert self.config is not None
        assert len(job_overrides) > 0
        params = self.params
        init_keys = {"submitit_folder", "max_num_timeout"}
        init_params = {"folder": params["submitit_folder"]}
        init_params.update({f"{self._EXECUTOR}_{key}": value for key, value in params.items()
                            if key == "max_num_timeout"})
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in base else f"{self._EXECUTOR}_{key}": value
                                      for key, value in params.items() if key not in init_keys})

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = [(list(overrides), "hydra.sweep.dir", initial_job_idx + index,
                       f"job_id_for_{initial_job_idx + index}", Singleton.get_state())
                      for index, overrides in enumerate(job_overrides)]
        return list(executor.map_array(self, *zip(*job_params, strict=True)))

    def print_submitted(self, jobs: list[Any], job_overrides: Sequence[Sequence[str]],
                        initial_job_idx: int) -> None:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        array_ids = sorted({str(job.job_id).split("_")[0] for job in jobs})
        lines = [f"submitted {len(jobs)} sweep point(s) to Slurm (job {', '.join(array_ids)}); "
                 "not waiting for them:"]
        for index, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True)):
            lines.append(f"  point {initial_job_idx + index}: Slurm job {job.job_id}  "
                         f"{' '.join(filter_overrides(overrides))}")
        report = sweep_dir / REPORT_NAME
        quoted = shlex.quote(str(sweep_dir))
        lines += [
            f"  sweep dir: {sweep_dir} (point N in {sweep_dir / 'N'} once its job starts)",
            f"  report:    {report}.md (.csv, .png), rewritten as each point ends",
            f"  follow:    squeue -j {','.join(array_ids)}",
            f"             python -m launcher.status {quoted}/N",
            f"             python -m launcher.report {quoted}",
            f"  cancel:    scancel {' '.join(array_ids)}",
        ]
        print("\n".join(lines), flush=True)
