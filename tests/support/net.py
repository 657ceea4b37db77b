"""Free TCP ports on the loopback, for tests that start real listeners on 127.0.0.1."""

from __future__ import annotations

import socket

LO = "127.0.0.1"


def free_tcp_ports(n: int, host: str = LO) -> list[int]:
    """n distinct ports free on `host` right now: all bound at once, so none repeats."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
