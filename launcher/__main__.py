"""``python -m launcher [overrides] [flags] [SCRIPT args...]``: compose the Hydra config and launch
the job. The command line is read by ``launcher.cli`` first (torchrun's flags, a positional script,
--help, misspelt keys), which hands Hydra plain overrides.

Kept import-light: ``torch.multiprocessing``'s spawned children import the parent's main module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from launcher.cli import CommandLineError, help_text, parse_command_line
from launcher.errors import CONFIG_ERROR_EXIT_CODE

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


def _prog() -> str:
    """How the user ran us, for the usage line: ``python -m launcher`` or ``ddp-launch``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m launcher" if name in ("", "__main__.py", "-c") else name


def main(argv: list[str] | None = None) -> None:
    """Read the command line (``argv``, default ``sys.argv[1:]``), then run Hydra's app on it."""
    from launcher.child import search_working_directory_last

    search_working_directory_last()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        command = parse_command_line(args, config_dir=CONFIG_DIR)
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT_CODE)
    if command.show_help:
        print(help_text(CONFIG_DIR, _prog()))
        return
    if command.show_version:
        from launcher import __version__

        print(f"ddp-launcher {__version__}")
        return
    sys.argv = [sys.argv[0] if sys.argv else "launcher", *command.hydra_args]
    from launcher.supervise import exit_now_if_agent_stuck

    try:
        _main()
    except SystemExit as stop:
        exit_now_if_agent_stuck(stop.code)
        raise
    exit_now_if_agent_stuck(0)


if __name__ == "__main__":
    main()
