"""``python -m launcher [overrides]``: compose the Hydra config and launch the job.

Kept import-light: ``torch.multiprocessing``'s spawned children import the parent's main module.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

_PACKAGE_DIR = Path(__file__).resolve().parent
# Installed: conf/ ships as launcher/conf. Source checkout: conf/ sits beside launcher/.
CONFIG_DIR = next(
    (path for path in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf") if path.is_dir()),
    _PACKAGE_DIR / "conf",
)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from launcher.app import run

    return run(cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
