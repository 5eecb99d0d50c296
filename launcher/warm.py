"""Warm rank starts: every rank is a fork of one process that has already imported torch.

A rank started as a fresh interpreter spends 1.5–2 s importing torch (and the trainer) before the
job's first line runs, and every rank of a node pays it at once, competing for the same cores.
With ``launcher.start_method=forkserver`` (the default) the launcher starts Python's fork server
for the job as its first act, in the job's environment: a fresh, single-threaded interpreter
(never the launcher itself, whose torchrun agent runs in a thread) that imports the modules below
while the launcher is still preparing, and forks one rank per request. CUDA is never initialised
there, so each rank still chooses and initialises its own device.

Guarantees kept: each rank gets its own session and a parent-death signal (its parent is the
server, which exits when the launcher does, however it ends); the server is one of the launcher's
helpers, not a job process, and is stopped when the job is; scripts and modules still run as
``__main__`` in a namespace of their own, with their own ``sys.argv``.
``launcher.start_method=spawn`` starts each rank as a fresh interpreter instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from multiprocessing import forkserver, resource_tracker

from launcher.child import FORK_SERVER_BLOCKED_SIGNALS, forget_fork_server
from launcher.config import JobConfig
from launcher.supervise import fork_server_pid

WARM = "forkserver"
START_METHODS = (WARM, "spawn")
# Imported once by the server instead of once per rank. DistributedDataParallel's constructor
# imports torch._dynamo (about 1.5 s here, more than torch itself) even when nothing is compiled.
_PRELOAD = ("torch", "torch.distributed", "torch._dynamo", "launcher.child")
_PRELOAD_FOR_MODE = {"torchrun": ("torch.distributed.elastic.multiprocessing.api",)}
_PRELOAD_FOR_TRAINER = ("trainer.train",)


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
def warm_start(job: JobConfig) -> Iterator[None]:
    """Run the job's ranks from a fork server started now, in the environment set for the job;
    stopped at the end so that the next job (a sweep's next point, another ``launch()``) gets a
    server with its own environment."""
    if not starts_warm(job):
        yield
        return
    stop_server()  # one left by an earlier job in this process would hold that job's environment
    forkserver.set_forkserver_preload(preload_modules(job))
    with tempfile.TemporaryDirectory(prefix="launcher-warm-") as empty:
        # The server (``python -c``) searches its working directory first: started in an empty
        # one, a user's launcher.py or torch.py cannot replace what it preloads. Each rank then
        # takes the launcher's working directory and sys.path, as multiprocessing prepares it.
        here = os.getcwd()
        os.chdir(empty)
        resource_tracker.ensure_running()  # first: starting it unblocks SIGTERM on the way out
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SERVER_BLOCKED_SIGNALS)
        try:
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
