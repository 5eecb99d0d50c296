"""The node's own address and interface, as the launcher derives them.

The namespace test needs root (``ip netns add``). Elsewhere it skips with the reason; CI sets
LAUNCHER_REQUIRE_NETNS=1 so that there it fails instead of skipping.
"""

import ipaddress
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from launcher import network
from launcher.network import (
    PortUnavailable,
    check_port_free,
    interface_addresses,
    interface_names,
    interface_of,
    is_local_address,
    route_source_address,
)
from tests.conftest import REPO

# Not tests/netns.py's PREFIX: its sweep of stale namespaces must not delete this test's one.
NS_PREFIX = "ltnet-"


def test_route_to_loopback_leaves_from_loopback():
    assert route_source_address("127.0.0.1") == "127.0.0.1"
    assert interface_of("127.0.0.1") == "lo"


def test_route_source_is_an_address_of_this_machine_with_an_interface():
    try:
        source = route_source_address("192.0.2.1")  # TEST-NET-1: routed, never answered
    except OSError:
        pytest.skip("this machine has no route beyond loopback")
    assert is_local_address(source)
    assert interface_of(source) in interface_names()


def test_foreign_and_unresolvable_addresses():
    assert not is_local_address("192.0.2.1")
    with pytest.raises(PortUnavailable, match="not an address of this machine") as foreign:
        check_port_free("192.0.2.1", 29500)
    assert foreign.value.foreign_address
    with pytest.raises(socket.gaierror):
        route_source_address("no-such-host.invalid")


def test_port_in_use_is_not_a_foreign_address():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(PortUnavailable, match="already in use") as in_use:
            check_port_free("127.0.0.1", busy.getsockname()[1])
    assert not in_use.value.foreign_address


def test_every_listed_address_maps_back_to_its_interface():
    listed = interface_addresses()
    assert ("lo", "127.0.0.1") in listed
    for name, address in listed:
        carriers = {carrier for carrier, held in listed if held == address}
        assert interface_of(address) in carriers
        ip = ipaddress.ip_address(address)
        if ip.version == 6 and ip.is_link_local:  # the same fe80:: address may sit on several
            assert interface_of(f"{address}%{name}") == name


def test_an_address_not_on_this_machine_has_no_interface():
    assert interface_of("203.0.113.7") is None  # TEST-NET-3
    assert interface_of("2001:db8::7") is None  # IPv6 documentation prefix


def test_fallback_without_getifaddrs(monkeypatch):
    """The ioctl + /proc lookup sees a subset of what getifaddrs sees (no secondary IPv4)."""
    assert set(network._from_ioctl_and_proc()) <= set(interface_addresses())
    monkeypatch.setattr(network, "_from_getifaddrs", lambda: None)
    assert interface_of("127.0.0.1") == "lo"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@pytest.fixture
def namespace() -> Iterator[str]:
    """An empty network namespace of this test's own, removed afterwards whatever happens."""
    name = f"{NS_PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
    except (OSError, RuntimeError) as why:  # OSError: no `ip` at all
        reason = f"`ip netns add` is not permitted here (needs root and iproute2): {why}"
        if os.environ.get("LAUNCHER_REQUIRE_NETNS") == "1":
            pytest.fail(f"network-namespace tests are required here but cannot run: {reason}")
        pytest.skip(reason)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_secondary_ipv4_address_has_its_interface(namespace):
    """A VIP next to the primary address: SIOCGIFADDR reports only the primary, getifaddrs both."""
    primary, secondary = "10.9.0.1", "10.9.0.5"  # the same /24: the second one is secondary
    for args in (["link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
                 ["addr", "add", f"{primary}/24", "dev", "lan0"],
                 ["addr", "add", f"{secondary}/24", "dev", "lan0"],
                 ["addr", "add", "fd00:9::5/64", "dev", "lan0", "nodad"],
                 ["link", "set", "lan0", "up"]):
        _ip("-n", namespace, *args)
    snippet = (
        "import json; from launcher import network as n; print(json.dumps({"
        f"'secondary': n.interface_of('{secondary}'), 'primary': n.interface_of('{primary}'), "
        "'ipv6': n.interface_of('fd00:9::5'), 'ioctl': n._primary_ipv4_address_of('lan0')}))"
    )
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", snippet],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["ioctl"] == primary  # the trap is set: the ioctl alone would miss the secondary
    assert seen == {"secondary": "lan0", "primary": "lan0", "ipv6": "lan0", "ioctl": primary}
