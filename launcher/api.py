"""``launcher.launch(...)``: the command line's job from Python (a notebook, a program, a test).

The same keys as the command line, the same checks before anything starts, the same launch modes,
failure report and clean-up; the difference is how the outcome comes back: rank 0's return value
(or every rank's), or a ``LaunchFailed`` carrying the first failing rank and its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from launcher.cli import hydra_quote
from launcher.errors import ConfigError, LaunchFailed

FUNCTION_DIR = "function"
CALL_FILE = "call.pkl"
RESULTS_DIR = "results"


def hydra_value(value: Any) -> str:
    """A Python value as Hydra's override grammar reads it back (strings exactly)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return hydra_quote(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    raise TypeError(f"cannot pass {type(value).__name__} {value!r} as a config value")


def _overrides(target: str | Callable[..., Any], script_args: Sequence[str] | None,
               keys: Mapping[str, Any], overrides: Sequence[str]) -> list[str]:
    items = [f"{key}={hydra_value(value)}" for key, value in keys.items()]
    if isinstance(target, str):
        items.append(f"script={hydra_quote(target)}")
        items.append(f"script_args={hydra_value([str(arg) for arg in script_args or ()])}")
    elif script_args:
        raise TypeError("args= is for a script; pass a function's arguments positionally")
    return [*items, *overrides]


def _check_picklable(function: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    """Every rank imports the function by name: it must live in a module, not in ``__main__``."""
    if getattr(function, "__module__", None) == "__main__":
        raise TypeError(f"{function.__qualname__} is defined in __main__ (a notebook or the script "
                        "itself), which the ranks cannot import: define it in a module")
    try:
        return pickle.dumps((function, args))
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(f"the function and its arguments must be picklable for the ranks: {err}") from err


def _compose(overrides: list[str]) -> tuple[Any, Path]:
    """The job's config as ``python -m launcher`` would compose it, and its run directory."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import launcher.targets  # noqa: F401  (model=mypkg.MyNet: its config source)
    from launcher.__main__ import CONFIG_DIR
    from launcher.resolvers import run_stamp

    run_stamp.cache_clear()  # one process, several launches: each gets its own run directory
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="launcher"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    run_dir = Path(str(cfg.hydra.run.dir)).absolute()
    with open_dict(cfg):
        del cfg["hydra"]  # as hydra.main hands it to a task: Hydra's own node lives in HydraConfig
    return cfg, run_dir


def _log_to_stderr() -> None:
    log = logging.getLogger("launcher")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[launcher] %(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _raise_failure(run_dir: Path, code: int) -> None:
    from launcher.failures import FAILURE_FILE, RankFailure

    if code > 128 and code - 128 in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        raise KeyboardInterrupt(f"the job was stopped by {signal.Signals(code - 128).name}")
    record = run_dir / FAILURE_FILE
    failure = RankFailure(**json.loads(record.read_text())) if record.exists() else None
    raise LaunchFailed(failure.describe() if failure else f"the job failed with exit code {code}", failure)


def launch(target: str | Callable[..., Any], *function_args: Any, args: Sequence[str] | None = None,
           overrides: Sequence[str] = (), return_all: bool = False, **keys: Any) -> Any:
    """Run ``target`` on every rank and wait for the job.

    ``target`` is a script path (``args`` are its arguments, verbatim) or a picklable function
    called as ``target(*function_args)`` on every rank, after the rank's environment (RANK,
    WORLD_SIZE, MASTER_ADDR, ...) is set; it calls ``init_process_group()`` itself. ``keys`` are
    the command line's keys: ``gpus=2``, ``launcher="mp_spawn"``, ``**{"trainer.epochs": 3}``;
    ``overrides`` takes Hydra override strings as typed on the command line.

    Returns rank 0's return value (every rank's, in rank order, with ``return_all``; a script's
    is None). Raises ``ConfigError`` before anything starts for a bad value, ``LaunchFailed``
    naming the first failing rank with its traceback, ``KeyboardInterrupt`` when stopped.
    """
    from launcher import app
    from launcher.config import Target
    from launcher.launches import prepare_run_dir
    from launcher.local import LocalLaunch, launch_ranks

    call = None if isinstance(target, str) else _check_picklable(target, function_args)
    if call is None and function_args:
        raise TypeError("a script's arguments go in args=[...]")
    cfg, run_dir = _compose(_overrides(target, args, keys, overrides))
    checked = app.load_checked(cfg, run_dir)
    if not isinstance(checked, LocalLaunch):
        raise ConfigError("launcher", "slurm", "launch() runs the job on this machine; submit to "
                          "Slurm from the command line (python -m launcher launcher=slurm ...)")
    job = checked.job
    if call is not None:
        call_file = run_dir / FUNCTION_DIR / CALL_FILE
        job = dataclasses.replace(job, target=Target("function", str(call_file)))
    if job.dry_run:
        return LocalLaunch(job).describe()
    _log_to_stderr()
    prepare_run_dir(cfg, job)
    if call is not None:
        call_file.parent.mkdir(parents=True, exist_ok=True)
        call_file.write_bytes(call)
    code = launch_ranks(job)
    if code:
        _raise_failure(run_dir, code)
    if call is None:
        return None
    results = [pickle.loads((call_file.parent / RESULTS_DIR / f"rank_{rank}.pkl").read_bytes())
               for rank in range(job.world_size if return_all else 1)]
    return results if return_all else results[0]


def run_function(call_file: str) -> None:
    """In a rank: call the pickled function and leave its result for ``launch()`` to read."""
    with open(call_file, "rb") as file:
        function, function_args = pickle.load(file)
    result = function(*function_args)
    results = Path(call_file).parent / RESULTS_DIR
    results.mkdir(exist_ok=True)
    partial = results / f".rank_{os.environ.get('RANK', '0')}.{os.getpid()}.tmp"
    partial.write_bytes(pickle.dumps(result))
    os.replace(partial, results / f"rank_{os.environ.get('RANK', '0')}.pkl")
