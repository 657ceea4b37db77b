"""TCP connect check against real loopback sockets."""

from __future__ import annotations

import asyncio

from hacluster.health import tcp
from hacluster.health.spec import TcpCheck

from .conftest import HOST, PATIENT_MS


def spec(port: int, timeout_ms: int = PATIENT_MS) -> TcpCheck:
    return TcpCheck(name="t", kind="tcp", port=port, timeout_ms=timeout_ms)


def test_listening_port_passes(listening_port):
    out = asyncio.run(tcp.probe(spec(listening_port), HOST))
    assert out.ok and out.error == ""
    assert out.latency_ms is not None and out.latency_ms >= 0


def test_closed_port_is_refused(closed_port):
    out = asyncio.run(tcp.probe(spec(closed_port), HOST))
    assert not out.ok
    assert out.error == "connection refused"
    assert out.latency_ms is None


def test_unanswered_syn_times_out(unanswered_syn_port):
    out = asyncio.run(tcp.probe(spec(unanswered_syn_port, timeout_ms=200), HOST))
    assert not out.ok
    assert out.error == "timed out after 200 ms connecting"
    assert out.latency_ms is None


def test_target_brackets_ipv6():
    assert tcp.target(spec(5432), "::1") == "[::1]:5432"
    assert tcp.target(spec(5432), HOST) == "127.0.0.1:5432"
