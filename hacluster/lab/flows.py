"""Persistent flows through the VIP, to see whether established connections survive a fault.

Run inside the lab's client namespace (hacluster.lab.continuity.FlowRun starts it there):

    python -m hacluster.lab.flows --host VIP [--flows 20] [--duration 6] [--avoid n1] ...

Three kinds of traffic, in one asyncio loop, all bounded in count and time:

* HTTP flows: `--flows K` connections, each `GET /slow/N?ms=M` from the lab backend, which
  answers its server's name and then a numbered line every M ms. Each records the backend
  that served it, bytes, the longest gap between two received chunks and how it ended:
  `completed` (every line in order, then `done`, then EOF), `broken` (reset, EOF too soon,
  lines out of order, or nothing for --read-timeout s) or `not-established`.
* HL7 v2 over MLLP: one connection (the `hl7` package's asyncio client) sending a message
  every --hl7-interval s with a unique control id (MSH-10), waiting for each ACK (AA, MSA-2
  naming it) before the next. When the connection breaks or an ACK is late by --ack-timeout
  s, it reconnects and sends the unACKed message again, as an interface engine does: that
  is how a failover produces reconnects and duplicates. At the end the backends' records
  (--seen NAME=FILE: the `hl7-received` lines of each backend.log) say which message was
  received how often.
* New connections: one `GET /` on a new connection every --probe-interval s (--probe-timeout
  s each): when did new connections fail.

Before the fault the client must be settled: every flow streaming for --warm s and the HL7
connection ACKing for as long. Flows and the HL7 connection served by a backend named in
--avoid (the server the caller will power off) are closed and opened again during set-up,
so that every measured flow goes to a backend that outlives the fault. Once settled, the
client prints one line `{"ready": WALL_TIME}`; everything ends --duration s after the start
of set-up plus --setup s, and the last line of stdout is the JSON document (the
accounting lives in hacluster.lab.continuity). Times are wall-clock seconds, like the
caller's fault time; the lab runs on one machine, so its namespaces share the clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import hl7
from hl7.mllp import open_hl7_connection

from hacluster.lab.backend import MLLP_PORT, RECEIVED_PREFIX

ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ValueError)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


# ------------------------------------------------------------------------- HTTP flows


@dataclass
class Flow:
    index: int
    backend: str | None = None
    outcome: str = "not-established"  # completed | broken | not-established
    error: str | None = None
    bytes: int = 0
    lines: int = 0  # the last stream line number received in order
    max_gap_ms: float = 0.0  # longest wait between two chunks once established
    max_gap_end: float | None = None  # when that wait ended (wall clock)
    opened: float | None = None
    ended: float | None = None
    tries: int = 0  # connections opened during set-up (avoided backends, failures)
    warm: bool = field(default=False, repr=False)


async def run_flow(flow: Flow, a: argparse.Namespace, end: float, stop_setup: asyncio.Event) -> None:
    """Open the flow (again, while it lands on an avoided backend), then read to the end."""
    while not stop_setup.is_set() and flow.tries < 50:
        flow.tries += 1
        seconds = max(1, math.ceil(end - time.time()))
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.http_port), 1.0)
        except ERRORS:
            await asyncio.sleep(0.1)
            continue
        try:
            w.write(f"GET /slow/{seconds}?ms={a.chunk_ms} HTTP/1.0\r\nHost: {a.host}\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 2.0)
            name = (await asyncio.wait_for(r.readline(), 2.0)).decode().strip()
        except ERRORS:
            w.close()
            await asyncio.sleep(0.1)
            continue
        if b" 200 " not in head.split(b"\r\n", 1)[0] or not name or name in a.avoid:
            w.close()
            continue
        flow.backend, flow.opened = name, time.time()
        flow.bytes = len(head) + len(name) + 1
        await _stream(flow, r, a)
        w.close()
        return


async def _stream(flow: Flow, r: asyncio.StreamReader, a: argparse.Namespace) -> None:
    last = time.monotonic()
    buf = b""
    try:
        while True:
            line = await asyncio.wait_for(r.readline(), a.read_timeout)
            now = time.monotonic()
            if not line:
                raise EOFError(f"connection closed after line {flow.lines}")
            flow.bytes += len(line)
            gap = (now - last) * 1000
            if gap > flow.max_gap_ms:
                flow.max_gap_ms, flow.max_gap_end = round(gap, 1), time.time()
            last = now
            buf += line
            if not line.endswith(b"\n"):
                continue  # readline at EOF: the next read says so
            text, buf = buf.strip().decode(errors="replace"), b""
            if text == "done":
                if await asyncio.wait_for(r.read(1), a.read_timeout):
                    raise ValueError("data after 'done'")
                flow.outcome = "completed"
                break
            if text != str(flow.lines + 1):
                raise ValueError(f"line {text!r} after line {flow.lines}")
            flow.lines += 1
            flow.warm = flow.lines * a.chunk_ms >= a.warm * 1000
    except TimeoutError:
        flow.outcome, flow.error = "broken", f"nothing for {a.read_timeout:g} s after line {flow.lines}"
    except ERRORS as e:
        flow.outcome, flow.error = "broken", _err(e)
    flow.ended = time.time()


# ----------------------------------------------------------------------------- HL7


@dataclass
class Hl7Record:
    connects: list[dict[str, Any]] = field(default_factory=list)  # every connection opened
    sent: int = 0  # distinct control ids sent
    transmissions: int = 0  # messages written, resends included
    acked: list[str] = field(default_factory=list)
    unacked: list[str] = field(default_factory=list)  # sent, never ACKed by the end
    mismatched_acks: int = 0  # an ACK naming another message, or not AA
    max_ack_ms: float = 0.0  # longest send-to-ACK of one message (resends included)
    max_ack_gap_ms: float = 0.0  # longest time between two ACKs
    max_ack_gap_end: float | None = None
    warm_since: float | None = field(default=None, repr=False)


def hl7_message(control_id: str, seq: int) -> hl7.Message:
    stamp = time.strftime("%Y%m%d%H%M%S")
    return hl7.parse(f"MSH|^~\\&|HACLAB|CLIENT|LAB|HOSP|{stamp}||ADT^A08^ADT_A01|{control_id}|P|2.5\r"
                     f"EVN|A08|{stamp}\rPID|1||{100000 + seq}^^^HOSP^MR||LAB^PATIENT^{seq}")


class Hl7Sender:
    def __init__(self, a: argparse.Namespace, run_id: str, end: float):
        self.a, self.run_id, self.end = a, run_id, end
        self.rec = Hl7Record()
        self.conn: tuple[Any, Any] | None = None
        self.ready_at: float | None = None  # None during set-up
        self.last_ack = time.monotonic()

    async def _connect(self, reason: str) -> None:
        """Connect (again) until a connection is up or the run ends; during set-up, until it
        lands on a backend not avoided (found by ACKing the first message: its MSH-3)."""
        tries = 0
        while time.time() < self.end and tries < 10_000:
            tries += 1
            try:
                r, w = await asyncio.wait_for(open_hl7_connection(self.a.host, self.a.mllp_port), 1.0)
            except ERRORS:
                await asyncio.sleep(0.1)
                continue
            self.conn = (r, w)
            self.rec.connects.append({"t": round(time.time(), 3), "reason": reason, "backend": None,
                                      "setup": self.ready_at is None})
            return

    async def _exchange(self, control_id: str, seq: int) -> str:
        """Send one message on the current connection and wait for its ACK: the backend that
        ACKed it. Raises on a broken connection or a late ACK."""
        assert self.conn is not None
        r, w = self.conn
        t0 = time.monotonic()
        w.writemessage(hl7_message(control_id, seq))
        self.rec.transmissions += 1
        deadline = t0 + self.a.ack_timeout
        await asyncio.wait_for(w.drain(), self.a.ack_timeout)
        while True:
            ack = await asyncio.wait_for(r.readmessage(), max(0.001, deadline - time.monotonic()))
            msa = ack.segment("MSA")
            if str(msa(1)) == "AA" and str(msa(2)) == control_id:
                break
            self.rec.mismatched_acks += 1
        now = time.monotonic()
        self.rec.max_ack_ms = max(self.rec.max_ack_ms, round((now - t0) * 1000, 1))
        gap = (now - self.last_ack) * 1000
        if gap > self.rec.max_ack_gap_ms and self.ready_at is not None:
            self.rec.max_ack_gap_ms, self.rec.max_ack_gap_end = round(gap, 1), time.time()
        self.last_ack = now
        return str(ack.segment("MSH")(3))

    async def run(self) -> None:
        seq = 0
        start = time.monotonic()
        pending: str | None = None
        await self._connect("start")
        while time.time() < self.end and self.conn is not None:
            if pending is None:
                seq += 1
                pending = f"{self.run_id}-{seq:06d}"
                self.rec.sent += 1
                await asyncio.sleep(max(0.0, start + seq * self.a.hl7_interval - time.monotonic()))
            try:
                backend = await self._exchange(pending, seq)
            except ERRORS as e:
                self._close()
                await self._connect(_err(e))
                continue  # the same message again on the new connection
            self.rec.acked.append(pending)
            pending = None
            conn = self.rec.connects[-1]
            conn["backend"] = conn["backend"] or backend
            if self.ready_at is None and backend in self.a.avoid:
                self._close()
                await self._connect(f"set-up: {backend} avoided")
                continue
            if self.rec.warm_since is None:
                self.rec.warm_since = time.time()
        if pending is not None:
            self.rec.unacked.append(pending)
        self._close()

    def _close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None

    def warm(self) -> bool:
        return self.rec.warm_since is not None and time.time() - self.rec.warm_since >= self.a.warm


def receipts(acked: list[str], received: dict[str, list[str] | None]) -> dict[str, Any]:
    """What the backends' records say about the messages: how many each received, which
    control ids arrived more than once (counted over every backend: a message resent to
    another backend after a failover is as duplicated as one received twice by the same),
    and which ACKed ones no backend recorded (never expected; the backends' files are the
    evidence, and a file that could not be read is named in `unreadable`)."""
    counts: Counter[str] = Counter()
    for ids in received.values():
        counts.update(ids or [])
    duplicates = {i: n for i, n in sorted(counts.items()) if n > 1}
    return {"by_backend": {name: None if ids is None else len(ids) for name, ids in received.items()},
            "unreadable": sorted(name for name, ids in received.items() if ids is None),
            "duplicates": len(duplicates), "duplicated_ids": dict(list(duplicates.items())[:50]),
            "acked_not_received": [i for i in acked if not counts[i]][:50]}


def read_received(paths: dict[str, str], run_id: str) -> dict[str, list[str]]:
    """Backend -> the control ids of this run it recorded, in order (a backend.log holds every
    run's records since the lab started; a file that cannot be read counts as None)."""
    out: dict[str, Any] = {}
    mine = f"{RECEIVED_PREFIX}{run_id}-"
    for name, path in paths.items():
        try:
            with open(path, errors="replace") as f:
                out[name] = [line[len(RECEIVED_PREFIX):].strip() for line in f if line.startswith(mine)]
        except OSError:
            out[name] = None
    return out


# ------------------------------------------------------------------------------ probe


async def probe(a: argparse.Namespace, end: float, out: list[list[Any]]) -> None:
    """One GET / on a new connection every interval, started on a fixed schedule; each
    attempt is [start, ok, why it failed ("" when ok)]."""
    async def one(t: float) -> None:
        why = "connect"
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.http_port), a.probe_timeout)
            why = "answer"
            try:
                w.write(f"GET / HTTP/1.0\r\nHost: {a.host}\r\n\r\n".encode())
                data = await asyncio.wait_for(r.read(), a.probe_timeout)
                why = "" if data.split(b"\r\n", 1)[0].endswith(b" 200 OK") else "answer: not 200"
            finally:
                w.close()
        except TimeoutError:
            why += ": timeout"
        except ERRORS as e:
            why += f": {type(e).__name__}"
        out.append([round(t, 3), not why, why])

    loop = asyncio.get_running_loop()
    start, n, tasks = loop.time(), 0, []
    while time.time() < end and n < 100_000:
        tasks.append(asyncio.ensure_future(one(time.time())))
        n += 1
        await asyncio.sleep(max(0.0, start + n * a.probe_interval - loop.time()))
    await asyncio.gather(*tasks)


async def loop_lag(end: float, worst: list[float]) -> None:
    """The client's own stalls: how late a 10 ms sleep wakes up, at worst (a busy client
    would otherwise pass for a slow network: late chunks, timed-out probes)."""
    loop = asyncio.get_running_loop()
    while time.time() < end:
        t = loop.time()
        await asyncio.sleep(0.01)
        late = (loop.time() - t - 0.01) * 1000
        if late > worst[0]:
            worst[:] = [round(late, 1), round(time.time(), 3)]


# ------------------------------------------------------------------------------- main


async def run(a: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    end = t0 + a.setup + a.duration
    run_id = a.run_id or secrets.token_hex(4)
    stop_setup = asyncio.Event()
    flows = [Flow(i) for i in range(a.flows)]
    sender = Hl7Sender(a, run_id, end)
    probes: list[list[Any]] = []
    tasks = [asyncio.ensure_future(run_flow(f, a, end, stop_setup)) for f in flows]
    lag = [0.0, 0.0]
    tasks += [asyncio.ensure_future(sender.run()), asyncio.ensure_future(probe(a, end, probes)),
              asyncio.ensure_future(loop_lag(end, lag))]
    ready_at = None
    while time.time() < t0 + a.setup:
        if (all(f.warm and f.ended is None for f in flows) and sender.warm()
                and any(p[1] for p in probes[-10:])):
            ready_at = time.time()
            break
        await asyncio.sleep(0.02)
    stop_setup.set()  # flows not yet open stay `not-established`
    sender.ready_at = ready_at or time.time()
    print(json.dumps({"ready": ready_at, "run": run_id}), flush=True)
    # every flow ends by itself (`done`, an error, or --read-timeout); this bounds the rest
    done, pending = await asyncio.wait(tasks, timeout=end - time.time() + 2 + a.read_timeout + a.ack_timeout)
    for t in pending:
        t.cancel()
    rec = sender.rec
    received = read_received(dict(s.split("=", 1) for s in a.seen), run_id)
    return {
        "run": run_id, "t0": round(t0, 3), "ready_at": ready_at, "end_at": round(end, 3),
        "unfinished_tasks": len(pending), "client_max_lag_ms": lag[0], "client_max_lag_at": lag[1],
        "params": {k: v for k, v in vars(a).items() if k not in ("seen", "run_id")},
        "flows": [{k: v for k, v in asdict(f).items() if k != "warm"} for f in flows],
        "hl7": {"connects": rec.connects, "sent": rec.sent, "transmissions": rec.transmissions,
                "acked": len(rec.acked), "unacked": rec.unacked, "mismatched_acks": rec.mismatched_acks,
                "max_ack_ms": rec.max_ack_ms, "max_ack_gap_ms": rec.max_ack_gap_ms,
                "max_ack_gap_end": rec.max_ack_gap_end, "received": receipts(rec.acked, received)},
        "probes": probes,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True, help="the VIP")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--mllp-port", type=int, default=MLLP_PORT)
    p.add_argument("--flows", type=int, default=20, help="HTTP /slow flows (default 20)")
    p.add_argument("--duration", type=float, default=6.0, help="s of traffic after set-up")
    p.add_argument("--setup", type=float, default=4.0, help="s allowed to open and warm everything")
    p.add_argument("--warm", type=float, default=0.5, help="s every flow streams before ready")
    p.add_argument("--chunk-ms", type=int, default=50, help="the backend writes a line every M ms")
    p.add_argument("--read-timeout", type=float, default=5.0, help="a flow silent this long is broken")
    p.add_argument("--avoid", action="append", default=[], metavar="NAME",
                   help="reopen flows served by this backend during set-up (repeatable)")
    p.add_argument("--hl7-interval", type=float, default=0.05)
    p.add_argument("--ack-timeout", type=float, default=3.0)
    p.add_argument("--probe-interval", type=float, default=0.02)
    p.add_argument("--probe-timeout", type=float, default=1.0)
    p.add_argument("--seen", action="append", default=[], metavar="NAME=FILE",
                   help="a backend's log with its hl7-received lines (repeatable)")
    p.add_argument("--run-id", default="", help="control ids are RUN-000001, ... (default random)")
    a = p.parse_args(argv)
    if not (0 < a.flows <= 500 and 0 < a.duration <= 600 and 0 < a.setup <= 60
            and 10 <= a.chunk_ms <= 10_000 and a.hl7_interval >= 0.005 and a.probe_interval >= 0.005):
        p.error("flows 1-500, duration <= 600 s, setup <= 60 s, chunk-ms 10-10000, intervals >= 5 ms")
    if any("=" not in s for s in a.seen):
        p.error("--seen takes NAME=FILE")
    print(json.dumps(asyncio.run(run(a))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
