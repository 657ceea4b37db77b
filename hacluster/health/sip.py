"""SIP OPTIONS check (RFC 3261 11.1) over UDP or TCP.

We send one OPTIONS request (over UDP retransmitted on timer E: T1, 2*T1, ... as RFC 3261
17.1.2.2 asks of a non-INVITE client transaction) and take the first final response whose
Call-ID and CSeq are ours. 1xx answers are provisional and skipped; a stray answer to
someone else's request is ignored, never counted.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket

from hacluster.health.base import Attempt, Outcome, bounded, close_writer, hostport
from hacluster.health.spec import SipCheck

T1_S = 0.5  # RFC 3261 T1: the first UDP retransmission interval
T2_S = 4.0  # RFC 3261 T2: the cap of the non-INVITE retransmission interval
MAX_MESSAGE = 64 * 1024
_COMPACT = {"i": "call-id", "l": "content-length", "v": "via", "f": "from", "t": "to"}


class _BadAnswer(Exception):
    pass


def target(spec: SipCheck, host: str) -> str:
    return f"sip:{hostport(host, spec.port)};transport={spec.transport}"


def build_options(spec: SipCheck, host: str, local: tuple[str, int], call_id: str,
                  branch: str, tag: str) -> bytes:
    """The OPTIONS request. `branch` gets the RFC 3261 magic cookie prefix here."""
    param = ";transport=tcp" if spec.transport == "tcp" else ""
    uri = f"sip:{hostport(host, spec.port)}"
    me = hostport(*local)
    me_host = f"[{local[0]}]" if ":" in local[0] else local[0]
    lines = [
        f"OPTIONS {uri}{param} SIP/2.0",
        f"Via: SIP/2.0/{spec.transport.upper()} {me};branch=z9hG4bK{branch};rport",
        "Max-Forwards: 70",
        f"To: <{uri}>",
        f"From: \"hacluster\" <sip:hacluster@{me_host}>;tag={tag}",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:hacluster@{me}{param}>",
        "Accept: application/sdp",
        "User-Agent: hacluster-health/1",
        "Content-Length: 0",
        "", "",
    ]
    return "\r\n".join(lines).encode("ascii")


def parse_response(data: bytes) -> tuple[int, str, dict[str, str]]:
    """Status code, reason, and headers (lower-case full names) of a SIP response."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.replace("\r\n", "\n").split("\n")
    m = re.fullmatch(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0].strip())
    if not m:
        raise _BadAnswer("not a SIP response")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), value.strip())
    return int(m.group(1)), m.group(2).strip(), headers


def _ours(headers: dict[str, str], call_id: str) -> bool:
    cseq = headers.get("cseq", "").split()
    return headers.get("call-id") == call_id and cseq[-1:] == ["OPTIONS"] and cseq[:1] == ["1"]


def _verdict(spec: SipCheck, at: Attempt, code: int, reason: str) -> Outcome:
    if code in spec.expect_status:
        return at.ok()
    want = ", ".join(map(str, spec.expect_status))
    return at.answered_bad(f"SIP {code} {reason}".rstrip() + f", expected {want}")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.inbox.put_nowait(exc)


async def _over_udp(spec: SipCheck, host: str, at: Attempt, ids: tuple[str, str, str]) -> Outcome:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, spec.port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    transport, proto = await loop.create_datagram_endpoint(_Udp, remote_addr=addr, family=family)
    try:
        local = transport.get_extra_info("sockname")[:2]
        request = build_options(spec, host, local, *ids)
        at.step = "waiting for a SIP response"
        wait = T1_S
        transport.sendto(request)
        while True:
            try:
                got = await asyncio.wait_for(proto.inbox.get(), wait)
            except TimeoutError:
                transport.sendto(request)  # timer E fired: retransmit, same branch
                wait = min(wait * 2, T2_S)  # RFC 3261 §17.1.2.2: timer E doubles up to T2
                continue
            if isinstance(got, ConnectionRefusedError):
                return Attempt.failed("connection refused (ICMP port unreachable)")
            if isinstance(got, Exception):
                raise got
            try:
                code, reason, headers = parse_response(got)
            except _BadAnswer:
                continue  # a stray datagram is no verdict
            if _ours(headers, ids[0]) and code >= 200:
                return _verdict(spec, at, code, reason)
    finally:
        transport.close()


async def _over_tcp(spec: SipCheck, host: str, at: Attempt, ids: tuple[str, str, str]) -> Outcome:
    reader, writer = await asyncio.open_connection(host, spec.port, limit=MAX_MESSAGE)
    try:
        local = writer.get_extra_info("sockname")[:2]
        writer.write(build_options(spec, host, local, *ids))
        await writer.drain()
        at.step = "waiting for a SIP response"
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                return at.answered_bad("SIP response header too large")
            code, reason, headers = parse_response(head)
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(min(length, MAX_MESSAGE))
            if _ours(headers, ids[0]) and code >= 200:
                return _verdict(spec, at, code, reason)
    except _BadAnswer as e:
        return at.answered_bad(str(e))
    except ValueError:
        return at.answered_bad("malformed Content-Length")
    finally:
        close_writer(writer)


async def probe(spec: SipCheck, host: str) -> Outcome:
    ids = (secrets.token_hex(12) + "@hacluster", secrets.token_hex(8), secrets.token_hex(6))
    run = _over_udp if spec.transport == "udp" else _over_tcp
    return await bounded(spec.timeout_ms, lambda at: run(spec, host, at, ids))
