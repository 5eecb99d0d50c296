"""Ports and addresses on this machine."""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
from pathlib import Path


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # TCPStore sets SO_REUSEADDR too, so a port in TIME_WAIT is free for it and for us.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port(address: str) -> int:
    """A port the kernel says is free on ``address`` right now."""
    with _bind(address, 0) as sock:
        return int(sock.getsockname()[1])


class PortUnavailable(Exception):
    """Why a port cannot be listened on here: in use, or the address is not this machine's."""

    def __init__(self, message: str, foreign_address: bool = False) -> None:
        super().__init__(message)
        self.foreign_address = foreign_address


def check_port_free(address: str, port: int) -> None:
    try:
        with _bind(address, port) as sock:
            sock.listen(1)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise PortUnavailable(f"port {port} is already in use on {address}") from err
        if err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise PortUnavailable(f"{address} is not an address of this machine", True) from err
        if isinstance(err, socket.gaierror):
            raise PortUnavailable(f"cannot resolve {address}: {err.strerror}", True) from err
        raise PortUnavailable(f"cannot listen on {address}:{port}: {err.strerror}") from err


def route_source_address(remote: str) -> str:
    """The address this machine would send from to reach ``remote``: the one peers can reach.

    Connecting a UDP socket only asks the kernel for a route; no packet leaves the machine.
    Raises ``socket.gaierror`` when ``remote`` does not resolve, ``OSError`` when no route exists.
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(remote, 9, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(sockaddr)
        return str(sock.getsockname()[0])


def is_local_address(address: str) -> bool:
    """Whether ``address`` (or what a hostname resolves to) belongs to this machine."""
    try:
        _bind(address, 0).close()
    except OSError:
        return False
    return True


def _ipv4_address_of(interface: str) -> str | None:
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", interface.encode()[:15]))
        except OSError:
            return None  # no IPv4 address on this interface
    return socket.inet_ntoa(reply[20:24])


def _ipv6_addresses() -> dict[str, str]:
    """Interface per IPv6 address, from /proc/net/if_inet6."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        packed = bytes.fromhex(fields[0])
        found[socket.inet_ntop(socket.AF_INET6, packed)] = fields[-1]
    return found


def interface_of(address: str) -> str | None:
    """The network interface that carries ``address`` on this machine (Linux), if any."""
    resolved = socket.getaddrinfo(address, None)[0][4][0]
    assert isinstance(resolved, str)  # an IPv4 or IPv6 sockaddr starts with the host
    if ":" in resolved:
        return _ipv6_addresses().get(resolved)
    for _, name in socket.if_nameindex():
        if _ipv4_address_of(name) == resolved:
            return name
    return None


def interface_names() -> list[str]:
    return [name for _, name in socket.if_nameindex()]
