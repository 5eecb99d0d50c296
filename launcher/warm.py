"""Warm rank starts: every rank is a fork of one process that has already imported torch.

A rank started as a fresh interpreter spends 1.5–2 s importing torch (and the trainer) before the
job's first line runs, and every rank of a node pays it at once, competing for the same cores.
With ``launcher.start_method=forkserver`` (the default) the launcher starts Python's fork server
for the job, in the job's environment: a single-threaded process that imports the modules below
while the launcher is still preparing, and forks one rank per request. CUDA is never initialised
there, so each rank still chooses and initialises its own device.

Started from the command line (``python -m launcher``, ``ddp-launch``), the server is a fork of the
launcher, taken after the launcher's own ``import torch`` (its agent or ``torch.multiprocessing``
needs torch anyway) and before any other thread starts: torch is imported once per launch instead
of twice, about 2 CPU-seconds less. The server first puts back what a fresh interpreter has and
the launcher changed (``_as_a_fresh_interpreter``), so a rank cannot tell the difference.
Elsewhere the server is a fresh interpreter, started as multiprocessing starts it: from a user's
own process (``launcher.launch()``), where the launcher may have touched CUDA (a machine with GPU
device nodes, whose count it asks CUDA for), where another thread runs (one a sweep's earlier job
left), or where multiprocessing's server is not the one this was written against.

Guarantees kept: each rank gets its own session and a parent-death signal (its parent is the
server, which exits when the launcher does, however it ends); the server is one of the launcher's
helpers, not a job process, and is stopped when the job is; scripts and modules still run as
``__main__`` in a namespace of their own, with their own ``sys.argv``.
``launcher.start_method=spawn`` starts each rank as a fresh interpreter instead.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import socket
import sys
import traceback
import weakref
from collections.abc import Iterator
from multiprocessing import connection, forkserver, resource_tracker, util
from typing import Any, NoReturn

from launcher.child import FORK_SERVER_BLOCKED_SIGNALS, forget_fork_server
from launcher.config import JobConfig, has_gpu_device_nodes
from launcher.scratch import Scratch
from launcher.supervise import fork_server_pid

WARM = "forkserver"
START_METHODS = (WARM, "spawn")
# Imported once by the server instead of once per rank. DistributedDataParallel's constructor
# imports torch._dynamo (about 1.5 s here, more than torch itself) even when nothing is compiled.
_PRELOAD = ("torch", "torch.distributed", "torch._dynamo", "launcher.child")
_PRELOAD_FOR_MODE = {"torchrun": ("torch.distributed.elastic.multiprocessing.api",)}
_PRELOAD_FOR_TRAINER = ("trainer.train",)
# The server's socket is made in the job's scratch directory (TMPDIR/launcher-XXXXXXXX/
# listener-XXXXXXXX); Linux's limit for a socket's path, without its final NUL.
_MAX_SOCKET_PATH = 107
log = logging.getLogger("launcher")
# What a fork of this process may serve: the command-line launcher, whose state is its own.
_fork_allowed = False


def starts_warm(job: JobConfig) -> bool:
    """Whether this job's ranks are forked from the fork server.

    Not an executable (``no_python``) under torchrun's agent: it replaces the forked rank, whose
    exit the agent would not count as finished. A script under the agent is forked only where the
    agent can learn that it ended with ``os._exit(0)`` (``child.agent_can_see_os_exit``).
    """
    return job.mode.start_method == WARM and (job.mode.name != "torchrun" or job.target.kind != "exec")


def preload_modules(job: JobConfig) -> list[str]:
    modules = [*_PRELOAD, *_PRELOAD_FOR_MODE.get(job.mode.name, ())]
    if job.target.is_trainer:
        modules.extend(_PRELOAD_FOR_TRAINER)
    return modules


@contextlib.contextmanager
def warm_start(job: JobConfig, scratch: Scratch) -> Iterator[None]:
    """Run the job's ranks from a fork server started now, in the environment set for the job;
    stopped at the end so that the next job (a sweep's next point, another ``launch()``) gets a
    server with its own environment. Its socket and working directory are in the job's
    ``scratch`` directory (`launcher.scratch`)."""
    if not starts_warm(job):
        yield
        return
    stop_server()  # one left by an earlier job in this process would hold that job's environment
    socket_path_bytes = len(os.fsencode(scratch.directory / "listener-12345678"))
    if socket_path_bytes > _MAX_SOCKET_PATH:
        log.warning("TMPDIR=%s is too long for the fork server's socket (%d bytes in all, at most %d): "
                    "the ranks start as fresh interpreters; a shorter TMPDIR starts them warm",
                    scratch.directory.parent, socket_path_bytes, _MAX_SOCKET_PATH)
        yield
        return
    preload = preload_modules(job)
    forkserver.set_forkserver_preload(preload)
    fork_here = _server_may_be_forked()
    # The server (``python -c``) searches its working directory first: started in an empty
    # one, a user's launcher.py or torch.py cannot replace what it preloads. Each rank then
    # takes the launcher's working directory and sys.path, as multiprocessing prepares it.
    here = os.getcwd()
    os.chdir(scratch.cwd)
    resource_tracker.ensure_running()  # first: starting it unblocks SIGTERM on the way out
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SERVER_BLOCKED_SIGNALS)
    try:
        if fork_here:
            _fork_server(preload)
        else:
            forkserver.ensure_running()  # returns at once: the server imports while the launcher works
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.chdir(here)
    try:
        yield
    finally:
        stop_server()


def stop_server() -> None:
    """End the server at once: it holds nothing to save, and its interpreter's teardown with torch
    loaded would cost the job's end about a second."""
    pid = fork_server_pid()
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # already reaped with the job's processes
        os.waitpid(pid, 0)
    address = getattr(forkserver._forkserver, "_forkserver_address", None)
    if isinstance(address, str) and not address.startswith("\0"):
        with contextlib.suppress(OSError):
            os.unlink(address)
    forget_fork_server()


def fork_servers_from_this_process() -> None:
    """Called by the command-line entry point: this process is the launcher and nothing else, so a
    fork of it can serve ranks once it has put back what a fresh interpreter has."""
    global _fork_allowed
    _fork_allowed = True


def _server_may_be_forked() -> bool:
    """Whether this process may fork the job's server (the module's docstring); where it may, it
    has imported torch, the import the server would otherwise repeat."""
    server_fields = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid")
    if not (_fork_allowed
            and not has_gpu_device_nodes()
            and list(inspect.signature(forkserver.main).parameters)
            == ["listener_fd", "alive_r", "preload", "main_path", "sys_path"]
            and all(hasattr(forkserver._forkserver, name) for name in server_fields)):
        return False
    import torch  # noqa: F401

    return _single_threaded()


def _single_threaded() -> bool:
    """No other thread, Python's or native (a C++ store's, an agent's still in C++): a fork copies
    only the calling thread, and a lock another one held would stay locked in the server."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _fork_server(preload: list[str]) -> None:
    """Start the job's fork server as a fork of this process, recorded where multiprocessing
    records the one it starts (private fields, as ``ensure_running`` sets them)."""
    record: Any = forkserver._forkserver
    sys.stdout.flush()  # or the server would write the launcher's buffered output a second time
    sys.stderr.flush()
    with socket.socket(socket.AF_UNIX) as listener:
        address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()  # the launcher holds the write end; the server ends at its EOF
        pid = os.fork()
        if pid == 0:
            _serve(listener.fileno(), alive_r, alive_w, preload)
        os.close(alive_r)
    record._forkserver_address, record._forkserver_alive_fd, record._forkserver_pid = address, alive_w, pid


def _serve(listener_fd: int, alive_r: int, alive_w: int, preload: list[str]) -> NoReturn:
    """The forked server's whole life: it never returns into the launcher's code."""
    code = 0
    try:
        os.close(alive_w)
        _as_a_fresh_interpreter()
        forkserver.main(listener_fd, alive_r, preload)
    except SystemExit:  # the launcher closed the lifeline: every client is gone
        pass
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _as_a_fresh_interpreter() -> None:
    """Put back, in the forked server, what a fresh ``python -c`` would have and the launcher
    changed: the ranks it forks start from here.

    Logging: the launcher's handlers (its console prefix, launcher.log) are closed and removed,
    levels are Python's defaults (torch's own loggers, configured by its import, are kept). Hydra:
    no global app and no run config, so a rank's own ``@hydra.main`` starts as it would alone.
    Signal handlers: Python's defaults. ``sys.argv``: a ``-c`` program's. The launcher's pending
    clean-ups (``weakref.finalize``: its temporary directories, the run's failure records) are its
    own: a rank running exit handlers, as an interpreter does, would otherwise delete them.
    """
    for cleanup in list(weakref.finalize._registry):  # type: ignore[attr-defined]
        if getattr(cleanup._registry[cleanup].func, "__module__", "").split(".")[0] != "torch":
            cleanup.detach()
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger) or logger.name.split(".")[0] == "torch":
            continue
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        if logger is logging.getLogger():
            logger.setLevel(logging.WARNING)
        else:
            logger.setLevel(logging.NOTSET)
            logger.propagate, logger.disabled = True, False
    logging.disable(logging.NOTSET)
    if "hydra" in sys.modules:
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    for signum in signal.valid_signals():
        current = signal.getsignal(signum)
        if callable(current) and current is not signal.default_int_handler:
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["-c"]
