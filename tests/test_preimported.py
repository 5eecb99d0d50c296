"""The tests' pre-imported launcher (`tests.preimported`) is the launch a fresh interpreter would
be: the same module runs with the same command line, directory, environment, ``sys.path``, streams
and exit status, and ``/proc`` shows the launch's own command line and environment (the tests and
``launcher.cancel`` read them there)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Launcher, preimported_launcher, wait_for, wait_for_no_leftovers
from tests.netns import OWN_HOSTNAME, VirtualCluster
from tests.preimported import unwrap
from tests.test_multinode_netns import cluster, netns_permitted  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # starts the worker's server (the imports of a launch)

PROBE = '''
import json, os, sys, tempfile
def proc(name):
    with open(f"/proc/self/{name}", "rb") as file:
        return [item.decode() for item in file.read().split(b"\\0") if item]
seen = {
    "name": __name__, "spec": getattr(__spec__, "name", None), "argv": sys.argv, "cwd": os.getcwd(),
    "main": sorted(vars(sys.modules["__main__"])), "main_file": getattr(sys.modules["__main__"], "__file__", None),
    "path0": sys.path[0], "path": sys.path[1:], "environ": dict(os.environ),
    "proc_environ": sorted(proc("environ")), "proc_cmdline": proc("cmdline"),
    "tmp": tempfile.gettempdir(), "stdin": os.readlink("/proc/self/fd/0"),
    "threads": len(os.listdir("/proc/self/task")),
}
print(json.dumps(seen), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "signal":
    os.kill(os.getpid(), 9)
if sys.argv[1] == "sleep":
    import time
    open(f"sleeping-{os.getpid()}", "w").close()
    time.sleep(600)
sys.exit(int(sys.argv[1]))
'''


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    (tmp_path / "probe_interpreter.py").write_text(PROBE)
    (tmp_path / "tmp").mkdir()
    return tmp_path


def both(probe_dir: Path, *args: str, option: str = "-m",
         ) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The probe run fresh and forked: as a module (``-m``) or as code (``-c``)."""
    runner = Launcher(probe_dir)
    env = runner.env(runner.new_job_id(), {"TMPDIR": str(probe_dir / "tmp")})
    command = [sys.executable, option, "probe_interpreter" if option == "-m" else PROBE, *args]
    server = preimported_launcher()
    assert server.serves(command, env)
    fresh = subprocess.run(command, cwd=probe_dir, env=env, capture_output=True, text=True, timeout=60)
    forked = server.run(command, probe_dir, env, timeout_s=60)
    return fresh, forked


@pytest.mark.parametrize("option", ["-m", "-c"])
@pytest.mark.parametrize("code", ["0", "2"])
def test_a_fork_of_the_server_sees_what_a_fresh_interpreter_sees(probe_dir: Path, code: str, option: str) -> None:
    fresh, forked = both(probe_dir, code, option=option)
    assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr) == (int(code), "to stderr\n")
    assert json.loads(forked.stdout) == json.loads(fresh.stdout)
    assert json.loads(forked.stdout)["threads"] == 1


def test_code_that_raises_ends_as_the_interpreter_ends(probe_dir: Path) -> None:
    """The traceback from the launch's own code on, exit status 1, and what the interpreter does
    at its end: a thread that is not a daemon finishes, ``atexit`` functions run."""
    code = """
import atexit, threading, time
atexit.register(print, "atexit ran", flush=True)
threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", flush=True))).start()
raise ValueError("deliberate")
"""
    runner = Launcher(probe_dir)
    env = runner.env(runner.new_job_id())
    command = [sys.executable, "-c", code]
    fresh = subprocess.run(command, cwd=probe_dir, env=env, capture_output=True, text=True, timeout=60)
    forked = preimported_launcher().run(command, probe_dir, env, timeout_s=60)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == 1 and fresh.stdout == "thread finished\natexit ran\n"
    assert fresh.stderr.startswith("Traceback (most recent call last):\n  File \"<string>\", line 5, in <module>")


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
    """A variable read at import, a command that is not ``python -m MODULE`` behind the wrappers
    the fork does itself, or a command line or environment larger than the room the server made."""
    server = preimported_launcher()
    launch = [sys.executable, "-m", "launcher", "gpus=2"]
    assert server.serves(launch, dict(server.env))
    assert server.serves(launch, {**server.env, "LAUNCHER_JOB_ID": "x", "TMPDIR": "/tmp", "CUDA_VISIBLE_DEVICES": "1"})
    for variable in ("OMP_NUM_THREADS", "PYTHONHASHSEED", "TORCH_CPP_LOG_LEVEL", "LD_PRELOAD"):
        assert not server.serves(launch, {**server.env, variable: "1"}), variable
        assert not server.serves(["env", f"{variable}=1", *launch], dict(server.env)), variable
    assert not server.serves(launch, {**server.env, "HUGE": "y" * (80 * 1024)})
    assert not server.serves([*launch, "y" * (20 * 1024)], dict(server.env))
    assert not server.serves([sys.executable, "-X", "importtime", "-m", "launcher"], dict(server.env))
    assert not server.serves(["nice", *launch], dict(server.env))
    assert server.serves(["ip", "netns", "exec", "n1", *OWN_HOSTNAME, "h", "env", "A=1", *launch], dict(server.env))
    assert unwrap(["ip", "netns", "exec", "n1", *OWN_HOSTNAME, "h", "env", "A=1", *launch], {"B": "2"}) \
        == (launch, {"A": "1", "B": "2"}, {"netns": "n1", "hostname": "h"})


def test_a_launch_started_in_the_background_behaves_as_popen_does(probe_dir: Path) -> None:
    """Its own session (a test signals it as a terminal would), poll, a signal, wait, the
    streams."""
    runner = Launcher(probe_dir)
    env = runner.env(runner.new_job_id())
    command = [sys.executable, "-m", "probe_interpreter", "sleep"]
    seen = []
    fresh = subprocess.Popen(command, cwd=probe_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    forked = preimported_launcher().start(command, probe_dir, env, new_session=True)
    for proc in (fresh, forked):  # each says it sleeps in a file of its own: both may be up at once
        marker = probe_dir / f"sleeping-{proc.pid}"
        wait_for(marker.exists, 30, "the probe to start")
        assert proc.poll() is None
        assert os.getsid(proc.pid) == os.getpgid(proc.pid) == proc.pid
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM == proc.poll() == proc.returncode
        out, err = proc.communicate()
        seen.append((json.loads(out)["argv"], err))
        proc.kill()  # after its end: nothing, as with Popen
    assert seen[0] == seen[1] and seen[0][1] == "to stderr\n"
    assert forked.stderr.read() == "to stderr\n"
    wait_for_no_leftovers(env["LAUNCHER_JOB_ID"])


NODE_PROBE = """
import json, os, socket, sys
print(json.dumps({
    "hostname": socket.gethostname(), "net": os.readlink("/proc/self/ns/net"),
    "uts": os.readlink("/proc/self/ns/uts"), "hosts": open("/etc/hosts").read(),
    "resolv": open("/etc/resolv.conf").read(), "sys_class_net": sorted(os.listdir("/sys/class/net")),
    "interfaces": sorted(name for _, name in socket.if_nameindex()),
    "address": socket.gethostbyname(socket.gethostname()), "step": os.environ.get("SLURM_PROCID"),
    "argv": sys.argv, "cwd": os.getcwd(),
}))
"""


def test_a_fork_on_a_namespace_node_sees_what_ip_netns_exec_shows(tmp_path: Path, cluster: VirtualCluster,  # noqa: F811
                                                                  ) -> None:
    """The namespace, its devices in /sys, its /etc/netns files, the node's own hostname, the
    variables of an ``env`` wrapper: as ``ip netns exec NS unshare --uts ... env ... python`` has
    them."""
    (tmp_path / "node_probe.py").write_text(NODE_PROBE)
    runner = Launcher(tmp_path)
    env = runner.env(runner.new_job_id())
    command = cluster.command(1, ["env", "SLURM_PROCID=1", sys.executable, "-m", "node_probe", "x"])
    server = preimported_launcher()
    assert server.serves(command, env)
    fresh = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    forked = server.run(command, tmp_path, env, timeout_s=60)
    assert forked.returncode == fresh.returncode == 0, forked.stderr + fresh.stderr
    seen = json.loads(forked.stdout)
    assert seen == json.loads(fresh.stdout)
    assert seen["hostname"] == cluster.hostname(1) and seen["address"] == cluster.address(1)
    assert seen["net"] != os.readlink("/proc/self/ns/net") and seen["step"] == "1"
    assert "lan0" in seen["sys_class_net"] and "lan0" in seen["interfaces"]
    assert socket.gethostname() != cluster.hostname(1)  # the server's own is untouched
