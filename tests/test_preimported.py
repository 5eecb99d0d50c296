"""The tests' pre-imported launcher (`tests.preimported`) is the launch a fresh interpreter would
be: the same module runs with the same command line, directory, environment, ``sys.path``, streams
and exit status, and ``/proc`` shows the launch's own command line and environment (the tests and
``launcher.cancel`` read them there)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Launcher, preimported_launcher, wait_for_no_leftovers

pytestmark = pytest.mark.slow  # starts the worker's server (the imports of a launch)

PROBE = '''
import json, os, sys, tempfile
def proc(name):
    with open(f"/proc/self/{name}", "rb") as file:
        return [item.decode() for item in file.read().split(b"\\0") if item]
seen = {
    "name": __name__, "spec": __spec__.name, "argv": sys.argv, "cwd": os.getcwd(),
    "path0": sys.path[0], "path": sys.path[1:], "environ": dict(os.environ),
    "proc_environ": sorted(proc("environ")), "proc_cmdline": proc("cmdline"),
    "tmp": tempfile.gettempdir(), "stdin": os.readlink("/proc/self/fd/0"),
    "threads": len(os.listdir("/proc/self/task")),
}
print(json.dumps(seen))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "signal":
    os.kill(os.getpid(), 9)
if sys.argv[1] == "sleep":
    import time
    time.sleep(600)
sys.exit(int(sys.argv[1]))
'''


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    (tmp_path / "probe_interpreter.py").write_text(PROBE)
    (tmp_path / "tmp").mkdir()
    return tmp_path


def both(probe_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    runner = Launcher(probe_dir)
    env = runner.env(runner.new_job_id(), {"TMPDIR": str(probe_dir / "tmp")})
    command = [sys.executable, "-m", "probe_interpreter", *args]
    server = preimported_launcher()
    assert server.serves(env) and server.serves_command(command)
    fresh = subprocess.run(command, cwd=probe_dir, env=env, capture_output=True, text=True, timeout=60)
    forked = server.run(command, probe_dir, env, timeout_s=60)
    return fresh, forked


@pytest.mark.parametrize("code", ["0", "2"])
def test_a_fork_of_the_server_sees_what_a_fresh_interpreter_sees(probe_dir: Path, code: str) -> None:
    fresh, forked = both(probe_dir, code)
    assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr) == (int(code), "to stderr\n")
    assert json.loads(forked.stdout) == json.loads(fresh.stdout)
    assert json.loads(forked.stdout)["threads"] == 1


def test_a_launch_killed_by_a_signal_reports_it_as_subprocess_does(probe_dir: Path) -> None:
    fresh, forked = both(probe_dir, "signal")
    assert forked.returncode == fresh.returncode == -9
    assert json.loads(forked.stdout)["argv"] == json.loads(fresh.stdout)["argv"]


def test_a_launch_past_its_timeout_is_killed_and_reported(probe_dir: Path) -> None:
    runner = Launcher(probe_dir)
    env = runner.env(runner.new_job_id())
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        preimported_launcher().run([sys.executable, "-m", "probe_interpreter", "sleep"], probe_dir, env,
                                   timeout_s=3)
    assert time.monotonic() - started < 30
    assert timed_out.value.stderr == "to stderr\n"
    assert json.loads(timed_out.value.output)["environ"]["LAUNCHER_JOB_ID"] == env["LAUNCHER_JOB_ID"]
    wait_for_no_leftovers(env["LAUNCHER_JOB_ID"])


def test_what_a_fork_cannot_be_goes_to_a_fresh_interpreter() -> None:
    """A variable read at import, a command that is not ``python -m MODULE``, or a command line or
    environment larger than the room the server made."""
    server = preimported_launcher()
    assert server.serves(dict(server.env))
    assert server.serves({**server.env, "LAUNCHER_JOB_ID": "x", "TMPDIR": "/tmp", "CUDA_VISIBLE_DEVICES": "1"})
    for variable in ("OMP_NUM_THREADS", "PYTHONHASHSEED", "TORCH_CPP_LOG_LEVEL", "LD_PRELOAD"):
        assert not server.serves({**server.env, variable: "1"}), variable
    assert not server.serves({**server.env, "HUGE": "y" * (80 * 1024)})
    assert server.serves_command([sys.executable, "-m", "launcher", "gpus=2"])
    assert not server.serves_command([sys.executable, "-m", "launcher", "y" * (20 * 1024)])
    assert not server.serves_command([sys.executable, "-X", "importtime", "-m", "launcher"])
    assert not server.serves_command(["ip", "netns", "exec", "n1", sys.executable, "-m", "launcher"])
