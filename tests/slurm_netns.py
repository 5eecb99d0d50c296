"""A second, test-only Slurm cluster whose compute nodes are separate hosts: each ``slurmd`` runs in
its own network namespace (``tests/netns.py``) with its own address and hostname.

The main test cluster (``slurm/local_cluster.sh``) puts both nodes on 127.0.0.1 under the
machine's own hostname, which hides what real clusters do differently: a host list to expand
(``rack1-node[01-02]``), a master address that must not be loopback, the interface gloo/NCCL must
use, and a rendezvous across addresses. Here:

- ``rack1-node01`` (10.231.0.1) and ``rack1-node02`` (10.231.0.2), each a namespace on a bridge,
  with its own hostname (``unshare --uts``) and a hosts file naming both nodes and the controller;
- slurmctld on this machine, which joins the bridge as 10.231.0.254 (``VirtualCluster.connect_host``)
  so that it reaches the slurmds and they reach it;
- its own directory, ports, ClusterName and no accounting (``sacct`` does not work: the launcher
  and the tests ask ``squeue``/``scontrol``). Clients find it through ``SLURM_CONF`` only (``env()``):
  ``/etc/slurm/slurm.conf`` and ``/etc/hosts`` belong to the main cluster, which may run at the
  same time. munged is shared (its unix socket is reachable from every namespace).

A batch script and the ``srun`` in it run inside node 0's namespace, as on a real cluster.
``srun`` from this machine works too: the step's I/O connections go back to 10.231.0.254.

Needs root. ``stop()`` (called by the fixture also when a test fails) ends every process it
started, and every process left in the nodes' namespaces (slurmstepd and job tasks), by pid, and
deletes the namespaces; ``sweep_stale()`` does the same for a test session that was killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.netns import HOST_ADDRESS, VirtualCluster, creator_alive, netns_unavailable_reason

NODES = ("rack1-node01", "rack1-node02")
NODELIST = "rack1-node[01-02]"  # SLURM_JOB_NODELIST of a job on both nodes
CLUSTER_NAME = "launcher-netns"
CONTROLLER = "slurm-ctl"  # this machine's name on the nodes' network
PARTITION = "debug"
CPUS_PER_NODE = 4
# Not the main test cluster's (16817 ctld, 16819 dbd, 16821-16822 slurmd, 16306 db): both may run.
CTLD_PORT = 16917
NODE_PORTS = (16921, 16922)
WAIT_S = 60.0  # bound for each wait of start()
DIR_PREFIX = "slurm-netns-"
PID_FILE = "pids"  # under the cluster's directory: what a sweep after a killed session ends
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel",
            "munged", "munge", "unmunge")
# Slurm's harmless start-up noise on Debian, left out of the log tails shown on failure.
LOG_NOISE = re.compile(r"pmix|MPI: Cannot create context")


def slurm_unavailable_reason() -> str | None:
    """Why this cluster cannot run here (None when it can)."""
    missing = [name for name in BINARIES if shutil.which(name, path=_path()) is None]
    if missing:
        return (f"Slurm/munge binaries missing ({', '.join(missing)}): install slurmctld slurmd "
                "slurm-client munge (slurm/local_cluster.sh start does)")
    if os.geteuid() != 0:
        return "the namespace Slurm cluster needs root"
    return netns_unavailable_reason()


def _path() -> str:
    """PATH with the system directories the daemons live in (/usr/sbin)."""
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _cgroup_mounts() -> str:
    """Shell commands that mount on /sys/fs/cgroup what slurmd's cgroup plugin checks for at start,
    after this machine's layout: cgroup v2, or a tmpfs with v1's ``name=systemd`` hierarchy (with
    proctrack/linuxproc and task/none it creates nothing there)."""
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    types = {fields[1]: fields[2] for line in mounts if len(fields := line.split()) > 2}
    if types.get("/sys/fs/cgroup") == "cgroup2":
        return "mount -t cgroup2 cgroup2 /sys/fs/cgroup"
    return ("mount -t tmpfs cgroup /sys/fs/cgroup && mkdir /sys/fs/cgroup/systemd && "
            "mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd")


def munge_works() -> bool:
    """Whether a munged answers on its usual socket (the one both clusters' daemons use)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        credential = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if credential.returncode == 0:
            return subprocess.run(["unmunge"], input=credential.stdout, capture_output=True,
                                  timeout=10).returncode == 0
    return False


def _alive(pid: int) -> bool:
    """A running process; a zombie counts as gone (PID 1 may take its time to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _end(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL for whatever is still alive after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in _wait_gone(pids, grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, 5.0)


def _namespace_inode(ns: str) -> int:
    """The identity of a named network namespace, which outlives its name (``ip netns del``)."""
    return os.stat(f"/run/netns/{ns}").st_ino


def pids_in_namespaces(inodes: set[int]) -> list[int]:
    """Every process (but this one) in one of these network namespaces: a slurmd, the slurmstepd
    it forked (which outlives it) and the job's tasks."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    found.append(int(entry))
    return found


def sweep_stale() -> None:
    """End what the cluster of a killed test session left running, and remove its directory: the
    daemons it recorded (if still those programs) and every process in its nodes' namespaces,
    even where the namespaces' names were already removed (``sweep_stale_namespaces``)."""
    for directory in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        if not directory.is_dir() or creator_alive(directory.name, DIR_PREFIX):
            continue
        daemons, inodes = [], set()
        with contextlib.suppress(OSError, ValueError):
            for line in (directory / PID_FILE).read_text().splitlines():
                kind, number, program = line.split()
                if kind == "netns":
                    inodes.add(int(number))
                elif _comm(int(number)) == program:
                    daemons.append(int(number))
        _end(daemons + pids_in_namespaces(inodes), grace_s=0)
        shutil.rmtree(directory, ignore_errors=True)


class NetnsSlurmCluster:
    """Start, use from the host, and stop the namespace Slurm cluster (see the module's docstring)."""

    def __init__(self) -> None:
        self.net = VirtualCluster(nodes=len(NODES), hostnames=NODES)
        # The creator's pid in the name: see sweep_stale. Short: slurmd's step sockets live in it.
        self.dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-"))
        self.conf = self.dir / "etc" / "slurm.conf"
        self.log = self.dir / "log"
        self.daemons: dict[str, subprocess.Popen] = {}
        self.munged_pid: int | None = None  # set only when this cluster started munged
        self.namespaces: set[int] = set()  # the node namespaces' inodes (pids_in_namespaces)

    @staticmethod
    def address(node: int) -> str:
        return VirtualCluster.address(node)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) for a client of this cluster: no
        variable of another Slurm job or cluster, and ``SLURM_CONF`` naming this cluster's file."""
        source = os.environ if base is None else base
        env = {key: value for key, value in source.items() if not key.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = _path()
        return env

    def client(self, *argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
        """A Slurm client command (squeue, scontrol, ...) against this cluster."""
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env(),
                              timeout=timeout_s, check=False)

    def job_state(self, job_id: str) -> str:
        """The job's state from slurmctld (no accounting here: it keeps ended jobs MinJobAge=600 s)."""
        shown = self.client("scontrol", "show", "job", "-o", job_id)
        found = re.search(r"\bJobState=(\S+)", shown.stdout)
        return found.group(1) if found else "UNKNOWN"

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> NetnsSlurmCluster:
        """Namespaces, munged (if not running), slurmctld, both slurmds; returns once both nodes
        are idle. On any failure everything started so far is stopped and the error names the
        daemon, with the tail of its log."""
        try:
            self._write_config()
            self.net.create()
            self.namespaces = {_namespace_inode(ns) for ns in self.net.node_ns}
            for ns in self.net.node_ns:
                self._record("netns", _namespace_inode(ns), ns)
            self.net.connect_host(CONTROLLER)
            self._start_munge()
            self._start_daemon("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            for node, name in enumerate(NODES):
                self._start_daemon(f"slurmd-{name}", self._slurmd_command(node, name))
            self._wait("slurmctld to answer", lambda: self.client("scontrol", "ping").returncode == 0,
                       "slurmctld")
            self._wait(f"nodes {', '.join(NODES)} to be idle", self._nodes_idle, None)
        except BaseException:
            self.stop()
            raise
        return self

    def _slurmd_command(self, node: int, name: str) -> list[str]:
        """slurmd in node ``node``'s namespace, under its own hostname.

        ``ip netns exec`` mounts a fresh /sys, without this machine's cgroup mounts, and slurmd
        22.05 will not start without them ("Unable to initialize cgroup plugin"), even with
        plugins that use no cgroup: they are mounted again, in the mount namespace that
        ``ip netns exec`` made for this slurmd alone.
        """
        script = f'hostname "$0" && {_cgroup_mounts()} && exec "$@"'
        return ["ip", "netns", "exec", self.net.node_ns[node], "unshare", "--uts", "sh", "-c", script,
                name, "slurmd", "-D", "-f", str(self.conf), "-N", name]

    def _write_config(self) -> None:
        for sub in ("etc", "log", "state", *(f"spool/{name}" for name in NODES)):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # The main cluster's /etc/slurm/plugstack.conf is not ours to read.
        (self.dir / "etc" / "plugstack.conf").write_text("")
        nodes = [f"NodeName={name} NodeAddr={self.address(node)} Port={NODE_PORTS[node]} "
                 f"CPUs={CPUS_PER_NODE} State=UNKNOWN" for node, name in enumerate(NODES)]
        self.conf.write_text("\n".join([
            "# Generated by tests/slurm_netns.py for one test session.",
            f"ClusterName={CLUSTER_NAME}",
            # slurmctld accepts "localhost" as its own name; the nodes reach it at the address.
            f"SlurmctldHost=localhost({HOST_ADDRESS})",
            f"SlurmctldPort={CTLD_PORT}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "AuthInfo=cred_expire=5",
            "MailProg=/bin/true",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            # Nodes declare CPUs=4 on a smaller host; without this they are drained (low core count).
            "SlurmdParameters=config_overrides",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "JobRequeue=1",
            "KillWait=5",
            "MinJobAge=600",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "Waittime=0",
            f"StateSaveLocation={self.dir}/state",
            f"SlurmdSpoolDir={self.dir}/spool/%n",
            f"SlurmctldPidFile={self.dir}/state/slurmctld.pid",
            f"SlurmdPidFile={self.dir}/spool/slurmd-%n.pid",
            f"SlurmctldLogFile={self.log}/slurmctld.log",
            f"SlurmdLogFile={self.log}/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={self.dir}/etc/plugstack.conf",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            *nodes,
            f"PartitionName={PARTITION} Nodes={NODELIST} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    def _record(self, kind: str, number: int, program: str) -> None:
        """Append to the file a sweep reads after a killed session: a daemon's pid and the program
        it runs once started (the sweep ends it only if it still runs that program), or a node
        namespace's inode (``kind`` pid or netns)."""
        with open(self.dir / PID_FILE, "a") as record:
            record.write(f"{kind} {number} {program}\n")

    def _start_munge(self) -> None:
        """munged is shared with the main cluster: started here only when none answers."""
        if munge_works():
            return
        for path in ("/run/munge", "/var/lib/munge"):
            Path(path).mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "munge", "munge")
        if not Path("/etc/munge/munge.key").is_file():
            raise RuntimeError("munged is not running and /etc/munge/munge.key is missing "
                               "(create it with `mungekey --create`, as root)")
        pid_file = Path("/run/munge/munged.pid")
        started = subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--pid-file={pid_file}"],
                                 capture_output=True, text=True, timeout=30, check=False)
        if started.returncode:
            raise RuntimeError(f"munged failed to start: {started.stderr.strip()}")
        self.munged_pid = int(pid_file.read_text())
        self._record("pid", self.munged_pid, "munged")
        self._wait("munged to answer", munge_works, None)

    def _start_daemon(self, name: str, argv: list[str]) -> None:
        """In the foreground (``-D``): the Popen's pid is the daemon's (``ip netns exec``,
        ``unshare`` and ``sh -c 'exec'`` each replace themselves)."""
        with open(self.log / f"{name}.out", "ab") as out:
            self.daemons[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                                  env=self.env(), start_new_session=True)
        self._record("pid", self.daemons[name].pid, name.split("-", 1)[0])

    def _dead_daemon(self) -> str | None:
        return next((name for name, proc in self.daemons.items() if proc.poll() is not None), None)

    def _log_tail(self, daemon: str | None) -> str:
        files = [self.log / f"{daemon}.log", self.log / f"{daemon}.out"] if daemon else \
            sorted(self.log.glob("*.log"))
        tails = []
        for path in files:
            if path.is_file():
                lines = [line for line in path.read_text(errors="replace").splitlines()
                         if not LOG_NOISE.search(line)]
                tails.append(f"----- tail of {path} -----\n" + "\n".join(lines[-20:]))
        return "\n".join(tails) or f"(no log of {daemon or 'any daemon'} in {self.log})"

    def _wait(self, what: str, ready: Callable[[], bool], daemon: str | None) -> None:
        """Until ``ready()``; fail after WAIT_S, or at once when a daemon has exited."""
        deadline = time.monotonic() + WAIT_S
        while not ready():
            dead = self._dead_daemon()
            if dead is not None:
                raise RuntimeError(f"namespace Slurm cluster: {dead} exited while waiting for {what}\n"
                                   f"{self._log_tail(dead)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"namespace Slurm cluster: timed out after {WAIT_S:g}s waiting for "
                                   f"{what}\n{self._log_tail(daemon)}")
            time.sleep(0.3)

    def _nodes_idle(self) -> bool:
        shown = self.client("sinfo", "-h", "-N", "-o", "%N %T")
        states = dict(line.split() for line in shown.stdout.splitlines() if len(line.split()) == 2)
        return all(states.get(name) == "idle" for name in NODES)

    # --- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel the jobs, end the daemons and everything left in the nodes' namespaces (by pid),
        delete the namespaces and the directory. Safe to call after a failed or partial start."""
        ctld = self.daemons.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            self._cancel_jobs()
        _end([proc.pid for name, proc in self.daemons.items() if name.startswith("slurmd-")])
        _end(pids_in_namespaces(self.namespaces), grace_s=2.0)  # slurmstepd and tasks outlive slurmd
        _end([proc.pid for name, proc in self.daemons.items() if name == "slurmctld"])
        for proc in self.daemons.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.daemons.clear()
        if self.munged_pid is not None:
            _end([self.munged_pid])
            self.munged_pid = None
        self.net.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _cancel_jobs(self) -> None:
        """Let slurmstepd end the tasks itself (bounded); what remains is killed by the caller."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            jobs = self.client("squeue", "-h", "-o", "%A", timeout_s=10).stdout.split()
            if not jobs:
                return
            self.client("scancel", *jobs, timeout_s=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.client(
                    "squeue", "-h", "-t", "running,completing", "-o", "%A", timeout_s=10).stdout.strip():
                time.sleep(0.3)
