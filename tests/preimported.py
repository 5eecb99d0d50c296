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

A launch the tests start in the background (`Server.start`) is a `Forked`, the part of
``subprocess.Popen`` they use, in a session of its own where asked. The wrappers the tests put in
front of a command to run it on a node of their own network namespaces (``ip netns exec``, an own
hostname, ``env``) are done by the fork itself (`unwrap`), as those programs do them.

What cannot be made fresh is only what a module read at import: `Server.serves` sends a launch
that changes a variable read then (``PYTHON*``, ``TORCH*``, OpenMP's ...) to a fresh interpreter,
and one whose command is anything else than ``python -m MODULE`` or ``python -c CODE`` behind
those wrappers.

The server's side: ``python -m tests.preimported SOCKET PADDING`` imports, says ``ready`` on its
stdout, and answers each connection (one packet: the request and the launch's stdout and stderr
as file descriptors) with the launch's pid, then with its exit status when it ends. It watches
its launches through pidfds and never starts a thread, so each fork has a single thread.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import importlib.machinery
import io
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

from tests.netns import OWN_HOSTNAME

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
# For what ``ip netns exec`` and ``unshare --uts`` do (sched.h, sys/mount.h).
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
_MS_RDONLY, _MS_BIND, _MS_REC, _MS_SLAVE, _MNT_DETACH = 0x1, 0x1000, 0x4000, 0x80000, 2


# --- the client: the test worker's side ------------------------------------------------------------

class Server:
    """One per test worker, started at its first launch: `run` and `start` fork a launch from it."""

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

    def serves(self, command: list[str], env: dict[str, str]) -> bool:
        """Whether a fork of the server is the launch a fresh interpreter would be."""
        return self._placed(command, env) is not None

    def _placed(self, command: list[str], env: dict[str, str],
                ) -> tuple[list[str], dict[str, str], dict[str, str]] | None:
        """`unwrap`'s command, environment and place, or None where a fork would not be the same
        launch: a server that has ended, a variable read at import changed, a command other than
        ``python -m MODULE ARGS`` or ``python -c CODE ARGS`` (behind the wrappers `unwrap` knows),
        or more than the room the server made."""
        placed = unwrap(command, env)
        if self.process.poll() is not None or placed is None:
            return None
        argv, env, _ = placed
        changed = {key for key in env.keys() | self.env.keys()
                   if key not in PER_LAUNCH and env.get(key) != self.env.get(key)}
        if any(key.startswith(READ_AT_IMPORT) for key in changed) \
                or len(_block(f"{key}={value}" for key, value in env.items())) > ENVIRONMENT_ROOM \
                or len(_block(argv)) > COMMAND_LINE_ROOM:
            return None
        return placed

    def start(self, command: list[str], cwd: Path, env: dict[str, str], new_session: bool = False,
              ) -> Forked:
        """``subprocess.Popen(command, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, text=True,
        start_new_session=new_session)`` as a fork of the server (`serves` must say yes)."""
        placed = self._placed(command, env)
        if placed is None:
            raise ValueError(f"not a launch the pre-imported launcher can fork: {command}")
        argv, env, place = placed
        request = {"argv": argv, "cwd": str(cwd), "env": env, "new_session": new_session, **place}
        (out, out_end), (err, err_end) = os.pipe(), os.pipe()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            connection.connect(self.socket_path)
            socket.send_fds(connection, [json.dumps(request).encode()], [out_end, err_end])
        finally:
            os.close(out_end)
            os.close(err_end)
        return Forked(command, connection, out, err, self.log)

    def run(self, command: list[str], cwd: Path, env: dict[str, str], timeout_s: float,
            ) -> subprocess.CompletedProcess:
        """``subprocess.run(command, capture_output=True, text=True)``, with the same exit status
        and streams; a launch still running after ``timeout_s`` is killed and reported as
        ``subprocess.TimeoutExpired``."""
        launch = self.start(command, cwd, env)
        try:
            out, err = launch.communicate(timeout_s)
        except subprocess.TimeoutExpired:
            launch.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):  # a process it left may hold the pipes
                launch.communicate(30)
            raise subprocess.TimeoutExpired(command, timeout_s, *launch.output()) from None
        return subprocess.CompletedProcess(command, launch.returncode, out, err)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


class Forked:
    """A launch forked from the server, as the part of `subprocess.Popen` (with ``stdout=PIPE,
    stderr=PIPE, text=True``) the tests use: ``pid``, ``returncode``, ``poll``, ``wait``,
    ``communicate`` (which, as Popen's, waits until every process that holds the pipes has closed
    them), ``send_signal``, ``kill``, ``stdout.read()`` and ``stderr.read()``. Signals go through
    a pidfd, so they never reach another process that took the pid after the server reaped the
    launch. The pipes are read whenever it waits, so a launch never blocks on a full pipe."""

    def __init__(self, args: list[str], connection: socket.socket, out: int, err: int,
                 server_log: Path) -> None:
        self.args = args
        self.returncode: int | None = None
        self._connection, self._server_log = connection, server_log
        self._out, self._err = out, err
        self._read: dict[int, bytearray] = {out: bytearray(), err: bytearray()}
        self._open = {out, err}
        connection.settimeout(30)
        self.pid: int = json.loads(connection.recv(4096))["pid"]
        try:
            self._pidfd: int | None = os.pidfd_open(self.pid)
        except ProcessLookupError:  # already ended and reaped: its status is on the way
            self._pidfd = None

    @property
    def stdout(self) -> io.StringIO:
        """As Popen's ``stdout``: ``read()`` returns all of it, once every writer has closed it."""
        return self._to_end(self._out)

    @property
    def stderr(self) -> io.StringIO:
        return self._to_end(self._err)

    def _to_end(self, fd: int) -> io.StringIO:
        self._follow(lambda: fd not in self._open, None)
        return io.StringIO(self._read[fd].decode(errors="replace"))

    def output(self) -> tuple[str, str]:
        """What the launch has written so far, to its stdout and its stderr."""
        return self._read[self._out].decode(errors="replace"), self._read[self._err].decode(errors="replace")

    def poll(self) -> int | None:
        self._follow(lambda: False, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._follow(lambda: self.returncode is not None, timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0, *self.output())
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        if not self._follow(lambda: self.returncode is not None and not self._open, timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0, *self.output())
        return self.output()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _follow(self, done: Callable[[], bool], timeout: float | None) -> bool:
        """Read the pipes and the exit status as they come until ``done()``; False if ``timeout``
        seconds passed first (0: only what is there now)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as waiting:
            for fd in self._open:
                waiting.register(fd, selectors.EVENT_READ)
            if self.returncode is None:
                waiting.register(self._connection, selectors.EVENT_READ)
            while not done():
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = waiting.select(remaining)
                if not ready:
                    return timeout == 0 and done()
                for key, _ in ready:
                    if key.fileobj is self._connection:
                        waiting.unregister(self._connection)
                        self._ended(self._connection.recv(4096))
                        continue
                    fd = int(key.fd)
                    data = os.read(fd, 1 << 16)
                    self._read[fd] += data
                    if not data:
                        waiting.unregister(fd)
                        os.close(fd)
                        self._open.discard(fd)
        return True

    def _ended(self, answer: bytes) -> None:
        if not answer:
            raise AssertionError(f"the pre-imported launcher ended during a launch:\n"
                                 f"{self._server_log.read_text(errors='replace')[-3000:]}")
        self.returncode = json.loads(answer)["returncode"]
        self._connection.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __del__(self) -> None:
        for fd in self._open:
            os.close(fd)


def unwrap(command: list[str], env: dict[str, str],
           ) -> tuple[list[str], dict[str, str], dict[str, str]] | None:
    """The ``python -m MODULE ARGS`` (or ``python -c CODE ARGS``) command, environment and place
    of a launch behind the wrappers the tests put in front of it (any of them, in this order:
    ``ip netns exec NS``, `OWN_HOSTNAME` HOST, ``env NAME=VALUE...``), which the fork then does
    itself; None for any other command."""
    rest, env, place = list(command), dict(env), {}
    if rest[:3] == ["ip", "netns", "exec"] and len(rest) > 3:
        place["netns"], rest = rest[3], rest[4:]
    if rest[:len(OWN_HOSTNAME)] == OWN_HOSTNAME and len(rest) > len(OWN_HOSTNAME):
        place["hostname"], rest = rest[len(OWN_HOSTNAME)], rest[len(OWN_HOSTNAME) + 1:]
    if rest[:1] == ["env"]:
        rest = rest[1:]
        while rest and "=" in rest[0] and not rest[0].startswith("-"):
            name, value = rest.pop(0).split("=", 1)
            env[name] = value
    return (rest, env, place) if rest[:1] == [sys.executable] and rest[1:2] in (["-m"], ["-c"]) \
        and len(rest) > 2 else None


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
    """The forked child: become ``python -m MODULE ARGS`` (or ``python -c CODE ARGS``) as started
    in the request's directory with its environment, run it, and end as the interpreter ends."""
    code, running = 1, False
    try:
        for fd in server_fds:
            os.close(fd)
        stdin = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((stdin, 0), (fds[0], 1), (fds[1], 2)):
            os.dup2(fd, target)
            os.close(fd)
        if request["new_session"]:
            os.setsid()
        if "netns" in request:
            _enter_network_namespace(request["netns"])
        if "hostname" in request:
            _libc_call("unshare", _CLONE_NEWUTS)
            socket.sethostname(request["hostname"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _show_in_proc(request["argv"], request["env"])
        tempfile.tempdir = None  # TMPDIR is the launch's
        _, option, target, *args = request["argv"]
        sys.argv = [option, *args]
        running = True
        try:
            main = _fresh_main()
            if option == "-m":
                sys.path[0] = os.getcwd()
                runpy._run_module_as_main(target)  # type: ignore[attr-defined]  # what ``python -m`` calls
            else:
                sys.path[0] = ""
                exec(compile(target, "<string>", "exec"), main.__dict__)
            code = 0
        except SystemExit as stop:
            code = _exit_code(stop.code)
    except BaseException as failed:
        # The launch's own exception as the interpreter shows it (from its code on); a failure to
        # become the launch (a namespace, the directory) whole.
        shown = failed.__traceback__.tb_next if running and failed.__traceback__ else failed.__traceback__
        traceback.print_exception(type(failed), failed, shown)
    finally:
        _finalize()
        os._exit(code)


def _fresh_main() -> types.ModuleType:
    """A ``__main__`` module as the interpreter makes it before it runs ``-m`` or ``-c``."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __loader__=importlib.machinery.BuiltinImporter,
                         __annotations__={})
    sys.modules["__main__"] = main
    return main


def _finalize() -> None:
    """What the interpreter does when the main module has ended: wait for the threads that are not
    daemons, run the ``atexit`` functions (multiprocessing's clean-up, logging's flush), flush
    the standard streams."""
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _enter_network_namespace(name: str) -> None:
    """What ``ip netns exec NAME`` does before it runs a command: join the namespace, in a mount
    namespace of its own whose ``/sys`` shows that namespace's devices and whose ``/etc`` has the
    files of ``/etc/netns/NAME`` (its ``hosts``, ``resolv.conf``) bound over the machine's."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc_call("setns", fd, _CLONE_NEWNET)
    finally:
        os.close(fd)
    _libc_call("unshare", _CLONE_NEWNS)
    _libc_call("mount", b"", b"/", b"none", _MS_SLAVE | _MS_REC, None)
    read_only = os.statvfs("/sys").f_flag & os.ST_RDONLY
    ctypes.CDLL(None).umount2(b"/sys", _MNT_DETACH)  # as ip: nothing there to detach is fine
    _libc_call("mount", name.encode(), b"/sys", b"sysfs", _MS_RDONLY if read_only else 0, None)
    etc = Path("/etc/netns", name)
    for entry in sorted(etc.iterdir()) if etc.is_dir() else []:
        _libc_call("mount", os.fsencode(entry), os.fsencode(Path("/etc", entry.name)), b"none", _MS_BIND, None)


def _libc_call(function: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, function)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{function}{args}: {os.strerror(errno)}")


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
