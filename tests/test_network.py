"""The node's own address and interface, as the launcher derives them."""

import socket

import pytest

from launcher.network import (
    PortUnavailable,
    check_port_free,
    interface_names,
    interface_of,
    is_local_address,
    route_source_address,
)


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
