"""HL7 v2 over MLLP: send one message, read the framed ACK, accept it by MSA-1 and MSA-2.

MLLP frames a message as <VT> message <FS><CR> (0x0B ... 0x1C 0x0D). The ACK must echo our
control id in MSA-2: an engine that answers with someone else's ACK (a stuck queue
replaying) is not healthy. Why the probe is NMD^N02 by default: see spec.MllpCheck.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from hacluster.health.base import Attempt, Outcome, bounded, close_writer, hostport
from hacluster.health.spec import MllpCheck

START, END = b"\x0b", b"\x1c\x0d"
MAX_ACK = 1024 * 1024  # an ACK is a few hundred bytes; this bounds a misbehaving peer


class _BadAck(Exception):
    pass


def target(spec: MllpCheck, host: str) -> str:
    return f"mllp://{hostport(host, spec.port)}"


def new_control_id() -> str:
    # MSH-10 is at most 20 characters in v2.5; 16 hex digits make a collision negligible.
    return "HC" + secrets.token_hex(8).upper()


def build_message(spec: MllpCheck, control_id: str, now: float | None = None) -> str:
    """The probe message, segments joined by CR (HL7 v2 2.7), without MLLP framing."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + "+0000"
    msh = "|".join([
        "MSH", "^~\\&", spec.sending_app, spec.sending_facility, spec.receiving_app,
        spec.receiving_facility, stamp, "", spec.message_type, control_id,
        "P",  # processing id: many engines drop T/D messages in production
        spec.version,
    ])
    segments = [msh]
    if spec.message_type.startswith("NMD^N02"):
        segments.append(f"NCK|{stamp}")  # system clock: the one NMD segment needing no setup
    return "\r".join(segments) + "\r"


def frame(message: str) -> bytes:
    return START + message.encode("ascii") + END


def parse_ack(payload: bytes) -> tuple[str, str, str]:
    """(MSA-1 ack code, MSA-2 control id, MSA-3 or ERR text) from an unframed ACK."""
    text = payload.decode("latin-1")
    segments = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        raise _BadAck("reply is not an HL7 message (no MSH)")
    sep = segments[0][3]
    comp = segments[0][4] if len(segments[0]) > 4 else "^"
    msa = next((s.split(sep) for s in segments if s.startswith("MSA" + sep)), None)
    if msa is None:
        raise _BadAck("reply has no MSA segment")
    code = msa[1].strip() if len(msa) > 1 else ""
    echoed = msa[2].strip() if len(msa) > 2 else ""
    detail = msa[3].strip() if len(msa) > 3 else ""
    if not detail:  # v2.5+ moved the text to ERR-8 (user message) or ERR-3 (error code)
        err = next((s.split(sep) for s in segments if s.startswith("ERR" + sep)), None)
        if err:
            picked = err[8] if len(err) > 8 and err[8] else (err[3] if len(err) > 3 else "")
            detail = picked.split(comp)[1 if comp in picked else 0].strip()
    return code, echoed, detail[:200]


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One MLLP frame's payload. Bytes before <VT> are skipped, as receivers commonly do."""
    buf = b""
    while END not in buf:
        chunk = await reader.read(4096)
        if not chunk:
            raise _BadAck("connection closed before the ACK was complete")
        buf += chunk
        if len(buf) > MAX_ACK:
            raise _BadAck(f"ACK larger than {MAX_ACK} bytes")
    body = buf[: buf.index(END)]
    start = body.find(START)
    if start < 0:
        raise _BadAck("reply is not MLLP framed (no start block)")
    return body[start + 1:]


async def probe(spec: MllpCheck, host: str) -> Outcome:
    control_id = new_control_id()

    async def run(at: Attempt) -> Outcome:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, spec.port)
            at.step = "waiting for the ACK"
            writer.write(frame(build_message(spec, control_id)))
            await writer.drain()
            code, echoed, detail = parse_ack(await read_frame(reader))
        except _BadAck as e:
            return at.answered_bad(str(e))
        finally:
            close_writer(writer)
        if code not in spec.accept:
            return at.answered_bad(f"MSA-1 {code or '(empty)'}" + (f": {detail}" if detail else ""))
        if echoed != control_id:
            # Not the id itself in the text: it changes every attempt (base.py).
            return at.answered_bad("ACK is for another message (MSA-2 does not echo our control id)")
        return at.ok()

    return await bounded(spec.timeout_ms, run)
