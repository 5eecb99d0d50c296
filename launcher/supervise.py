"""Keep the job's process tree under the launcher's control until the very end.

The launcher becomes a child subreaper, so DataLoader workers or anything else a rank started are
re-parented to it (not to init) when their rank dies; when the job ends, every process still below
the launcher is sent SIGTERM and, after a grace period, SIGKILL. SIGTERM and SIGHUP to the launcher
become an ``Interrupted`` exception so the same clean-up path runs as for Ctrl-C. Under Slurm,
USR1/USR2 are passed on to the ranks.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NoReturn

_PR_SET_CHILD_SUBREAPER = 36
# SIGINT too: a shell starts background jobs with SIGINT ignored, and `kill -INT` must still stop us.
_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_FORWARDED = (signal.SIGUSR1, signal.SIGUSR2)
# SIGKILL is not refused, but a process in uninterruptible sleep dies only when it wakes: the
# launcher waits this long for that, so stopping a job stays bounded.
KILL_WAIT_S = 2.0
AGENT_THREAD_NAME = "torchrun-agent"
log = logging.getLogger("launcher")


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def _become_subreaper() -> None:
    # Not Linux: orphans go to init, as with any other launcher.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _live_children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if state not in ("Z", "X"):
            children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int | None = None) -> list[int]:
    """Live processes below ``pid`` (default: this process), from /proc."""
    if not os.path.isdir("/proc"):
        return []
    children = _live_children_map()
    found, stack = [], [os.getpid() if pid is None else pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _reap_zombies() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def fork_server_pid() -> int | None:
    """The job's fork server (``launcher.warm``), if one runs: multiprocessing keeps its process id
    in a private field."""
    from multiprocessing import forkserver

    return getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)


def _own_helpers() -> set[int]:
    """The launcher's own helper processes, which end when the launcher does.

    ``torch.multiprocessing`` starts multiprocessing's resource tracker as the launcher's child; it
    ignores SIGTERM by design and exits when our end of its pipe closes. The fork server that the
    ranks come from is stopped after them (``launcher.warm``); the ranks below it are job processes.
    """
    from multiprocessing import resource_tracker

    tracker_pid = getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None)
    return {pid for pid in (tracker_pid, fork_server_pid()) if pid}


def job_processes() -> list[int]:
    helpers = _own_helpers()
    return [pid for pid in descendants() if pid not in helpers]


def kill_descendants(grace_s: float) -> list[int]:
    """SIGTERM every job process below us, SIGKILL what is left after ``grace_s``."""
    leftovers = job_processes()
    if not leftovers:
        return []
    _signal_all(leftovers, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap_zombies()
        if not job_processes():
            return leftovers
        time.sleep(0.05)
    deadline = time.monotonic() + KILL_WAIT_S
    while (alive := job_processes()) and time.monotonic() < deadline:
        _signal_all(alive, signal.SIGKILL)
        _reap_zombies()
        time.sleep(0.05)
    if alive:  # e.g. stuck in uninterruptible I/O: the kernel ends them when that returns
        log.error("processes still alive %.0f s after SIGKILL: %s", KILL_WAIT_S, alive)
    return leftovers


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _forward(signum: int, _frame: object) -> None:
    _signal_all(job_processes(), signum)


@contextlib.contextmanager
def supervised(grace_s: float) -> Iterator[None]:
    """Run a job so that no process it started outlives it, however it ends."""
    _become_subreaper()
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in _HANDLED}
    if "SLURM_JOB_ID" in os.environ:
        # Slurm's "time limit near" signals (USR1 from our templates, USR2 from submitit) would
        # kill the launcher by default; the ranks act on them (checkpoint, requeue), so pass them on.
        previous.update({signum: signal.signal(signum, _forward) for signum in _FORWARDED})
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        kill_descendants(grace_s)
        _reap_zombies()


def run_forwarding_signals(command: list[str]) -> int:
    """Run ``command`` as a child and pass Slurm's stop signals on to it; its exit code.

    For a wrapper process whose own handlers (submitit's) would requeue the job on USR2 before the
    ranks have written their checkpoint: the ranks decide, this process only relays.
    """
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (*_FORWARDED, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_now_if_agent_stuck(code: object) -> None:
    """Leave at once when torchrun's agent thread is still blocked in C++ (a rendezvous given up
    on, or Ctrl-C during one): the interpreter's teardown would destroy its C++ objects under it
    and abort ("terminate called without an active exception"), turning exit code 1 into SIGABRT.
    Everything of the job is stopped and reported by then."""
    import threading

    if any(thread.name == AGENT_THREAD_NAME and thread.is_alive() for thread in threading.enumerate()):
        leave(code)


def leave(code: object) -> NoReturn:
    """End the process with ``code`` (a ``SystemExit`` code) once the job is over: exit handlers
    run and output is flushed, but the interpreter's teardown is skipped. With torch loaded it
    costs the launcher about half a second on every run, and nothing is left for it to do."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    _reap_zombies()  # ranks the stopped fork server had not reaped: not left to init
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
