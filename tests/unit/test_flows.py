"""The persistent-flow client (hacluster.lab.flows) and its accounting (hacluster.lab.continuity):
the pure accounting on hand-made documents, then the client against the lab backend on the
loopback (no namespaces), including a receiver that drops a connection before its ACK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import hl7
import pytest
from hl7.mllp import start_hl7_server

from hacluster.lab.backend import RECEIVED_PREFIX
from hacluster.lab.continuity import account, new_connections, problems
from hacluster.lab.flows import read_received, receipts
from tests.support.net import LO, free_tcp_ports
from tests.support.wait import wait_until

T = 1000.0  # the fault, wall clock


def flow(backend, outcome="completed", gap=60.0, error=None):
    return {"index": 0, "backend": backend, "outcome": outcome, "error": error, "bytes": 100,
            "lines": 10, "max_gap_ms": gap, "max_gap_end": None, "opened": T - 1,
            "ended": T + 5, "tries": 1}


def doc(flows, connects=None, unacked=(), duplicates=0, probes=()):
    connects = connects if connects is not None else [
        {"t": T - 1, "reason": "start", "backend": "n2", "setup": True}]
    return {"run": "r", "t0": T - 2, "ready_at": T - 0.1, "end_at": T + 6,
            "params": {"chunk_ms": 50, "hl7_interval": 0.05, "probe_interval": 0.02},
            "flows": flows,
            "hl7": {"connects": connects, "sent": 100, "transmissions": 100 + len(connects) - 1,
                    "acked": 100 - len(unacked), "unacked": list(unacked), "mismatched_acks": 0,
                    "max_ack_ms": 5.0, "max_ack_gap_ms": 470.0, "max_ack_gap_end": T + 0.5,
                    "received": {"by_backend": {"n2": 100}, "unreadable": [],
                                 "duplicates": duplicates, "duplicated_ids": {},
                                 "acked_not_received": []}},
            "probes": [list(p) for p in probes]}


# ------------------------------------------------------------------------- accounting


def test_receipts_count_a_message_received_by_two_backends_as_a_duplicate():
    got = receipts(["r-1", "r-2", "r-3", "r-4"],
                   {"n1": ["r-1", "r-2"], "n2": ["r-2", "r-3", "r-3"], "n3": None})
    assert got["duplicates"] == 2 and got["duplicated_ids"] == {"r-2": 2, "r-3": 2}
    assert got["by_backend"] == {"n1": 2, "n2": 3, "n3": None}
    assert got["unreadable"] == ["n3"] and got["acked_not_received"] == ["r-4"]


def test_read_received_keeps_this_runs_lines_only(tmp_path):
    log = tmp_path / "backend.log"
    log.write_text(f"{RECEIVED_PREFIX}old-000001\nTraceback: noise\n{RECEIVED_PREFIX}r1-000001\n"
                   f"{RECEIVED_PREFIX}r1-000002\n")
    got = read_received({"n1": str(log), "n2": str(tmp_path / "missing.log")}, "r1")
    assert got == {"n1": ["r1-000001", "r1-000002"], "n2": None}


def test_new_connections_fail_until_the_first_success_after_the_last_failure():
    probes = [(T - 0.5, False), (T + 0.00, True), (T + 0.02, False), (T + 0.04, True),
              (T + 0.06, False), (T + 0.08, False), (T + 0.10, True), (T + 0.12, True), (T + 1.1, True)]
    got = new_connections([list(p) for p in probes], T, 0.02)
    assert got["failed"] == 3 and got["recovered"]  # the one before the fault does not count
    assert got["failing_ms"] == pytest.approx(100.0) and got["failed_span_ms"] == pytest.approx(80.0)
    assert new_connections([[T + 0.1, True]], T, 0.02)["failing_ms"] == 0.0
    never = new_connections([[T + 0.1, True], [T + 0.2, False]], T, 0.02)
    assert not never["recovered"] and never["failing_ms"] is None


def test_new_connections_count_why_they_failed():
    probes = [[T + 0.1, False, "connect: timeout"], [T + 0.2, False, "connect: timeout"],
              [T + 0.3, False, "answer: ConnectionResetError"], [T + 0.4, True, ""], [T + 1.5, True, ""]]
    why = new_connections(probes, T, 0.1)["why"]
    assert why == {"connect: timeout": 2, "answer: ConnectionResetError": 1}


def test_new_connections_failing_until_the_end_are_not_recovered():
    """A third of them failing to the end (a dead backend left in a static table): a success
    right after the last failure is no recovery."""
    probes = [[T + i * 0.02, i % 3 != 0] for i in range(1, 200)]
    got = new_connections(probes, T, 0.02)
    assert not got["recovered"] and got["failing_ms"] is None and got["failed"] == 66


def test_flows_to_the_dead_server_do_not_count_and_a_broken_survivor_does():
    d = doc([flow("n1"), flow("n2", gap=480.0), flow("n3", "broken", error="reset"),
             flow("n1", "broken", error="reset"), flow(None, "not-established")])
    acc = account(d, T, dead={"n1"})
    f = acc["flows"]
    counts = (f["requested"], f["established"], f["to_dead"], f["to_surviving"], f["survived"])
    assert counts == (5, 4, 2, 2, 1)
    assert f["survived_pct"] == 50.0 and f["longest_stall_ms"] == 480.0
    assert [b["backend"] for b in f["broken"]] == ["n3"]
    assert problems(acc) == ["flow to surviving n3 broke 5000.0 ms after the fault at line 10: reset"]


def test_hl7_set_up_connections_are_not_reconnects_but_later_ones_are():
    connects = [{"t": T - 1.5, "reason": "start", "backend": "n1", "setup": True},
                {"t": T - 1.4, "reason": "set-up: n1 avoided", "backend": "n2", "setup": True}]
    clean = account(doc([flow("n2")], connects), T, dead={"n1"})
    assert clean["hl7"]["reconnects"] == 0 and clean["hl7"]["backend"] == "n2"
    assert not clean["hl7"]["to_dead"] and problems(clean, min_flows=1) == []
    later = connects + [{"t": T + 0.4, "reason": "ConnectionResetError", "backend": "n3", "setup": False}]
    acc = account(doc([flow("n2")], later, unacked=["r-000100"], duplicates=1), T, dead={"n1"})
    assert (acc["hl7"]["reconnects"], acc["hl7"]["lost"], acc["hl7"]["duplicates"]) == (1, 1, 1)
    assert acc["hl7"]["resent"] == 2
    assert problems(acc) == ["HL7: 1 reconnect(s): ['ConnectionResetError']",
                             "HL7: 1 message(s) never ACKed", "HL7: 1 message(s) received more than once"]


def test_too_few_flows_to_surviving_backends_is_a_problem():
    acc = account(doc([flow("n1"), flow("n2")]), T, dead={"n1"})
    assert problems(acc, min_flows=20) == ["only 1 flows to surviving backends (wanted >= 20)"]


# ------------------------------------------------------------------- on the loopback


def _backend(tmp_path: Path, name: str, http: int, mllp: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hacluster.lab.backend", "--name", name,
                                 "--host", LO, "--port", str(http), "--mllp-port", str(mllp)],
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _flows(http: int, mllp: int, *args: str, timeout: float = 30) -> tuple[dict, dict]:
    proc = subprocess.run([sys.executable, "-m", "hacluster.lab.flows", "--host", LO,
                           "--http-port", str(http), "--mllp-port", str(mllp), "--flows", "3",
                           "--warm", "0.2", "--probe-interval", "0.1", *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return lines[0], lines[-1]


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex((LO, port)) == 0


@pytest.fixture
def backend(tmp_path):
    http, mllp = free_tcp_ports(2)
    proc, log = _backend(tmp_path, "n1", http, mllp)
    try:
        wait_until(lambda: _listening(http), 10, "the backend's HTTP port", interval=0.05)
        yield http, mllp, log
    finally:
        proc.kill()
        proc.wait(5)


def test_the_client_streams_acks_and_finds_every_message_once(backend):
    http, mllp, log = backend
    ready, d = _flows(http, mllp, "--duration", "1", "--setup", "1.5", f"--seen=n1={log}")
    assert ready["ready"] is not None and d["ready_at"] == ready["ready"]
    assert [f["outcome"] for f in d["flows"]] == ["completed"] * 3
    assert all(f["backend"] == "n1" and f["lines"] > 10 for f in d["flows"])
    acc = account(d, None)
    assert problems(acc, min_flows=3) == []
    assert acc["hl7"]["sent"] == acc["hl7"]["acked"] > 10
    assert d["hl7"]["received"]["by_backend"] == {"n1": acc["hl7"]["sent"]}
    assert acc["new_connections"]["failed"] == 0 and acc["new_connections"]["attempts"] > 5
    assert 0 <= acc["client_max_lag_ms"] < 1000


def test_a_client_told_to_avoid_the_only_backend_never_settles(backend):
    http, mllp, _ = backend
    ready, d = _flows(http, mllp, "--duration", "0.2", "--setup", "1", "--avoid=n1")
    assert ready["ready"] is None and d["ready_at"] is None
    assert not account(d, None)["ready"]


class DroppingReceiver:
    """An MLLP receiver that records every message like the lab backend, and drops the
    first connection after recording (and before ACKing) its `drop_at`-th message."""

    def __init__(self, port: int, log: Path, drop_at: int):
        self.port, self.log, self.drop_at = port, log, drop_at
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _start(self) -> None:
        self.server = await start_hl7_server(self._conn, LO, self.port)

    async def _conn(self, reader, writer) -> None:
        self.connections += 1
        first = self.connections == 1
        n = 0
        try:
            while True:
                m = await reader.readmessage()
                n += 1
                with open(self.log, "a") as f:
                    f.write(f"{RECEIVED_PREFIX}{m.segment('MSH')(10)}\n")
                if first and n == self.drop_at:
                    writer.transport.abort()  # gone: the sender never sees this ACK
                    return
                writer.writemessage(m.create_ack("AA", application="fake"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def stop(self) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_a_connection_dropped_before_its_ack_is_a_reconnect_and_a_duplicate(tmp_path, backend):
    http, _, _ = backend
    (port,) = free_tcp_ports(1)
    log = tmp_path / "fake.log"
    log.touch()
    rx = DroppingReceiver(port, log, drop_at=20)  # after set-up's 0.2 s of ACKs
    try:
        _, d = _flows(http, port, "--duration", "1", "--setup", "1.5", f"--seen=fake={log}")
    finally:
        rx.stop()
    acc = account(d, d["ready_at"])
    assert acc["hl7"]["reconnects"] == 1 and acc["hl7"]["resent"] == 1
    assert acc["hl7"]["duplicates"] == 1 and acc["hl7"]["lost"] == 0
    dup = d["hl7"]["received"]["duplicated_ids"]
    assert list(dup.values()) == [2] and list(dup)[0].endswith("-000020")
    found = problems(acc, min_flows=3)
    assert len(found) == 2 and found[0].startswith("HL7: 1 reconnect(s): [")
    assert found[1] == "HL7: 1 message(s) received more than once"


def test_hl7_message_is_valid_hl7():
    from hacluster.lab.flows import hl7_message
    m = hl7_message("r-000001", 1)
    assert str(m.segment("MSH")(10)) == "r-000001"
    assert str(hl7.parse(str(m)).segment("PID")(3)(1)(1)) == "100001"
    assert time.strftime("%Y") in str(m.segment("MSH")(7))
