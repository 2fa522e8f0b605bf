"""The listening socket, and what to say when it cannot be opened."""

from __future__ import annotations

import errno
import socket


class ListenError(OSError):
    """The listening socket could not be opened: says where, why, and how to choose another port."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        where = f"{host or '*'}:{port}"
        if cause.errno == errno.EADDRINUSE:
            reason = "the address is already in use (another botpress-py, or another program, listens there)"
            other = port + 1 if 0 < port < 65535 else 3001
            hint = f"stop it, or pick another port: botpress-py start --port {other} (or PORT={other})"
        elif cause.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges)"
            hint = "pick a port above 1023 with --port or PORT"
        elif cause.errno == errno.EADDRNOTAVAIL or isinstance(cause, socket.gaierror):
            reason = f"no such local address ({cause.strerror or cause})"
            hint = "fix httpServer.host in botpress.config.json, BP_HOST or --host"
        else:
            reason = cause.strerror or str(cause)
            hint = "pick another host or port with --host/BP_HOST and --port/PORT"
        super().__init__(cause.errno, f"cannot listen on {where}: {reason}; {hint}")
        self.host, self.port = host, port


def bind_listener(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket on the first address ``host`` resolves to (IPv4 or IPv6).

    ``reuse_port``: SO_REUSEPORT, so the other workers of ``start --workers`` bind the same port
    (the kernel spreads connections over them; workers.py says why).
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        raise ListenError(host, port, exc) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(host, port, exc) from None
    sock.setblocking(False)
    return sock
