"""SIP OPTIONS over UDP and TCP against real responders."""

from __future__ import annotations

import asyncio
import re

import pytest

from hacluster.health import sip
from hacluster.health.spec import SipCheck

from .conftest import HOST, PATIENT_MS, probe_until_stuck


def spec(port: int, **kw) -> SipCheck:
    return SipCheck(name="pbx", kind="sip", port=port, **{"timeout_ms": PATIENT_MS, **kw})


def probe(s: SipCheck):
    return asyncio.run(sip.probe(s, HOST))


def assert_well_formed(request: bytes, port: int, transport: str) -> None:
    """RFC 3261 8.1.1: the mandatory headers, a magic-cookie branch, no body."""
    text = request.decode("ascii")
    head, _, body = text.partition("\r\n\r\n")
    assert body == ""
    lines = head.split("\r\n")
    param = ";transport=tcp" if transport == "tcp" else ""
    assert lines[0] == f"OPTIONS sip:127.0.0.1:{port}{param} SIP/2.0"
    headers = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[1:]}
    assert re.fullmatch(rf"SIP/2\.0/{transport.upper()} 127\.0\.0\.1:\d+;branch=z9hG4bK[0-9a-f]+;rport",
                        headers["Via"])
    assert headers["Max-Forwards"] == "70"
    assert headers["To"] == f"<sip:127.0.0.1:{port}>"
    assert re.fullmatch(r'"hacluster" <sip:hacluster@127\.0\.0\.1>;tag=[0-9a-f]+', headers["From"])
    assert re.fullmatch(r"[0-9a-f]+@hacluster", headers["Call-ID"])
    assert headers["CSeq"] == "1 OPTIONS"
    assert headers["Content-Length"] == "0"
    assert "Contact" in headers


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_200_passes(transport, sip_udp, sip_tcp):
    srv = sip_udp(200, "OK") if transport == "udp" else sip_tcp(200, "OK")
    out = probe(spec(srv.port, transport=transport))
    assert out.ok, out.error
    assert_well_formed(srv.seen[0], srv.port, transport)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_503_fails(transport, sip_udp, sip_tcp):
    srv = sip_udp(503, "Service Unavailable") if transport == "udp" else sip_tcp(503, "Service Unavailable")
    out = probe(spec(srv.port, transport=transport))
    assert not out.ok
    assert out.error == "SIP 503 Service Unavailable, expected 200"
    assert out.latency_ms is not None


def test_expect_status_list(sip_udp):
    srv = sip_udp(405, "Method Not Allowed")  # some PBXes refuse OPTIONS, yet are alive
    assert probe(spec(srv.port, expect_status=[200, 405])).ok


def test_udp_silent_retransmits_then_times_out(sip_udp):
    srv = sip_udp(None)
    # Timer E: unanswered for T1, the request goes again. How often it goes in a given time is
    # the clock's business, not this test's: the timeout expires once the server has it twice.
    out = probe_until_stuck(sip.probe, spec(srv.port), lambda: len(srv.seen) >= 2)
    assert out.error == "timed out after 10000 ms waiting for a SIP response"
    sent = list(srv.seen)
    assert len(sent) >= 2
    assert all(d == sent[0] for d in sent), "a retransmission must be the same request (same branch)"
    assert_well_formed(sent[0], srv.port, "udp")


def test_tcp_silent_times_out(silent_tcp):
    out = probe_until_stuck(sip.probe, spec(silent_tcp.port, transport="tcp"),
                            lambda: b"".join(silent_tcp.seen).endswith(b"\r\n\r\n"))
    assert out.error == "timed out after 10000 ms waiting for a SIP response"


def test_udp_closed_port_is_refused(closed_port):
    out = probe(spec(closed_port))
    assert out.error == "connection refused (ICMP port unreachable)"


def test_parse_response_compact_headers():
    code, reason, headers = sip.parse_response(b"SIP/2.0 200 OK\r\ni: abc\r\nl: 0\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert (code, reason, headers["call-id"], headers["content-length"]) == (200, "OK", "abc", "0")
