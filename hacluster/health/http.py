"""HTTP and HTTPS GET checks on plain asyncio streams.

One request per attempt with `Connection: close`, so no state survives between attempts
and a backend that dies between two checks cannot hide behind a pooled connection. The
body is only read when body_match is set, and then at most BODY_LIMIT bytes of it: the
check measures the time to the response headers, not the download.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl

from hacluster.health.base import Attempt, Outcome, bounded, close_writer, hostport
from hacluster.health.spec import HttpCheck, HttpsCheck

BODY_LIMIT = 64 * 1024
_MAX_HEADERS = 100
_USER_AGENT = "hacluster-health/1"


class _BadAnswer(Exception):
    """The peer spoke, but not HTTP as we know it."""


def _is_https(spec: HttpCheck) -> bool:
    return isinstance(spec, HttpsCheck)


def target(spec: HttpCheck, host: str) -> str:
    scheme = "https" if _is_https(spec) else "http"
    return f"{scheme}://{hostport(host, spec.port)}{spec.path}"


def _host_header(spec: HttpCheck, host: str) -> str:
    if spec.host_header:
        return spec.host_header
    name = spec.server_name if isinstance(spec, HttpsCheck) and spec.server_name else host
    default = 443 if _is_https(spec) else 80
    if spec.port == default:
        return f"[{name}]" if ":" in name else name
    return hostport(name, spec.port)


@functools.lru_cache(maxsize=32)
def _context(verify: bool, ca_file: str | None, _ca_mtime: float) -> ssl.SSLContext:
    # Cached: loading the system trust store costs milliseconds of CPU per attempt. The
    # file's mtime is part of the key, so a rotated CA bundle is picked up.
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca_file)


def ssl_context(spec: HttpsCheck) -> ssl.SSLContext:
    mtime = 0.0
    if spec.verify and spec.ca_file:
        mtime = os.stat(spec.ca_file).st_mtime  # OSError: reported as the check's error
    return _context(spec.verify, spec.ca_file if spec.verify else None, mtime)


def _request(spec: HttpCheck, host: str) -> bytes:
    lines = [f"GET {spec.path} HTTP/1.1", f"Host: {_host_header(spec, host)}",
             f"User-Agent: {_USER_AGENT}", "Accept: */*", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("ascii")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Status code, reason and headers (lower-case names) of the first final response."""
    while True:
        line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            raise _BadAnswer("connection closed before the status line")
        m = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", line)
        if not m:
            raise _BadAnswer("not an HTTP response")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            h = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not h:
                break
            name, sep, value = h.partition(":")
            if not sep:
                raise _BadAnswer("malformed header line")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadAnswer(f"more than {_MAX_HEADERS} header lines")
        status = int(m.group(1))
        if not 100 <= status < 200 or status == 101:  # skip 100 Continue and friends
            return status, (m.group(2) or "").strip(), headers


async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> bytes:
    if status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < BODY_LIMIT:
            size_line = (await reader.readline()).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BadAnswer("malformed chunked body") from None
            if size == 0:
                break
            body += await reader.readexactly(min(size, BODY_LIMIT - len(body)))
            if len(body) < BODY_LIMIT:
                await reader.readexactly(2)  # the CRLF after a chunk
        return body
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise _BadAnswer("malformed Content-Length") from None
        return await reader.readexactly(min(length, BODY_LIMIT))
    return await reader.read(BODY_LIMIT)  # until the server closes (Connection: close)


def _expected(codes: list[int]) -> str:
    return str(codes[0]) if len(codes) == 1 else "one of " + ", ".join(map(str, codes))


async def probe(spec: HttpCheck, host: str) -> Outcome:
    async def run(at: Attempt) -> Outcome:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, spec.port)
            if isinstance(spec, HttpsCheck):
                at.step = "in the TLS handshake"
                name = spec.server_name or host
                await writer.start_tls(ssl_context(spec), server_hostname=name)
            at.step = "waiting for the response"
            writer.write(_request(spec, host))
            await writer.drain()
            status, _reason, headers = await _read_head(reader)
            if status not in spec.expect_status:
                return at.answered_bad(f"status {status}, expected {_expected(spec.expect_status)}")
            if spec.body_match is not None:
                at.step = "reading the body"
                body = (await _read_body(reader, status, headers)).decode("utf-8", "replace")
                if not re.search(spec.body_match, body):
                    return at.answered_bad(f"body does not match /{spec.body_match}/")
            return at.ok()
        except _BadAnswer as e:
            return at.answered_bad(str(e))
        except ssl.SSLError:
            raise  # some are ValueErrors too; base.describe_error words them
        except ValueError:  # a line longer than the stream limit
            return at.answered_bad("header line too long")
        finally:
            close_writer(writer)

    return await bounded(spec.timeout_ms, run)

