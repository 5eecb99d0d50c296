"""``python -m launcher [overrides]``: compose the Hydra config and launch the job.

Kept import-light: ``torch.multiprocessing``'s spawned children import the parent's main module.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent
# Installed: conf/ ships as launcher/conf. Source checkout: conf/ sits beside launcher/.
CONFIG_DIR = next(
    (path for path in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf") if path.is_dir()),
    _PACKAGE_DIR / "conf",
)


@functools.cache
def run_stamp() -> str:
    """The default run directory's name: the same for every task of a Slurm step and for its
    requeues (so ``resume=auto`` finds the checkpoint), else the start time."""
    if "SLURM_JOB_ID" in os.environ and ("SLURM_STEP_ID" in os.environ or "SLURM_STEPID" in os.environ):
        if "SLURM_ARRAY_JOB_ID" in os.environ:
            return f"slurm-{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return time.strftime("%Y-%m-%d/%H-%M-%S")


OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _main(cfg: DictConfig) -> None:
    from launcher.app import run

    run(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
