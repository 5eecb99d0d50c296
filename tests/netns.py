"""Several "machines" on this one: Linux network namespaces joined by a bridge, each node with its
own address (10.231.0.K) and, optionally, its own hostname.

Layout (see ../shared/notes/multinode-on-one-machine.md): a namespace holding bridge ``br0``, and
per node a namespace whose ``lan0`` is one end of a veth pair; the other end (``vK``) is a port of
the bridge. Cutting a node off the network is ``ip link set vK down`` on the bridge side.

Needs root. Every namespace and ``/etc/netns`` entry created here is removed by ``destroy()``,
which the fixtures call also when a test fails.
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
NETNS_ETC = Path("/etc/netns")
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
    """``nodes`` namespaces on one bridge; node k has address 10.231.0.(k+1) and hostname nodek."""

    def __init__(self, nodes: int, own_hostnames: bool = True) -> None:
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"  # the creator's pid: see sweep_stale_namespaces
        self.nodes = nodes
        self.own_hostnames = own_hostnames
        self.bridge_ns = f"{PREFIX}{tag}-br"
        self.node_ns = [f"{PREFIX}{tag}-n{k}" for k in range(nodes)]
        self.created: list[str] = []

    @staticmethod
    def address(node: int) -> str:
        return f"{SUBNET}.{node + 1}"

    @staticmethod
    def hostname(node: int) -> str:
        return f"node{node}"

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
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")

    def command(self, node: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside node ``node``'s namespace (and under its own hostname)."""
        inner = list(argv)
        if self.own_hostnames:
            inner = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                     self.hostname(node), *inner]
        return ["ip", "netns", "exec", self.node_ns[node], *inner]

    def set_link(self, node: int, up: bool) -> None:
        """Plug node ``node``'s cable into the bridge, or pull it out."""
        _ip("-n", self.bridge_ns, "link", "set", f"v{node}", "up" if up else "down")

    def destroy(self) -> None:
        for ns in reversed(self.created):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", ns)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self.created.clear()


def _creator_alive(name: str) -> bool:
    """Whether the test process that created namespace ``name`` still runs (parallel test
    workers each sweep; none may delete the namespaces another one is using)."""
    creator = name[len(PREFIX):].split("-", 1)[0]
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
        if name.startswith(PREFIX) and not _creator_alive(name):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", name)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
