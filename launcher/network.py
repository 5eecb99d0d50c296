"""Ports and addresses on this machine."""

from __future__ import annotations

import errno
import socket


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


def check_port_free(address: str, port: int) -> None:
    try:
        with _bind(address, port) as sock:
            sock.listen(1)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise PortUnavailable(f"port {port} is already in use on {address}") from err
        if err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise PortUnavailable(f"{address} is not an address of this machine") from err
        if isinstance(err, socket.gaierror):
            raise PortUnavailable(f"cannot resolve {address}: {err.strerror}") from err
        raise PortUnavailable(f"cannot listen on {address}:{port}: {err.strerror}") from err
