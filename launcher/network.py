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


def _from_getifaddrs() -> list[tuple[str, str]] | None:
    """Every (interface, address) pair, from libc's ``getifaddrs(3)``; None where it is unavailable.

    Unlike the ``SIOCGIFADDR`` ioctl, which reports one IPv4 address per interface (the primary),
    this lists secondary addresses too: a VIP or a second address added with ``ip addr add``.
    The offsets below are those of Linux's ``struct sockaddr_in``/``sockaddr_in6``.
    """
    try:
        import ctypes  # absent from a Python built without libffi

        libc = ctypes.CDLL(None)  # the symbols already loaded into this process, libc's included
        getifaddrs, freeifaddrs = libc.getifaddrs, libc.freeifaddrs
    except (ImportError, OSError, AttributeError):
        return None

    class IfAddrs(ctypes.Structure):
        """``struct ifaddrs`` up to ``ifa_addr``: the fields after it are never read."""

    IfAddrs._fields_ = [
        ("ifa_next", ctypes.POINTER(IfAddrs)),
        ("ifa_name", ctypes.c_char_p),
        ("ifa_flags", ctypes.c_uint),
        ("ifa_addr", ctypes.c_void_p),
    ]
    head = ctypes.POINTER(IfAddrs)()
    if getifaddrs(ctypes.byref(head)) != 0:
        return None
    found: list[tuple[str, str]] = []
    try:
        entry = head
        while entry:
            name, sockaddr = entry.contents.ifa_name.decode(), entry.contents.ifa_addr
            family = ctypes.c_ushort.from_address(sockaddr).value if sockaddr else None
            if family == socket.AF_INET:
                found.append((name, socket.inet_ntop(family, ctypes.string_at(sockaddr + 4, 4))))
            elif family == socket.AF_INET6:
                found.append((name, socket.inet_ntop(family, ctypes.string_at(sockaddr + 8, 16))))
            entry = entry.contents.ifa_next
    finally:
        freeifaddrs(head)
    return found


def _primary_ipv4_address_of(interface: str) -> str | None:
    """The interface's primary IPv4 address (``SIOCGIFADDR`` sees no secondary ones)."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", interface.encode()[:15]))
        except OSError:
            return None  # no IPv4 address on this interface
    return socket.inet_ntoa(reply[20:24])


def _from_ioctl_and_proc() -> list[tuple[str, str]]:
    """The fallback without ``getifaddrs``: primary IPv4 addresses, and IPv6 from /proc."""
    found = [(name, address) for _, name in socket.if_nameindex()
             if (address := _primary_ipv4_address_of(name)) is not None]
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        found.append((fields[-1], socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0]))))
    return found


def interface_addresses() -> list[tuple[str, str]]:
    """Every (interface, address) pair of this machine: IPv4 (primary and secondary) and IPv6."""
    found = _from_getifaddrs()
    return _from_ioctl_and_proc() if found is None else found


def interface_of(address: str) -> str | None:
    """The network interface that carries ``address`` on this machine (Linux), if any.

    A link-local IPv6 address may sit on several interfaces; its scope (``fe80::1%eth0``) decides.
    """
    sockaddr = socket.getaddrinfo(address, None)[0][4]
    resolved = sockaddr[0]
    assert isinstance(resolved, str)  # an IPv4 or IPv6 sockaddr starts with the host
    carriers = [name for name, held in interface_addresses() if held == resolved]
    if len(sockaddr) == 4 and sockaddr[3]:  # IPv6 with a scope id: an interface's index
        scope = dict(socket.if_nameindex()).get(sockaddr[3])
        if scope in carriers:
            return scope
    return carriers[0] if carriers else None


def interface_names() -> list[str]:
    return [name for _, name in socket.if_nameindex()]
