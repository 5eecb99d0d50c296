"""Several "machines" on this one: Linux network namespaces joined by a bridge, each node with its
own address (10.231.0.K) and, optionally, its own hostname.

Layout (see ../shared/notes/multinode-on-one-machine.md): a namespace holding bridge ``br0``, and
per node a namespace whose ``lan0`` is one end of a veth pair; the other end (``vK``) is a port of
the bridge. Cutting a node off the network is ``ip link set vK down`` on the bridge side.

A cluster may also be wired to this machine (``connect_host``): a veth pair whose host end holds
10.231.0.254, so that a daemon on the host (slurmctld, ``tests/slurm_netns.py``) and the nodes
reach each other. Only one connected cluster may exist at a time (they would share the subnet).

Needs root. Every namespace and ``/etc/netns`` entry created here is removed by ``destroy()``,
which the fixtures call also when a test fails; the host's end of the veth pair goes with the
bridge namespace that holds its peer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

SUBNET = "10.231.0"
HOST_ADDRESS = f"{SUBNET}.254"  # this machine's address on a connected cluster's bridge
NETNS_ETC = Path("/etc/netns")
# A command run as ``[*OWN_HOSTNAME, HOST, *argv]`` runs under the hostname HOST (its own UTS namespace).
OWN_HOSTNAME = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"']
# A cluster's namespaces are named after this prefix, so a session can sweep up after a crash.
PREFIX = "ltest-"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs `ip` (iproute2) and `unshare` (util-linux)"
    probe = f"{PREFIX}probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as why:
        return f"`ip netns add` is not permitted here (run as root): {why}"
    _ip("netns", "del", probe)
    return None


class VirtualCluster:
    """``nodes`` namespaces on one bridge; node k has address 10.231.0.(k+1) and hostname nodek
    (or ``hostnames[k]``: Slurm's tests name them like real clusters, ``rack1-node01``)."""

    def __init__(self, nodes: int, own_hostnames: bool = True,
                 hostnames: Sequence[str] | None = None) -> None:
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"  # the creator's pid: see sweep_stale_namespaces
        self.nodes = nodes
        self.own_hostnames = own_hostnames
        self.hostnames = list(hostnames) if hostnames is not None else [f"node{k}" for k in range(nodes)]
        if len(self.hostnames) != nodes:
            raise ValueError(f"{nodes} nodes but {len(self.hostnames)} hostnames")
        self.bridge_ns = f"{PREFIX}{tag}-br"
        self.node_ns = [f"{PREFIX}{tag}-n{k}" for k in range(nodes)]
        self.created: list[str] = []
        # Names every node's hosts file gives besides the nodes' own (e.g. the host's, once connected).
        self.other_hosts: dict[str, str] = {}
        self.host_link: str | None = None

    @staticmethod
    def address(node: int) -> str:
        return f"{SUBNET}.{node + 1}"

    def hostname(self, node: int) -> str:
        return self.hostnames[node]

    def create(self) -> VirtualCluster:
        self._add_ns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for node, ns in enumerate(self.node_ns):
            self._add_ns(ns)
            _ip("-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", f"v{node}",
                "netns", self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", f"v{node}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "lan0")
            _ip("-n", ns, "link", "set", "lan0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self._write_etc(node, ns)
        return self

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.created.append(ns)

    def _write_etc(self, node: int, ns: str) -> None:
        """Name resolution that never leaves the namespace: every node's name, no DNS server.

        Without own hostnames all nodes share this machine's hostname, mapped to loopback: the
        trap in which gloo advertises 127.0.0.1 to the other nodes.
        """
        etc = NETNS_ETC / ns
        etc.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost"]
        if self.own_hostnames:
            lines += [f"{self.address(k)} {self.hostname(k)}" for k in range(self.nodes)]
        else:
            lines.append(f"127.0.0.1 {os.uname().nodename}")
        lines += [f"{address} {name}" for name, address in self.other_hosts.items()]
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")

    def command(self, node: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside node ``node``'s namespace (and under its own hostname)."""
        inner = list(argv)
        if self.own_hostnames:
            inner = [*OWN_HOSTNAME, self.hostname(node), *inner]
        return ["ip", "netns", "exec", self.node_ns[node], *inner]

    def connect_host(self, name: str) -> str:
        """Plug this machine into the bridge as ``HOST_ADDRESS``, known to the nodes as ``name``.

        For a daemon that must run on the host, outside every node: the nodes reach it and it
        reaches them, and nothing else of the host's network changes (a route to the subnet).
        Returns the host's end of the cable (its name carries no pid: at most 15 characters).
        """
        link = f"lth{uuid.uuid4().hex[:8]}"
        _ip("link", "add", link, "type", "veth", "peer", "name", "vhost", "netns", self.bridge_ns)
        self.host_link = link
        _ip("-n", self.bridge_ns, "link", "set", "vhost", "master", "br0", "up")
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", link)
        _ip("link", "set", link, "up")
        self.other_hosts[name] = HOST_ADDRESS
        for node, ns in enumerate(self.node_ns):
            self._write_etc(node, ns)
        return link

    def set_link(self, node: int, up: bool) -> None:
        """Plug node ``node``'s cable into the bridge, or pull it out."""
        _ip("-n", self.bridge_ns, "link", "set", f"v{node}", "up" if up else "down")

    def destroy(self) -> None:
        if self.host_link is not None:  # normally gone with the bridge namespace; not if that failed
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", self.host_link)
            self.host_link = None
        for ns in reversed(self.created):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", ns)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self.created.clear()


def creator_alive(name: str, prefix: str = PREFIX) -> bool:
    """Whether the test process that created ``name`` (``prefix``, its pid, ``-``, ...: a namespace,
    a cluster's directory) still runs: parallel test workers each sweep, and none may delete what
    another one is using."""
    creator = name[len(prefix):].split("-", 1)[0]
    if not creator.isdigit():
        return False
    try:
        os.kill(int(creator), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_namespaces() -> None:
    """Remove namespaces a killed test session left behind (only ours, by name)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX) and not creator_alive(name):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", name)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
