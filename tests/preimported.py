"""A launcher that has already imported torch, for the tests: each ``python -m launcher`` a test
runs is a fork of one process per test worker that imported what every launch imports.

A launch spends most of its CPU time importing (torch, ``torch._dynamo`` for DDP, Hydra, the
trainer): about 9 CPU-seconds of a 10 CPU-second small run on the 2-core CI machine, paid again
by each of the suite's few hundred launches. Here it is paid once per worker. What a test sees is
still a real launcher process of its own: forked from the server, it takes the test's working
directory, environment, command line, standard streams and ``sys.path`` as a fresh ``python -m
launcher`` would have them, and runs the launcher's ``__main__`` as ``__main__``. Its environment
and command line are also written where ``/proc`` shows them (the memory they were started with,
padded for room by the server's own start), because the tests find a job's processes by the
``LAUNCHER_JOB_ID`` in ``/proc/PID/environ`` and ``launcher.cancel`` reads it too.

What cannot be made fresh is only what a module read at import: `Server.serves` sends a launch
that changes a variable read then (``PYTHON*``, ``TORCH*``, OpenMP's ...) to a fresh interpreter,
and `Server.serves_command` one that wraps the command or replaces ``python -m MODULE``.

The server's side: ``python -m tests.preimported SOCKET PADDING`` imports, says ``ready`` on its
stdout, and answers each connection (one packet: the request and the launch's stdout and stderr
as file descriptors) with the launch's pid, then with its exit status when it ends. It watches
its launches through pidfds and never starts a thread, so each fork has a single thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import IO, NoReturn

# What a launch imports (the launcher, the agent, the trainer its fork server preloads), and
# torch._dynamo, which DDP's constructor imports in every rank.
PREIMPORTED = (
    "torch", "torch.distributed", "torch._dynamo", "torch.multiprocessing", "torch.distributed.run",
    "torch.distributed.elastic.multiprocessing.api", "hydra", "hydra._internal.hydra",
    "hydra.core.utils", "omegaconf", "launcher.cli", "launcher.app", "launcher.warm", "trainer.train",
)
# Read when a module is imported (by Python itself, torch, OpenMP, MKL): a launch that sets one of
# these differently from the server's environment needs a fresh interpreter.
READ_AT_IMPORT = ("PYTHON", "LD_", "TORCH", "PYTORCH", "OMP_", "MKL_", "KMP_", "GLOO_", "NCCL_")
PADDING_VARIABLE = "PREIMPORTED_LAUNCHER_PADDING"
ENVIRONMENT_ROOM = 64 * 1024
COMMAND_LINE_ROOM = 16 * 1024
# A variable whose value is the launch's own and never read at import.
PER_LAUNCH = ("LAUNCHER_JOB_ID",)
_PR_SET_PDEATHSIG = 1


# --- the client: the test worker's side ------------------------------------------------------------

class Server:
    """One per test worker, started at its first launch: `run` forks a launcher from it."""

    def __init__(self, base_env: dict[str, str]) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="preimported-", dir="/tmp"))
        self.socket_path = str(self.directory / "socket")
        self.env = dict(base_env)
        self.log = self.directory / "server.log"
        # One OpenMP thread: with more, torch's import starts a thread, and a fork copies only one.
        env = {**base_env, "OMP_NUM_THREADS": "1", PADDING_VARIABLE: "x" * ENVIRONMENT_ROOM}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.preimported", self.socket_path, "x" * COMMAND_LINE_ROOM],
                cwd=self.directory, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        self._wait_ready(timeout_s=180)

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as waiting:
            waiting.register(self.process.stdout, selectors.EVENT_READ)
            ready = waiting.select(timeout_s) and self.process.stdout.readline() == b"ready\n"
        if not ready:
            told = self.log.read_text(errors="replace")[-3000:]
            self.stop()
            raise AssertionError(f"the pre-imported launcher did not start within {timeout_s}s:\n{told}")

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a fork of the server is the launch a fresh interpreter with ``env`` would be."""
        if self.process.poll() is not None:
            return False
        changed = {key for key in env.keys() | self.env.keys()
                   if key not in PER_LAUNCH and env.get(key) != self.env.get(key)}
        return len(_block(f"{key}={value}" for key, value in env.items())) <= ENVIRONMENT_ROOM \
            and not any(key.startswith(READ_AT_IMPORT) for key in changed)

    @staticmethod
    def serves_command(command: list[str]) -> bool:
        """Whether ``command`` is ``python -m MODULE ARGS`` with this interpreter and no option."""
        return command[:2] == [sys.executable, "-m"] and len(command) > 2 \
            and len(_block(command)) <= COMMAND_LINE_ROOM

    def run(self, command: list[str], cwd: Path, env: dict[str, str], timeout_s: float,
            ) -> subprocess.CompletedProcess:
        """``subprocess.run(command, capture_output=True, text=True)`` of ``python -m MODULE ARGS``
        (``command``; MODULE: ``launcher``, ``launcher.check``), with the same exit status and
        streams; a launch still running after ``timeout_s`` is killed and reported as
        ``subprocess.TimeoutExpired``."""
        request = {"argv": command, "cwd": str(cwd), "env": env}
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
            connection.connect(self.socket_path)
            socket.send_fds(connection, [json.dumps(request).encode()], [out.fileno(), err.fileno()])
            connection.settimeout(30)
            pid = json.loads(connection.recv(4096))["pid"]
            connection.settimeout(timeout_s)
            try:
                answer = connection.recv(4096)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                connection.settimeout(30)
                connection.recv(4096)
                raise subprocess.TimeoutExpired(command, timeout_s, _read(out), _read(err)) from None
            if not answer:
                raise AssertionError(f"the pre-imported launcher ended during a launch:\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")
            return subprocess.CompletedProcess(command, json.loads(answer)["returncode"], _read(out), _read(err))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


# --- the server ------------------------------------------------------------------------------------

def serve(socket_path: str) -> NoReturn:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # it ends with its test worker
    import importlib

    for module in PREIMPORTED:
        importlib.import_module(module)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        sys.exit(f"the imports started {threads - 1} other threads: a fork would not copy them")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_path)
    listener.listen()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    watching = selectors.DefaultSelector()
    watching.register(listener, selectors.EVENT_READ)
    launches: dict[int, tuple[int, socket.socket]] = {}  # pidfd: (pid, its connection)
    while True:
        for key, _ in watching.select():
            if key.fileobj is listener:
                connection, _ = listener.accept()
                data, fds, _, _ = socket.recv_fds(connection, 1 << 20, 2)
                own = [listener.fileno(), watching.fileno(), connection.fileno(),
                       *launches, *(c.fileno() for _, c in launches.values())]
                pid = os.fork()
                if pid == 0:
                    _launch(json.loads(data), fds, own)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                launches[pidfd] = (pid, connection)
                watching.register(pidfd, selectors.EVENT_READ)
                _send(connection, {"pid": pid})
            else:
                pidfd = int(key.fd)
                pid, connection = launches.pop(pidfd)
                watching.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                _send(connection, {"returncode": _returncode(status)})
                connection.close()


def _send(connection: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):  # the test is gone (killed at its timeout): the launch is still reaped
        connection.send(json.dumps(message).encode())


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _launch(request: dict, fds: list[int], server_fds: list[int]) -> NoReturn:
    """The forked child: become ``python -m MODULE ARGS`` as started in the request's directory
    with its environment, then run it."""
    code = 1
    try:
        for fd in server_fds:
            os.close(fd)
        stdin = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((stdin, 0), (fds[0], 1), (fds[1], 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _show_in_proc(request["argv"], request["env"])
        sys.path[0] = os.getcwd()  # as ``python -m`` puts it
        _, _, module, *args = request["argv"]
        sys.argv = ["-m", *args]
        tempfile.tempdir = None  # TMPDIR is the launch's
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = _exit_code(stop.code)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _block(items: Iterable[str]) -> bytes:
    """Strings as the kernel lays out a command line or an environment: each ends with a NUL."""
    return b"".join(os.fsencode(item) + b"\0" for item in items)


def _exit_code(code: object) -> int:
    """As the interpreter turns ``SystemExit(code)`` into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _show_in_proc(argv: list[str], env: dict[str, str]) -> None:
    """Write the launch's command line and environment over the server's, in the memory where
    ``/proc/PID/cmdline`` and ``/proc/PID/environ`` read them (``environ(7)``: they show what a
    process started with). The server's padding makes the room; the rest is filled with NULs."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    arg_start, arg_end, env_start, env_end = (int(field) for field in fields[45:49])
    for start, end, items in ((arg_start, arg_end, argv),
                              (env_start, env_end, [f"{key}={value}" for key, value in env.items()])):
        block = _block(items)
        if len(block) > end - start:  # `Server.serves` sends such a launch to a fresh interpreter
            raise RuntimeError(f"{len(block)} bytes do not fit in the {end - start} the server has")
        ctypes.memmove(start, block.ljust(end - start, b"\0"), end - start)


if __name__ == "__main__":
    serve(sys.argv[1])
