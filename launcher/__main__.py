"""``python -m launcher [overrides] [flags] [SCRIPT args...]``: compose the Hydra config and launch
the job. The command line is read by ``launcher.cli`` first (torchrun's flags, a positional script,
--help, misspelt keys), which hands Hydra plain overrides.

Kept import-light: ``torch.multiprocessing``'s spawned children import the parent's main module.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from omegaconf import DictConfig

from launcher.cli import CommandLineError, help_text, override_key, parse_command_line
from launcher.errors import CONFIG_ERROR_EXIT_CODE

_PACKAGE_DIR = Path(__file__).resolve().parent
# Installed: conf/ ships as launcher/conf. Source checkout: conf/ sits beside launcher/.
CONFIG_DIR = next(
    (path for path in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf") if path.is_dir()),
    _PACKAGE_DIR / "conf",
)


VERSION_BASE = "1.3"


def _task(cfg: DictConfig) -> float | None:
    from launcher.app import run

    return run(cfg)


_main = hydra.main(version_base=VERSION_BASE, config_path=str(CONFIG_DIR), config_name="config")(_task)


# Hydra flags that compose another config (or none, or another way): left to Hydra to report.
LEFT_TO_HYDRA = ("--info", "--shell-completion", "--hydra-help", "--experimental-rerun",
                 "--config-path", "--config-name", "--config-dir")


def _unknown_key(key: str, compose_without: Callable[[str], Any]) -> str:
    """``unknown key KEY``, with the key meant (or the keys there are) from the config composed
    without the override that names it."""
    from omegaconf import OmegaConf

    parent, _, name = key.rpartition(".")
    try:
        node = OmegaConf.select(compose_without(key), parent)
    except Exception:  # another override fails as well: this one is named first
        node = None
    if not OmegaConf.is_dict(node):
        return f"unknown key {key}"
    names = [str(child) for child in node]
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"unknown key {key}: did you mean {parent}.{close[0]}?"
    return f"unknown key {key}: {parent} has {', '.join(names)}"


def hydra_error_line(error: Exception, compose_without: Callable[[str], Any]) -> str:
    """What Hydra could not compose, in one line (Hydra prints it over 4 to 12)."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from launcher.targets import PLUGIN_GROUPS

    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        shown = [name for name in error.options if not name.startswith("_")]  # _loader: a base file
        plugin = ", or the dotted name of your own class (mypkg.MyNet)" if group in PLUGIN_GROUPS else ""
        return f"{group}={option}: no such option; available: {', '.join(shown)}{plugin}"
    if isinstance(error, OverrideParseException):
        reason = error.message.strip().splitlines()[0]
        url = re.search(r"https://\S+", error.message)
        return f"{error.override}: cannot parse it ({reason})" + (f"; see {url.group()}" if url else "")
    cause = error.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and "not in struct" in str(cause):
        return _unknown_key(str(cause.full_key), compose_without)
    lines = [line.strip().rstrip(".") for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def run_composed_once(overrides: list[str]) -> None:
    """One run, as ``hydra.main`` makes it, from a config composed once.

    ``hydra.main`` composes the config twice (the first time only to read ``hydra.mode``), and
    Hydra's own errors need a composition of their own to be reported in one line
    (`check_composition`): about 0.25 s each, on every run and every rejected config. Composing
    here, once, answers both; the run itself (callbacks, the run directory, logging, ``.hydra/``)
    is Hydra's ``run_job``, as in ``Hydra.run``."""
    from hydra import version
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path, run_and_report
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode

    version.setbase(VERSION_BASE)
    hydra_app = Hydra.create_main_hydra2(task_name="launcher",
                                         config_search_path=create_config_search_path(str(CONFIG_DIR)))
    overrides = [*overrides, "hydra.mode=RUN"]  # what hydra.main adds when the config names no mode

    def compose_without(key: str) -> Any:
        kept = [item for item in overrides if override_key(item) != key]
        return hydra_app.compose_config("config", kept, run_mode=RunMode.RUN)

    def run() -> None:
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name="config")
        job = run_job(hydra_context=HydraContext(config_loader=hydra_app.config_loader, callbacks=callbacks),
                      task_function=_task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None)
        callbacks.on_run_end(config=cfg, config_name="config", job_return=job)
        job.return_value  # noqa: B018  (raises the task's exception, which run_and_report reports)

    try:
        try:
            cfg = hydra_app.compose_config("config", overrides, run_mode=RunMode.RUN,
                                           with_log_configuration=True)
        except Exception as error:
            print(f"error: {hydra_error_line(error, compose_without)}", file=sys.stderr)
            sys.exit(CONFIG_ERROR_EXIT_CODE)
        run_and_report(run)
    finally:
        GlobalHydra.instance().clear()


def composes_once(hydra_args: list[str]) -> bool:
    """Whether `run_composed_once` can make this run: a plain run, no flag for Hydra (a sweep, a
    config directory, --cfg, ...) and no mode chosen by an override."""
    return not any(arg.startswith("-") or override_key(arg) == "hydra.mode" for arg in hydra_args)


def check_composition(hydra_args: list[str]) -> None:
    """Compose the config once, as Hydra is about to, so that Hydra's own errors (an unknown group
    option or key, an override that does not parse) are one line with exit code 2 like any other
    config error: inside ``hydra.main`` Hydra prints them itself and exits with code 1."""
    flags = {arg.partition("=")[0] for arg in hydra_args if arg.startswith("--")}
    if flags & set(LEFT_TO_HYDRA):
        return
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    overrides = [arg for arg in hydra_args if not arg.startswith("--")]
    mode = RunMode.MULTIRUN if "--multirun" in flags else RunMode.RUN
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=VERSION_BASE, job_name="launcher"):
        hydra_app = GlobalHydra.instance().hydra
        assert hydra_app is not None  # set by initialize_config_dir

        def compose_without(key: str) -> Any:
            kept = [item for item in overrides if override_key(item) != key]
            return hydra_app.compose_config("config", kept, run_mode=mode)

        try:
            hydra_app.compose_config("config", overrides, run_mode=mode)
        except Exception as error:
            print(f"error: {hydra_error_line(error, compose_without)}", file=sys.stderr)
            sys.exit(CONFIG_ERROR_EXIT_CODE)


def _prog() -> str:
    """How the user ran us, for the usage line: ``python -m launcher`` or ``ddp-launch``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m launcher" if name in ("", "__main__.py", "-c") else name


def main(argv: list[str] | None = None) -> None:
    """Read the command line (``argv``, default ``sys.argv[1:]``), then run Hydra's app on it."""
    from launcher.workdir import search_working_directory_last

    search_working_directory_last()  # before anything imports trainer (a user's trainer/ is no ours)
    import launcher.targets  # noqa: F401  (model=mypkg.MyNet: its config source, before Hydra composes)

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
    from launcher.supervise import exit_now_if_agent_stuck

    sys.argv = [sys.argv[0] if sys.argv else "launcher", *command.hydra_args]  # what Hydra's run reads
    try:
        if composes_once(command.hydra_args):
            run_composed_once(command.hydra_args)
        else:
            check_composition(command.hydra_args)
            _main()
    except SystemExit as stop:
        exit_now_if_agent_stuck(stop.code)
        raise
    exit_now_if_agent_stuck(0)


def command() -> NoReturn:
    """``python -m launcher`` and ``ddp-launch``: `main`, then the process ends without the
    interpreter's teardown (`supervise.leave`). In-process callers use `main`."""
    from launcher.supervise import leave
    from launcher.workdir import search_working_directory_last

    search_working_directory_last()  # before launcher.warm imports our trainer package
    from launcher import warm

    warm.fork_servers_from_this_process()
    try:
        main()
    except SystemExit as stop:
        leave(stop.code)
    leave(0)


if __name__ == "__main__":
    command()
