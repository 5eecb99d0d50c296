"""Entry point of every rank process: run the target and leave a record if it fails.

Users never decorate anything: whatever the target raises is written, with its traceback, host,
rank, attempt and a precise time, to ``$LAUNCHER_ERROR_DIR/rank_<RANK>.attempt_<N>.json``. The
launcher reads those records to name the rank that failed first. The process also asks the kernel
to kill it when its parent dies, so a launcher killed with SIGKILL leaves no rank behind.

Before the target runs, the rank's output is routed to its log file and the console
(``launcher.rank_output``), and a script's ``init_process_group()`` gets the job's timeouts.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import faulthandler
import functools
import importlib
import inspect
import json
import logging
import multiprocessing
import os
import runpy
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, NoReturn

from launcher.failures import CLEAN_EXIT_PREFIX, RankFailure
from launcher.local_store import rank_store_path, use_file_store_for_env_rendezvous
from launcher.rank_output import capture_rank_output
from launcher.ranks import rank_info
from launcher.workdir import search_working_directory_last

ERROR_DIR_ENV = "LAUNCHER_ERROR_DIR"
PARENT_PID_ENV = "LAUNCHER_PARENT_PID"
INIT_TIMEOUT_ENV = "LAUNCHER_INIT_TIMEOUT_S"
COLLECTIVE_TIMEOUT_ENV = "LAUNCHER_COLLECTIVE_TIMEOUT_S"
LOCAL_RANK_ARG_ENV = "LAUNCHER_LOCAL_RANK_ARG"
JOIN_SLACK_S = 2.0
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


def record_failure(error: BaseException, at: float | None = None) -> Path | None:
    """Write the failure record; its path, or None when there is nowhere to write it."""
    error_dir = os.environ.get(ERROR_DIR_ENV)
    if not error_dir:
        return None
    rank = os.environ.get("RANK", "?")
    record = {
        "rank": int(rank) if rank.isdigit() else rank,
        "local_rank": os.environ.get("LOCAL_RANK"),
        "node_rank": os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "time": time.time() if at is None else at,
        "restart": restarts(),
        "error": f"{type(error).__name__}: {error}",
        "traceback": _user_traceback(error),
    }
    path = Path(error_dir) / f"rank_{rank}.attempt_{record['restart']}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    except OSError:
        return None  # reporting must never mask the original error
    return path


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


def default_timeouts(report_fd: int) -> None:
    """Give ``init_process_group()`` calls that pass no ``timeout`` the job's two bounds.

    torch's default is one 30-minute timeout for joining and for every collective; a script run by
    the launcher gets ``init_timeout`` for the rendezvous and ``collective_timeout`` afterwards, as
    the built-in trainer does. A call that passes its own ``timeout`` keeps it. Groups created
    later (``new_group``) default to ``collective_timeout``.
    """
    init_s, collective_s = os.environ.get(INIT_TIMEOUT_ENV), os.environ.get(COLLECTIVE_TIMEOUT_ENV)
    if not (init_s and collective_s):
        return
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    collective = timedelta(seconds=float(collective_s))
    distributed_c10d.default_pg_timeout = collective
    if isinstance(getattr(distributed_c10d, "default_pg_nccl_timeout", None), timedelta):
        distributed_c10d.default_pg_nccl_timeout = collective
    original = distributed_c10d.init_process_group
    signature = inspect.signature(original)
    set_timeout = getattr(dist, "set_timeout", None) or distributed_c10d._set_pg_timeout

    @functools.wraps(original)
    def init_process_group(*args: Any, **kwargs: Any) -> None:
        own = signature.bind_partial(*args, **kwargs).arguments.get("timeout")
        if own is None:
            kwargs["timeout"] = timedelta(seconds=float(init_s))
        if connects_to_a_store():
            with joining_bounded_by(own or kwargs["timeout"], report_fd):
                original(*args, **kwargs)
        else:  # it hosts the store (or uses a file): torch's own timeout says who did not join
            original(*args, **kwargs)
        if own is None:
            set_timeout(collective)

    for module in (dist, distributed_c10d, sys.modules.get("torch.distributed.device_mesh")):
        if module is not None and getattr(module, "init_process_group", None) is original:
            # setattr: mypy allows no assignment to a module's attributes
            setattr(module, "init_process_group", init_process_group)  # noqa: B010


def connects_to_a_store() -> bool:
    """Whether this rank's ``env://`` rendezvous connects to a TCPStore elsewhere (torch retries
    such a connection), rather than hosting it (rank 0) or using the job's store file."""
    if rank_store_path() is not None:
        return False
    return os.environ.get("RANK") != "0" or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


@contextlib.contextmanager
def joining_bounded_by(timeout: timedelta, report_fd: int) -> Iterator[None]:
    """End this rank if joining the process group outlasts its timeout.

    torch's store client retries a timed-out connection once more, so a rank whose master never
    answers would wait up to twice the timeout; this keeps the promise of ``init_timeout``. The
    store call holds the GIL, so no Python thread or signal handler could act: faulthandler's
    watchdog (a C thread) ends the process, and the failure record written beforehand says why
    (it is replaced by the real error if the call raises, and removed if it succeeds). The
    watchdog's stack dump goes to ``report_fd`` (the rank's log file when output is captured).
    """
    seconds = timeout.total_seconds() + JOIN_SLACK_S
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    error = RuntimeError(f"rank {os.environ.get('RANK', '?')} could not join the process group at "
                         f"{where} within {timeout.total_seconds():g}s: is every rank started, and "
                         "is the master address reachable from here?")
    pending = record_failure(error, at=time.time() + seconds)
    faulthandler.dump_traceback_later(seconds, exit=True, file=report_fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    if pending is not None:
        pending.unlink(missing_ok=True)


@functools.cache
def _contract() -> ModuleType:
    """``trainer.contract``, imported on first use, which ``run_target`` makes before the user's
    code runs: not at this module's import, when (Python 3.10, no ``-P``) the working directory
    may still come first on ``sys.path`` and a user's ``trainer/`` there would be taken for ours;
    and not after the user's code, whose own ``trainer`` may then be the one imported."""
    return importlib.import_module("trainer.contract")


def restarts() -> int:
    return int(_contract().restarts())


def forget_our_trainer() -> None:
    """A user's script may have its own ``trainer`` module beside it, and ``import trainer`` must
    find that one, as ``python train.py`` would. This process imported ours (``trainer.contract``
    here; ``trainer.options`` in a Slurm task, which runs the script in the launcher's process):
    drop it from the module cache, so the script's import searches ``sys.path`` afresh. Our code
    that already holds those modules keeps them."""
    for module in [module for module in sys.modules if module == "trainer" or module.startswith("trainer.")]:
        del sys.modules[module]


def run_target(kind: str, name: str, args: list[str], parent: int | None = None,
               failure_reported_above: bool = True) -> None:
    """Run a module or script as ``__main__`` in this process, the way ``python`` would, or
    replace this process with an executable (``no_python``). ``parent``: the process whose death
    ends this one (default: the launcher, ``LAUNCHER_PARENT_PID``). ``failure_reported_above``:
    a launcher above this rank reports its failure (false for a Slurm task: this rank is the
    launcher, and reports its own)."""
    faulthandler.enable()
    if parent is None and os.environ.get(PARENT_PID_ENV):
        parent = int(os.environ[PARENT_PID_ENV])
    die_with_parent(parent)
    search_working_directory_last()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    file_only = capture_rank_output(rank, local_rank, restarts())
    if os.environ.get(LOCAL_RANK_ARG_ENV) == "1":
        args = [*args, f"--local_rank={local_rank}"]
    try:
        if kind == "exec":
            os.execvp(name, [name, *args])
        if not use_file_store_for_env_rendezvous():
            isolate_restarted_attempt()
        default_timeouts(2 if file_only is None else file_only)
        if (kind, name) != ("module", "trainer"):
            forget_our_trainer()
        # A fresh interpreter's default, however this rank started: a forked or spawned rank
        # inherits its starter's (forkserver, spawn), and a script's DataLoader workers would then
        # re-import everything, or come from a fork server of the rank's own that outlives a rank
        # killed with SIGKILL.
        multiprocessing.set_start_method(None, force=True)
        sys.argv = [name, *args]
        if kind == "module":
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        elif kind == "function":
            from launcher.api import run_function

            run_function(name)
        else:
            sys.path.insert(0, str(Path(name).parent))
            runpy.run_path(name, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            record_failure(stop)
        else:
            record_clean_exit()
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        record_failure(error)
        if not failure_reported_above:
            report_own_failure(error, rank)
        fail_fast(error, file_only)
    record_clean_exit()


def report_own_failure(error: BaseException, rank: int) -> None:
    """Log this rank's failure as a launcher would report it (rank, host, error, the end of its
    traceback), for a rank that no launcher above reports: a Slurm task, whose log is the job's
    output."""
    failure = RankFailure(rank=rank, host=socket.gethostname(), exit_code=None,
                          time=time.time(), error=f"{type(error).__name__}: {error}",
                          traceback=_user_traceback(error))
    logging.getLogger("launcher").error("%s", failure.describe(first=False))


def record_clean_exit() -> None:
    """Note when this rank finished without error: if its peers then fail because it is gone
    ("Connection closed by peer"), the launcher names this rank's early exit as the cause."""
    error_dir = os.environ.get(ERROR_DIR_ENV)
    if not error_dir:
        return
    rank = os.environ.get("RANK", "?")
    record = {"rank": int(rank) if rank.isdigit() else rank, "host": socket.gethostname(),
              "time": time.time(), "restart": restarts()}
    with contextlib.suppress(OSError):
        Path(error_dir, f"{CLEAN_EXIT_PREFIX}{rank}.attempt_{record['restart']}.json").write_text(json.dumps(record))


def fail_fast(error: BaseException, file_only: int | None = None) -> None:
    """Report like Python would, run atexit handlers, then exit 1 without C++ teardown.

    The traceback goes to the rank's log file only (``file_only``) when its output is captured:
    the launcher prints the failing rank's traceback once, in its report. A rank that raises usually
    still holds a process group; letting the interpreter finalize it can abort ("terminate called
    without an active exception") and turn exit code 1 into SIGABRT.
    """
    if file_only is None:
        sys.excepthook(type(error), error, error.__traceback__)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if file_only is not None:
        with contextlib.suppress(OSError):
            os.write(file_only, _user_traceback(error).encode(errors="replace"))
    os._exit(1)


# Blocked in the fork server (launcher.warm): Slurm signals every process of a step (scancel
# --signal, preemption's SIGTERM), and a server they ended would take the ranks with it (their
# parent-death signal) before the ranks could checkpoint. A rank unblocks them first thing.
FORK_SERVER_BLOCKED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def forget_fork_server() -> None:
    """Close this process's end of the fork server's lifeline and drop multiprocessing's record of
    the server (private fields), so that a later fork server in this process is a fresh one."""
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver  # private fields, not in its type
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
    server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
    server._inherited_fds = None


def detach_from_fork_server() -> None:
    """In a rank forked by the launcher's fork server (``launcher.warm``): let go of the server.

    The server ends when every holder of its lifeline has closed it; a rank (and the DataLoader
    workers it forks) must not hold it, or a launcher killed with SIGKILL would leave the server,
    and so the ranks, alive. The rank's parent is the server, so its parent-death signal follows
    the server (``run_target``'s ``parent``).
    """
    forget_fork_server()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SERVER_BLOCKED_SIGNALS)


def run_spawned_rank(local_rank: int, procs_per_node: list[int], node_rank: int,
                     master_addr: str, master_port: int, kind: str, name: str,
                     args: list[str], server_pid: int | None = None) -> None:
    """``torch.multiprocessing`` entry: become one rank, then run the target.

    Each rank gets its own session, as torchrun's workers do: with the kernel's autogroup
    scheduling, ranks sharing the launcher's session also share one slice of the CPU. The launcher
    (still the subreaper) stops them on Ctrl-C.
    """
    if server_pid is not None:
        detach_from_fork_server()
    os.setsid()
    os.environ.update(rank_info(procs_per_node, node_rank, local_rank).env())
    os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
    try:
        run_target(kind, name, args, parent=server_pid)
    finally:
        if server_pid is not None:
            # Forked, the rank leaves through multiprocessing's os._exit, which skips the exit
            # handlers a script registered (to flush or close what it writes); an interpreter runs
            # them at its end, after sys.exit or Ctrl-C too. A failure ran them in fail_fast.
            atexit._run_exitfuncs()


# torchrun's agent learns that a forked rank finished from the value its function returned, which
# torch's per-rank wrapper (``_wrap``) puts in the rank's queue, held in this local of the wrapper.
_AGENT_QUEUE_LOCAL = "ret_val_"


def _agent_wrapper_code() -> Any:
    from torch.distributed.elastic.multiprocessing import api

    return api._wrap.__code__


def agent_can_see_os_exit() -> bool:
    """Whether a forked rank can tell the agent it finished before ``os._exit(0)``
    (`report_finished_on_os_exit`): true for the torch versions whose wrapper keeps the queue in
    the local read there. Where not, scripts under the agent start in a fresh interpreter."""
    return _AGENT_QUEUE_LOCAL in _agent_wrapper_code().co_varnames


def report_finished_on_os_exit() -> bool:
    """Make ``os._exit(0)`` in this rank tell torchrun's agent that the rank finished.

    Scripts end with ``os._exit(0)`` to skip a slow teardown. A rank that is a fresh interpreter
    is then an exit code 0; a forked one counts as finished only once its return value is in its
    queue, and the agent would wait for it forever. Only this process reports (the DataLoader
    workers and output tee it forks inherit the hook), and it flushes its output first, as ``-u``
    made a fresh interpreter's rank do. Returns whether the hook is in place.
    """
    wrapper = _agent_wrapper_code()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code is not wrapper:
        frame = frame.f_back
    if frame is None:
        return False
    queue, rank_pid, real_exit = frame.f_locals[_AGENT_QUEUE_LOCAL], os.getpid(), os._exit

    def exit_reported(status: int) -> NoReturn:
        if os.getpid() == rank_pid:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            if status == 0:
                queue.put(None)
        real_exit(status)

    os._exit = exit_reported
    return True


def run_agent_rank(kind: str, name: str, args: list[str], server_pid: int) -> None:
    """torchrun's agent's entry for a rank forked by the fork server (its environment is set).

    The agent counts a function rank as finished when it returns: ``sys.exit(0)`` at the end of a
    script is such a return here, and so is ``os._exit(0)`` (`report_finished_on_os_exit`); any
    other exit code stays the process's exit code. A finished rank then leaves at once, as an
    interpreter would: waiting for its peers with its connections open, it would hide from them
    that it finished early (they would time out instead of being told that it went away).
    """
    detach_from_fork_server()
    os.setsid()
    export_node_rank()
    reports_exit = report_finished_on_os_exit()
    try:
        run_target(kind, name, args, parent=server_pid)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise
    if reports_exit:
        atexit._run_exitfuncs()
        os._exit(0)


def export_node_rank() -> None:
    """The agent calls the node's rank GROUP_RANK; scripts written for ``torchrun --node-rank``
    read NODE_RANK, so export it under both names."""
    if "GROUP_RANK" in os.environ:
        os.environ["NODE_RANK"] = os.environ["GROUP_RANK"]


def main(argv: list[str]) -> None:
    """``python -m launcher.child module NAME ARGS...`` or ``... script PATH ARGS...``: torchrun's
    workers start here with ``launcher.start_method=spawn``."""
    kind, name, *args = argv
    export_node_rank()
    run_target(kind, name, args)


if __name__ == "__main__":
    main(sys.argv[1:])
