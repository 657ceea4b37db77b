"""HL7 v2 over MLLP against real asyncio MLLP listeners."""

from __future__ import annotations

import asyncio
import re

import pytest

from hacluster.health import mllp
from hacluster.health.spec import MllpCheck

from .conftest import HOST, PATIENT_MS, probe_until_stuck


def spec(port: int, **kw) -> MllpCheck:
    return MllpCheck(name="hl7", kind="mllp", port=port, **{"timeout_ms": PATIENT_MS, **kw})


def probe(s: MllpCheck):
    return asyncio.run(mllp.probe(s, HOST))


def test_ack_aa_passes_and_message_is_valid_hl7(mllp_server):
    srv = mllp_server("AA")
    out = probe(spec(srv.port, receiving_app="ADT-ENGINE", receiving_facility="GENERAL"))
    assert out.ok, out.error
    [message] = srv.seen
    segments = message.decode("ascii").split("\r")
    assert segments[-1] == ""  # every segment ends with CR
    msh = segments[0].split("|")
    assert msh[0] == "MSH" and msh[1] == "^~\\&"
    assert msh[2:6] == ["HACLUSTER", "HACLUSTER", "ADT-ENGINE", "GENERAL"]
    assert re.fullmatch(r"\d{14}\+0000", msh[6])  # MSH-7 date/time of message
    assert msh[8] == "NMD^N02^NMD_N02"  # MSH-9
    assert re.fullmatch(r"HC[0-9A-F]{16}", msh[9])  # MSH-10 control id, <= 20 chars
    assert msh[10:12] == ["P", "2.5"]  # MSH-11 processing id, MSH-12 version
    assert segments[1].startswith("NCK|") and segments[1][4:] == msh[6]


def test_each_attempt_has_a_new_control_id(mllp_server):
    srv = mllp_server("AA")
    assert probe(spec(srv.port)).ok and probe(spec(srv.port)).ok
    ids = {m.split(b"\r")[0].split(b"|")[9] for m in srv.seen}
    assert len(ids) == 2


def test_ack_ae_fails_with_text(mllp_server):
    out = probe(spec(mllp_server("AE", "queue full").port))
    assert not out.ok
    assert out.error == "MSA-1 AE: queue full"
    assert out.latency_ms is not None


def test_commit_accept_is_accepted_by_default(mllp_server):
    assert probe(spec(mllp_server("CA").port)).ok


def test_accept_list_is_honoured(mllp_server):
    out = probe(spec(mllp_server("CA").port, accept=["AA"]))
    assert out.error == "MSA-1 CA"


def test_ack_for_another_message_fails(stream_server):
    async def replay(reader, writer, srv):
        await reader.readuntil(b"\x1c\x0d")
        writer.write(b"\x0bMSH|^~\\&|E|F|A|B|20240101||ACK|X1|P|2.5\rMSA|AA|SOMEONE-ELSE\r\x1c\x0d")
        await writer.drain()

    out = probe(spec(stream_server(replay).port))
    assert out.error == "ACK is for another message (MSA-2 does not echo our control id)"


def test_garbage_reply_fails(stream_server):
    async def garbage(reader, writer, srv):
        await reader.readuntil(b"\x1c\x0d")
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()

    out = probe(spec(stream_server(garbage).port))
    assert not out.ok and out.error == "connection closed before the ACK was complete"


def test_silent_listener_times_out(silent_tcp):
    def framed() -> bytes:
        data = b"".join(silent_tcp.seen)
        return data if data.endswith(b"\x1c\x0d") else b""

    out = probe_until_stuck(mllp.probe, spec(silent_tcp.port), framed)
    assert out.error == "timed out after 10000 ms waiting for the ACK"
    assert framed().startswith(b"\x0bMSH|")


def test_closed_port(closed_port):
    assert probe(spec(closed_port)).error == "connection refused"


@pytest.mark.parametrize(("ack", "expected"), [
    (b"MSH|^~\\&|E|F|A|B|1||ACK|1|P|2.5\rMSA|AR|C1|bad message\r", ("AR", "C1", "bad message")),
    (b"MSH|^~\\&|E|F|A|B|1||ACK|1|P|2.5\nMSA|AA|C1\n", ("AA", "C1", "")),
    (b"MSH|^~\\&|E|F|A|B|1||ACK|1|P|2.5\rMSA|AE|C1\rERR||||E||||Unknown event\r",
     ("AE", "C1", "Unknown event")),
    (b"MSH|^~\\&|E|F|A|B|1||ACK|1|P|2.5\rMSA|AE|C1\rERR|||207^Application error^HL70357|E\r",
     ("AE", "C1", "Application error")),
])
def test_parse_ack(ack, expected):
    assert mllp.parse_ack(ack) == expected
