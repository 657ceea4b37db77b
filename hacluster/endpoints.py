"""HOST:PORT, parsed one way everywhere (admin bind, metrics listener, CLI --admin, gRPC peers).

Accepted: `HOST:PORT`, where HOST is a name or an IPv4 address, and `[IPv6]:PORT`. A bare
IPv6 address without brackets is refused rather than guessed at (`::1:9464` could be a port
or part of the address).
"""

from __future__ import annotations

import ipaddress


def parse_hostport(text: str, *, min_port: int = 0) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host without brackets, port); ValueError says what is wrong.

    min_port: 0 where the OS may pick the port (a listener), 1 where a real port is needed
    (an address to connect to).
    """
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not min_port <= int(port_s) <= 65535:
        raise ValueError(f"must be HOST:PORT or [IPv6]:PORT with a port of {min_port}-65535 "
                         f"(0.0.0.0:PORT for every IPv4 address), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"an IPv6 address goes in brackets ([::1]:9464), got {text!r}")
    return host, int(port_s)


def peer_host(peer: str) -> str:
    """gRPC's peer string -> its host: "ipv4:10.0.0.5:41234" -> "10.0.0.5", "ipv6:[::1]:41234"
    -> "::1"; anything else is returned as it came (it is only used to group log lines)."""
    _, _, rest = peer.partition(":")
    try:
        return parse_hostport(rest)[0]
    except ValueError:
        return rest or peer
