"""HTTP and HTTPS checks against real http.server instances (TLS from a throwaway CA)."""

from __future__ import annotations

import asyncio
from typing import Any

from hacluster.health import http
from hacluster.health.spec import HttpCheck, HttpsCheck

from .conftest import HOST, PATIENT_MS, probe_until_stuck


def h(port: int, **kw: Any) -> HttpCheck:
    return HttpCheck(name="web", kind="http", port=port, **{"timeout_ms": PATIENT_MS, **kw})


def hs(port: int, **kw: Any) -> HttpsCheck:
    return HttpsCheck(name="web-tls", kind="https", port=port, **{"timeout_ms": PATIENT_MS, **kw})


def probe(spec: HttpCheck) -> Any:
    return asyncio.run(http.probe(spec, HOST))


def test_http_passes_with_body_match(http_server):
    out = probe(h(http_server.port, body_match=r"backend n\d ok"))
    assert out.ok, out.error
    assert out.latency_ms is not None


def test_http_status_mismatch(http_server):
    out = probe(h(http_server.port, path="/fail"))
    assert not out.ok
    assert out.error == "status 503, expected 200"
    assert out.latency_ms is not None  # the server answered: its latency counts


def test_http_expected_non_200_status_passes(http_server):
    assert probe(h(http_server.port, path="/fail", expect_status=[200, 503])).ok


def test_http_body_mismatch(http_server):
    out = probe(h(http_server.port, body_match="^maintenance$"))
    assert not out.ok
    assert out.error == "body does not match /^maintenance$/"


def test_http_chunked_body_is_decoded(http_server):
    assert probe(h(http_server.port, path="/chunked", body_match="hello from chunks")).ok


def test_http_hanging_server_times_out(http_server):
    out = probe_until_stuck(http.probe, h(http_server.port, path="/hang"), http_server.hanging.is_set)
    assert not out.ok
    assert out.error == "timed out after 10000 ms waiting for the response"


def request_seen(srv) -> bytes:
    """What the server got, once it is a whole request head (b"" until then)."""
    data = b"".join(srv.seen)
    return data if data.endswith(b"\r\n\r\n") else b""


def test_http_silent_tcp_times_out(silent_tcp):
    out = probe_until_stuck(http.probe, h(silent_tcp.port), lambda: request_seen(silent_tcp))
    assert out.error == "timed out after 10000 ms waiting for the response"
    request = request_seen(silent_tcp).decode()
    assert request.startswith("GET / HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{silent_tcp.port}\r\n" in request
    assert "Connection: close\r\n" in request and request.endswith("\r\n\r\n")


def test_http_closed_port(closed_port):
    assert probe(h(closed_port)).error == "connection refused"


def test_host_header_override(stream_server):
    async def answer(reader, writer, srv):
        srv.seen.append(await reader.readuntil(b"\r\n\r\n"))  # before the answer, so before probe() returns
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    srv = stream_server(answer)
    out = probe(h(srv.port, host_header="pacs.hospital.example"))
    assert out.ok, out.error
    assert "Host: pacs.hospital.example\r\n" in srv.seen[0].decode()


def test_https_verified_with_ca_file(https_server, pki):
    out = probe(hs(https_server.port, ca_file=str(pki.ca_file), body_match="ok"))
    assert out.ok, out.error


def test_https_verified_by_server_name(https_server, pki):
    assert probe(hs(https_server.port, ca_file=str(pki.ca_file), server_name="backend.test")).ok


def test_https_wrong_server_name_fails(https_server, pki):
    out = probe(hs(https_server.port, ca_file=str(pki.ca_file), server_name="other.test"))
    assert not out.ok
    assert out.error.startswith("TLS certificate verify failed: ")
    assert "other.test" in out.error


def test_https_unknown_ca_fails(https_server):
    out = probe(hs(https_server.port))  # the system trust store does not know our CA
    assert not out.ok
    assert out.error.startswith("TLS certificate verify failed: ")
    assert "self-signed" in out.error or "unable to get local issuer" in out.error


def test_https_verify_off_passes(https_server):
    assert probe(hs(https_server.port, verify=False)).ok


def test_https_status_mismatch(https_server, pki):
    out = probe(hs(https_server.port, ca_file=str(pki.ca_file), path="/fail"))
    assert out.error == "status 503, expected 200"


def test_https_hanging_handshake_times_out(silent_tcp):
    # stuck once the ClientHello (a TLS handshake record, 0x16) has arrived
    out = probe_until_stuck(http.probe, hs(silent_tcp.port, verify=False),
                            lambda: b"".join(silent_tcp.seen)[:1] == b"\x16")
    assert out.error == "timed out after 10000 ms in the TLS handshake"


def test_https_missing_ca_file(https_server, tmp_path):
    out = probe(hs(https_server.port, ca_file=str(tmp_path / "nope.pem")))
    assert not out.ok and "no such file" in out.error


def test_targets():
    assert http.target(h(8080, path="/health"), HOST) == "http://127.0.0.1:8080/health"
    assert http.target(hs(443), "::1") == "https://[::1]:443/"
