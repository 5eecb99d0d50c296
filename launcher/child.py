"""Entry point of every rank process: run the target and leave a record if it fails.

Users never decorate anything: whatever the target raises is written, with its traceback, host,
rank, attempt and a precise time, to ``$LAUNCHER_ERROR_DIR/rank_<RANK>.attempt_<N>.json``. The
launcher reads those records to name the rank that failed first. The process also asks the kernel
to kill it when its parent dies, so a launcher killed with SIGKILL leaves no rank behind.
"""

from __future__ import annotations

import atexit
import ctypes
import faulthandler
import importlib
import json
import os
import runpy
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from launcher.ranks import rank_info

ERROR_DIR_ENV = "LAUNCHER_ERROR_DIR"
PARENT_PID_ENV = "LAUNCHER_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None) -> None:
    """Linux: SIGKILL this process when the process that started it exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent died before the request above took effect


def _user_traceback(error: BaseException) -> str:
    """The traceback without the launcher's own frames (this module and runpy)."""
    tb = error.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__ or "runpy" in tb.tb_frame.f_code.co_filename
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def attempt_number() -> int:
    """How many times this job was started over before: torchrun restarts plus Slurm requeues
    (both count under a requeued ``slurm_task=node`` job), as the trainer's DistEnv counts them."""
    return sum(int(os.environ.get(key) or 0) for key in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"))


def record_failure(error: BaseException) -> None:
    error_dir = os.environ.get(ERROR_DIR_ENV)
    if not error_dir:
        return
    rank = os.environ.get("RANK", "?")
    record = {
        "rank": int(rank) if rank.isdigit() else rank,
        "local_rank": os.environ.get("LOCAL_RANK"),
        "node_rank": os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "time": time.time(),
        "restart": attempt_number(),
        "error": f"{type(error).__name__}: {error}",
        "traceback": _user_traceback(error),
    }
    path = Path(error_dir) / f"rank_{rank}.attempt_{record['restart']}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    except OSError:
        pass  # reporting must never mask the original error


def isolate_restarted_attempt() -> None:
    """Give a restarted torchrun attempt its own namespace in the agent's store.

    torchrun hands restarted workers the agent's store, which still holds the first attempt's keys
    (among them the socket addresses of dead ranks), so ``init_process_group`` connects to ghosts
    and fails or hangs (pytorch#135712; still so in torch 2.15). Prefixing every ``env://`` store
    with the attempt number fixes it for the trainer and for users' scripts alike. It replaces
    torch's registered ``env`` handler, a private table: if that ever moves, restarts are left as
    torch does them, and the restart test says so.
    """
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    from torch.distributed import PrefixStore

    # ``import torch.distributed.rendezvous as m`` would bind the function of that name.
    rendezvous = importlib.import_module("torch.distributed.rendezvous")

    handlers = getattr(rendezvous, "_rendezvous_handlers", None)
    if not isinstance(handlers, dict) or "env" not in handlers:
        return
    env_handler = handlers.pop("env")

    def per_attempt_env_handler(url: str, **kwargs: object):  # noqa: ANN202 (a generator, as torch's)
        for store, rank, world_size in env_handler(url, **kwargs):
            yield PrefixStore(f"launcher_attempt_{attempt}", store), rank, world_size

    rendezvous.register_rendezvous_handler("env", per_attempt_env_handler)


def run_target(kind: str, name: str, args: list[str]) -> None:
    """Run a module or script as ``__main__`` in this process, the way ``python`` would."""
    faulthandler.enable()
    parent = os.environ.get(PARENT_PID_ENV)
    die_with_parent(int(parent) if parent else None)
    isolate_restarted_attempt()
    sys.argv = [name, *args]
    try:
        if kind == "module":
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, str(Path(name).parent))
            runpy.run_path(name, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            record_failure(stop)
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        record_failure(error)
        fail_fast(error)


def fail_fast(error: BaseException) -> None:
    """Report like Python would, run atexit handlers, then exit 1 without C++ teardown.

    A rank that raises usually still holds a process group; letting the interpreter finalize it
    can abort ("terminate called without an active exception") and turn exit code 1 into SIGABRT.
    """
    sys.excepthook(type(error), error, error.__traceback__)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def run_spawned_rank(local_rank: int, procs_per_node: list[int], node_rank: int,
                     master_addr: str, master_port: int, kind: str, name: str,
                     args: list[str]) -> None:
    """``torch.multiprocessing`` entry: become one rank, then run the target.

    Each rank gets its own session, as torchrun's workers do: with the kernel's autogroup
    scheduling, ranks sharing the launcher's session also share one slice of the CPU. The launcher
    (still the parent, still the subreaper) stops them on Ctrl-C.
    """
    os.setsid()
    os.environ.update(rank_info(procs_per_node, node_rank, local_rank).env())
    os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
    run_target(kind, name, args)


def main(argv: list[str]) -> None:
    """``python -m launcher.child module NAME ARGS...`` or ``... script PATH ARGS...``.

    torchrun's workers start here. The agent calls the node's rank GROUP_RANK; scripts written for
    ``torchrun --node-rank`` read NODE_RANK, so export it under both names.
    """
    kind, name, *args = argv
    if "GROUP_RANK" in os.environ:
        os.environ["NODE_RANK"] = os.environ["GROUP_RANK"]
    run_target(kind, name, args)


if __name__ == "__main__":
    main(sys.argv[1:])
