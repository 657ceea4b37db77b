"""The event timeline (events.py) and the admin Events call; audited admin actions."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import pytest

from hacluster.admin import AdminService, start_admin
from hacluster.api import admin_pb2, admin_pb2_grpc
from hacluster.audit import AuditLog, verify
from hacluster.channels import admin_channel
from hacluster.events import EventLog

from .pki import PKI
from .test_admin import STATUS

ALICE = "hacluster://ward/admin/alice"


def test_the_log_numbers_keeps_the_newest_and_wakes_waiters():
    log = EventLog("n1", capacity=3, wall=lambda: 1.5)
    for i in range(5):
        log.add("agent", f"e{i}", i=i)
    assert [e.seq for e in log.after(0)] == [3, 4, 5] and log.after(0)[0].fields == {"i": "2"}
    assert [e.text for e in log.after(4)] == ["e4"] and log.after(0, limit=1)[0].seq == 5
    assert log.wait_after(5, 0.01) == []
    threading.Timer(0.05, lambda: log.add("leader", "late")).start()
    assert [e.text for e in log.wait_after(5, 5)] == ["late"]
    with pytest.raises(ValueError):
        log.add("nonsense", "x")


class _Actions:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def drain(self, target, undo, disable):
        self.calls.append(("drain", target, undo))
        return f"server {target} draining", 7


class _BrokenAudit:
    def append(self, *a, **kw):
        raise OSError("disk full")


@pytest.fixture
def agent(tmp_path: Path):
    events = EventLog("n1")
    actions = _Actions()
    audit = AuditLog(tmp_path / "audit.jsonl", "n1")
    servers = []

    def start(audit_log=audit):
        svc = AdminService(lambda: STATUS, PKI.authority(), actions=actions, events=events, audit=audit_log)
        server, port = start_admin("127.0.0.1:0", svc, PKI.server("n1"), max_workers=8)
        servers.append(server)
        return f"127.0.0.1:{port}"
    yield start, events, actions, tmp_path / "audit.jsonl"
    for s in servers:
        s.stop(None)
    audit.close()


def _stub(target, who="alice"):
    channel = admin_channel(target, PKI.client(who))
    return channel, admin_pb2_grpc.AdminStub(channel)


def test_an_admin_action_is_audited_before_and_after_with_its_author_and_becomes_an_event(agent):
    start, events, actions, path = agent
    channel, stub = _stub(start())
    with channel:
        stub.Drain(admin_pb2.DrainRequest(target="n2"), timeout=5)
        past = list(stub.Events(admin_pb2.EventsRequest(), timeout=5))
    assert actions.calls == [("drain", "n2", False)]
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(r["who"], r["action"], r["result"], r["ok"]) for r in records] == [
        (ALICE, "drain", "started", True), (ALICE, "drain", "server n2 draining", True)]
    assert verify(path).ok
    assert [(e.kind, e.fields["who"], e.fields["target"]) for e in past] == [("admin", ALICE, "n2")]


def test_no_audit_no_action(agent):
    start, events, actions, _ = agent
    channel, stub = _stub(start(_BrokenAudit()))
    with channel, pytest.raises(grpc.RpcError) as err:
        stub.Drain(admin_pb2.DrainRequest(target="n2"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "audit log cannot be written" in err.value.details()
    assert actions.calls == []


def test_a_reader_reads_events_but_its_action_is_neither_run_nor_audited(agent):
    start, events, actions, path = agent
    events.add("leader", "n1 leads (term 3)")
    channel, stub = _stub(start(), "rita")
    with channel:
        assert [e.text for e in stub.Events(admin_pb2.EventsRequest(), timeout=5)] == ["n1 leads (term 3)"]
        with pytest.raises(grpc.RpcError) as err:
            stub.Drain(admin_pb2.DrainRequest(target="n2"), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert actions.calls == [] and path.read_text() == ""


def test_follow_streams_new_events_and_followers_are_bounded(agent):
    start, events, _, _ = agent
    target = start()
    events.add("agent", "old")
    channels = [admin_channel(target, PKI.client("alice")) for _ in range(3)]
    try:
        streams = [admin_pb2_grpc.AdminStub(c).Events(admin_pb2.EventsRequest(after_seq=1, follow=True),
                                                       timeout=10) for c in channels[:2]]
        threading.Timer(0.2, lambda: events.add("vip", "claimed 10.0.0.100")).start()
        assert [next(s).text for s in streams] == ["claimed 10.0.0.100"] * 2
        third = admin_pb2_grpc.AdminStub(channels[2]).Events(
            admin_pb2.EventsRequest(follow=True), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            list(third)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for s in streams:
            s.cancel()
    finally:
        for c in channels:
            c.close()
