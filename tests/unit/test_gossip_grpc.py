"""Gossip over real gRPC on loopback: the transport, the servicer's checks, the wire rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from hacluster.admin import AdminService, start_admin
from hacluster.api import gossip_pb2 as pb
from hacluster.api import gossip_pb2_grpc as pb_grpc
from hacluster.auth import TOKEN_METADATA_KEY, admin_token, gossip_token
from hacluster.gossip import wire
from hacluster.gossip.grpc_transport import GossipService, GrpcTransport
from hacluster.gossip.types import Ack, GossipState, NodeMeta, NodeRecord
from hacluster.model import CheckReport, CheckState, Load
from tests.unit.test_admin import STATUS

SECRET = "correct horse battery staple 42"
META = NodeMeta(checks=(CheckReport("web", "http", "10.0.0.1:80", CheckState.FAILING, 12.5,
                                    "status 503, expected 200", "", 1700000000.0),
                        CheckReport("pacs", "dicom", "10.0.0.1:104", CheckState.UNKNOWN, None, "")),
                load=Load(12.0, 40.0), draining=True, version="0.2.0")
RECORD = NodeRecord("n2", "127.0.0.1:1", 7, GossipState.ALIVE, "", 3, META)


class Engine:
    """Records inbound calls; answers like a Membership would."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.ping_req_answer = True
        self.block = threading.Event()

    def handle_ping(self, sender, updates):
        self.calls.append(("ping", sender, updates))
        return Ack(responder=RECORD, updates=(RECORD,))

    def handle_ping_req(self, sender, target, target_address, timeout):
        self.calls.append(("ping_req", sender, target, target_address, timeout))
        return self.ping_req_answer

    def handle_gossip(self, sender, updates):
        self.calls.append(("gossip", sender, updates))

    def handle_push_pull(self, sender, records, join):
        self.calls.append(("push_pull", sender, records, join))
        return (RECORD,)


@pytest.fixture
def agent() -> Iterator[tuple[Engine, str]]:
    engine = Engine()
    members = {"n1": "127.0.0.1:9", "n2": "127.0.0.1:10", "n3": "127.0.0.1:11"}
    service = GossipService(engine, gossip_token(SECRET), members)
    admin = AdminService(lambda: STATUS, admin_token(SECRET))
    server, port = start_admin("127.0.0.1:0", admin, gossip=service)
    yield engine, f"127.0.0.1:{port}"
    server.stop(None)


def test_records_survive_the_wire_unchanged() -> None:
    for r in (RECORD, NodeRecord("n3", "h:1", 0, GossipState.SUSPECT, "n1"),
              NodeRecord("n3", "h:1", 2**40, GossipState.LEFT, "n3")):
        assert wire.record_from_pb(wire.record_to_pb(r), "r") == r


def test_transport_round_trips_every_call(agent: tuple[Engine, str]) -> None:
    engine, addr = agent
    t = GrpcTransport("n1", gossip_token(SECRET))
    try:
        ack = t.ping(addr, (RECORD,), timeout=2)
        assert ack == Ack(RECORD, (RECORD,))
        assert engine.calls[-1] == ("ping", "n1", (RECORD,))
        assert t.ping_req([addr, addr], "n3", "ignored:1", timeout=2) == [True, True]
        # the via probes the *configured* address of the target, not the one we named
        assert engine.calls[-1][:4] == ("ping_req", "n1", "n3", "127.0.0.1:11")
        engine.ping_req_answer = False
        assert t.ping_req([addr], "n3", "x:1", timeout=2) == [False]
        assert t.push_pull(addr, (RECORD,), join=True, timeout=2) == (RECORD,)
        assert engine.calls[-1] == ("push_pull", "n1", (RECORD,), True)
        t.gossip(addr, (RECORD,))
        done = threading.Event()
        for _ in range(200):  # fire-and-forget: wait (bounded) until it arrived
            if any(c[0] == "gossip" for c in engine.calls):
                done.set()
                break
            threading.Event().wait(0.01)
        assert done.is_set()
    finally:
        t.close()


def test_an_absent_peer_is_none_not_an_exception() -> None:
    t = GrpcTransport("n1", gossip_token(SECRET))
    try:
        assert t.ping("127.0.0.1:1", (), timeout=0.3) is None
        assert t.ping_req(["127.0.0.1:1"], "n2", "x:1", timeout=0.3) == [None]
        assert t.push_pull("127.0.0.1:1", (), join=False, timeout=0.3) is None
        t.gossip("127.0.0.1:1", ())  # no exception either
    finally:
        t.close()


def _raw(addr: str, method: str, request, token: str | None = None):
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.GossipStub(ch)
        md = [] if token is None else [(TOKEN_METADATA_KEY, token)]
        return getattr(stub, method)(request, timeout=2, metadata=md)


@pytest.mark.parametrize("token, code", [
    (None, grpc.StatusCode.UNAUTHENTICATED),
    ("0" * 64, grpc.StatusCode.UNAUTHENTICATED),
    (admin_token(SECRET), grpc.StatusCode.UNAUTHENTICATED),  # an admin token is not a gossip one
])
def test_gossip_needs_the_gossip_token(agent, token, code) -> None:
    engine, addr = agent
    with pytest.raises(grpc.RpcError) as e:
        _raw(addr, "Ping", pb.PingRequest(sender="n1"), token)
    assert e.value.code() == code
    assert engine.calls == []


@pytest.mark.parametrize("method, request_, words", [
    ("Ping", pb.PingRequest(sender="intruder"), "not a member"),
    ("Ping", pb.PingRequest(sender=""), "sender: must not be empty"),
    ("Ping", pb.PingRequest(sender="n1", updates=[pb.NodeRecord(node="n2", address="a:1")]),
     "updates[0].state: unknown gossip state 0"),
    ("Ping", pb.PingRequest(sender="n1", updates=[pb.NodeRecord(node="x" * 64, address="a:1", state=1)]),
     "updates[0].node: 64 characters"),
    ("Gossip", pb.GossipRequest(sender="n1",
                                updates=[pb.NodeRecord(node="n2", address="a:1", state=1)] * 513),
     "at most 512"),
    ("PingReq", pb.PingReqRequest(sender="n1", target="n9", timeout_s=0.1), "n9"),
    ("PingReq", pb.PingReqRequest(sender="n1", target="n2", timeout_s=3600), "timeout_s"),
    ("PushPull", pb.PushPullRequest(sender="n1", records=[pb.NodeRecord(
        node="n2", address="a:1", state=1, meta=pb.NodeMeta(checks=[pb.CheckReport(name="w", kind="tcp")]))]),
     "records[0].meta.checks[0].state"),
    ("PushPull", pb.PushPullRequest(sender="n1", records=[pb.NodeRecord(
        node="n2", address="a:1", state=1, meta=pb.NodeMeta(cpu_percent=float("nan")))]),
     "cpu_percent: must be finite"),
])
def test_bad_gossip_is_refused_with_a_clear_error_and_changes_nothing(agent, method, request_, words):
    engine, addr = agent
    with pytest.raises(grpc.RpcError) as e:
        _raw(addr, method, request_, gossip_token(SECRET))
    assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
    assert words in e.value.details()
    assert engine.calls == []


def test_every_gossip_method_is_guarded() -> None:
    methods = [m for m in dir(pb_grpc.GossipServicer) if not m.startswith("_")]
    assert methods
    for m in methods:
        assert getattr(getattr(GossipService, m), "_hacluster_guarded", False), m


def test_status_is_still_served_next_to_gossip(agent) -> None:
    _, addr = agent
    from hacluster.api import admin_pb2, admin_pb2_grpc
    with grpc.insecure_channel(addr) as ch:
        reply = admin_pb2_grpc.AdminStub(ch).Status(
            admin_pb2.StatusRequest(), timeout=2, metadata=[(TOKEN_METADATA_KEY, admin_token(SECRET))])
    assert reply.node == STATUS.node
