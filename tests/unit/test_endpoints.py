"""HOST:PORT is parsed one way (hacluster.endpoints): the admin bind, metrics.listen, the
CLI's --admin and gRPC peer strings all go through it."""

from __future__ import annotations

import pytest

from hacluster.endpoints import parse_hostport, peer_host


@pytest.mark.parametrize("bind, want", [("127.0.0.1:9464", ("127.0.0.1", 9464)),
                                        ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9464", ("::1", 9464)),
                                        ("localhost:80", ("localhost", 80))])
def test_parse_hostport(bind: str, want: tuple[str, int]) -> None:
    assert parse_hostport(bind) == want


@pytest.mark.parametrize("bind", ["9464", ":9464", "127.0.0.1:", "127.0.0.1:65536", "::1:9464",
                                  "[nope]:9464", "127.0.0.1:x"])
def test_parse_hostport_refuses(bind: str) -> None:
    with pytest.raises(ValueError, match="9464|HOST:PORT|IPv6"):
        parse_hostport(bind)


def test_a_port_to_connect_to_must_not_be_zero() -> None:
    with pytest.raises(ValueError, match="1-65535"):
        parse_hostport("10.0.0.1:0", min_port=1)
    assert parse_hostport("10.0.0.1:7101", min_port=1) == ("10.0.0.1", 7101)


@pytest.mark.parametrize("peer, host", [("ipv4:10.0.0.5:41234", "10.0.0.5"), ("ipv6:[::1]:41234", "::1"),
                                        ("unix:/run/x.sock", "/run/x.sock"), ("weird", "weird")])
def test_peer_host_drops_the_ever_changing_source_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host
