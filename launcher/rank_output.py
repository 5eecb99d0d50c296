"""Every rank's output: kept whole in ``RUN_DIR/logs/rank_<RANK>.log``, shown on the console with a
``[rank N]`` prefix.

One mechanism for every launch mode (torchrun's agent, ``torch.multiprocessing``, a Slurm task): the
rank, before it runs anything of the user's, forks a small tee process and points its own stdout and
stderr (file descriptors 1 and 2, so C++ and subprocess output is caught too) at pipes the tee
reads. torch's own log specs were not enough: they keep separate stdout/stderr files per local
rank and attempt, truncate them on restart, and exist in torchrun mode only.

The tee outlives the rank by design: it ends when the last writer (the rank, its DataLoader
workers) is gone, so the final lines of a rank killed by SIGKILL still reach the file. It ignores
the stop signals the launcher sends the job and is stdlib-only (it runs before torch is imported).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import cast

LOG_DIR_ENV = "LAUNCHER_LOG_DIR"
CONSOLE_RANKS_ENV = "LAUNCHER_CONSOLE_RANKS"  # "all" or comma-separated global ranks
CONSOLE_LOCAL_RANKS_ENV = "LAUNCHER_CONSOLE_LOCAL_RANKS"  # "all" or comma-separated local ranks
# The tee's console is a terminal: a rank deciding whether to draw a progress bar asks this, since
# its own stderr is now a pipe.
CONSOLE_IS_TERMINAL_ENV = "LAUNCHER_CONSOLE_IS_TERMINAL"
LOGS_SUBDIR = "logs"
_READ_SIZE = 65536
# A partial line (a progress bar, a prompt) is shown after this long without more output.
_PARTIAL_LINE_WAIT_S = 0.2
# Split after each line end; a carriage return (progress bar redraw) ends a segment too.
_SEGMENTS = re.compile(rb"(?<=\n)|(?<=\r)(?!\n)")


def log_file_name(rank: int | str) -> str:
    return f"rank_{rank}.log"


def ranks_filter(text: str) -> frozenset[int] | None:
    """``all`` (None) or a comma-separated list of ranks, as the launcher exports them."""
    if text.strip() in ("", "all"):
        return None
    return frozenset(int(item) for item in text.split(","))


def shown_on_console(rank: int, local_rank: int) -> bool:
    ranks = ranks_filter(os.environ.get(CONSOLE_RANKS_ENV, "all"))
    local_ranks = ranks_filter(os.environ.get(CONSOLE_LOCAL_RANKS_ENV, "all"))
    return (ranks is None or rank in ranks) and (local_ranks is None or local_rank in local_ranks)


@dataclass
class _ConsoleStream:
    """One of the rank's streams as the console shows it: whole lines, each with the rank's prefix."""

    fd: int  # the console's stdout or stderr
    prefix: bytes
    pending: bytes = b""
    at_line_start: bool = True
    pending_since: float = 0.0

    def feed(self, data: bytes) -> None:
        if not self.pending:
            self.pending_since = time.monotonic()
        *complete, self.pending = _SEGMENTS.split(self.pending + data)
        self._show(b"".join(self._prefixed(segment) for segment in complete if segment))

    def flush_partial(self, final: bool = False) -> None:
        """Show a partial line that has waited long enough (or everything, at the end)."""
        if not self.pending:
            return
        if final or time.monotonic() - self.pending_since >= _PARTIAL_LINE_WAIT_S:
            segment, self.pending = self.pending, b""
            self._show(self._prefixed(segment) + (b"\n" if final else b""))

    def _prefixed(self, segment: bytes) -> bytes:
        # Lines the trainer prefixed itself (its logger says "[rank N]") are not prefixed twice.
        if self.at_line_start and not segment.startswith(self.prefix.rstrip()):
            segment = self.prefix + segment
        self.at_line_start = segment.endswith((b"\n", b"\r"))
        return segment

    def _show(self, data: bytes) -> None:
        while data:
            try:
                written = os.write(self.fd, data)
            except OSError:
                return  # the console went away; the log file still gets everything
            data = data[written:]


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _drain(fd: int) -> bytes:
    """What is in the pipe right now, without waiting."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
    os.set_blocking(fd, True)
    return b"".join(chunks)


def _close_other_fds(keep: set[int]) -> None:
    """The tee must not hold the rank's sockets or its parent's pipes open."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _tee(log_fd: int, streams: dict[int, _ConsoleStream | None], file_only_fd: int) -> None:
    """Copy the rank's output to its log file and console until every writer has closed."""
    selector = selectors.DefaultSelector()
    for fd in (*streams, file_only_fd):
        selector.register(fd, selectors.EVENT_READ)
    open_fds = len(streams) + 1

    def copy(fd: int, data: bytes) -> None:
        _write_all(log_fd, data)
        console = streams.get(fd)
        if console is not None:
            console.feed(data)

    while open_fds:
        for key, _ in selector.select(timeout=_PARTIAL_LINE_WAIT_S):
            fd = key.fd
            data = os.read(fd, _READ_SIZE)
            if fd == file_only_fd and data:
                # Written after the rank flushed its streams: show what they still hold first.
                for stream_fd in streams:
                    if stream_fd in selector.get_map():
                        copy(stream_fd, _drain(stream_fd))
                _write_all(log_fd, data)
            elif data:
                copy(fd, data)
            else:
                selector.unregister(fd)
                open_fds -= 1
        for console in streams.values():
            if console is not None:
                console.flush_partial()
    for console in streams.values():
        if console is not None:
            console.flush_partial(final=True)


def capture_rank_output(rank: int, local_rank: int, attempt: int) -> int | None:
    """Route this process's stdout and stderr through a tee; the descriptor for text that goes to
    the log file only (the crash traceback, which the launcher prints once), or None when the
    launcher asked for no capture (``LAUNCHER_LOG_DIR`` unset)."""
    log_dir = os.environ.get(LOG_DIR_ENV)
    if not log_dir:
        return None
    os.makedirs(log_dir, exist_ok=True)
    log_fd = os.open(os.path.join(log_dir, log_file_name(rank)), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    _write_all(log_fd, f"==== attempt {attempt}: rank {rank} (local rank {local_rank}) on "
                       f"{socket.gethostname()}, pid {os.getpid()}, {stamp} ====\n".encode())
    show = shown_on_console(rank, local_rank)
    if show and os.isatty(2):
        os.environ[CONSOLE_IS_TERMINAL_ENV] = "1"
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    file_only_read, file_only_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:  # the tee
        try:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(signum, signal.SIG_IGN)
            _close_other_fds({1, 2, log_fd, out_read, err_read, file_only_read})
            prefix = f"[rank {rank}] ".encode()
            streams = {out_read: _ConsoleStream(1, prefix) if show else None,
                       err_read: _ConsoleStream(2, prefix) if show else None}
            _tee(log_fd, streams, file_only_read)
        finally:
            os._exit(0)
    for fd in (out_read, err_read, file_only_read, log_fd):
        os.close(fd)
    os.dup2(out_write, 1)
    os.dup2(err_write, 2)
    os.close(out_write)
    os.close(err_write)
    # Python chose block buffering for a non-terminal stdout at start-up; lines should reach the
    # console as they are printed. (Typed TextIO: at start-up they are TextIOWrapper; a replaced
    # stream without reconfigure raises AttributeError.)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            cast(io.TextIOWrapper, stream).reconfigure(line_buffering=True)
    return file_only_write
