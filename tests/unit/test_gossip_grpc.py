"""Gossip over real gRPC on loopback: the transport, the servicer's checks, the wire rules."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hacluster.admin import AdminService, start_admin
from hacluster.api import admin_pb2, admin_pb2_grpc
from hacluster.api import gossip_pb2 as pb
from hacluster.api import gossip_pb2_grpc as pb_grpc
from hacluster.channels import MAX_MESSAGE_BYTES, admin_channel, peer_channel
from hacluster.gossip import wire
from hacluster.gossip.grpc_transport import (
    PING_REQ_CONCURRENCY,
    PING_REQ_MAX_TIMEOUT_S,
    WARN_INTERVAL_S,
    GossipService,
    GrpcTransport,
)
from hacluster.gossip.membership import PIGGYBACK_BUDGET_BYTES, GossipTiming, Membership
from hacluster.gossip.types import Ack, GossipState, NodeMeta, NodeRecord
from hacluster.model import CheckReport, CheckState, Load
from tests.support.clock import FakeClock
from tests.support.wait import wait_until
from tests.unit.pki import PKI
from tests.unit.test_admin import STATUS

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
        self.hold: threading.Event | None = None  # set: handle_ping_req waits for it
        self.waiting = 0

    def handle_ping(self, sender, updates):
        self.calls.append(("ping", sender, updates))
        return Ack(responder=RECORD, updates=(RECORD,))

    def handle_ping_req(self, sender, target, target_address, timeout):
        self.calls.append(("ping_req", sender, target, target_address, timeout))
        if self.hold is not None:
            self.waiting += 1
            self.hold.wait(10)
        return self.ping_req_answer

    def handle_gossip(self, sender, updates):
        self.calls.append(("gossip", sender, updates))

    def handle_push_pull(self, sender, records, join):
        self.calls.append(("push_pull", sender, records, join))
        return (RECORD,)


MEMBERS = {"n1": "127.0.0.1:9", "n2": "127.0.0.1:10", "n3": "127.0.0.1:11"}


@contextlib.contextmanager
def _serving(engine: Engine, clock=time.monotonic,
             max_workers: int = 4) -> Iterator[tuple[Engine, str, GossipService]]:
    """The agent's real server (admin + gossip) on loopback, as the agent starts it."""
    service = GossipService(engine, PKI.authority(), MEMBERS, clock=clock)
    admin = AdminService(lambda: STATUS, PKI.authority())
    server, port = start_admin("127.0.0.1:0", admin, PKI.server("n1"), max_workers=max_workers,
                               gossip=service)
    try:
        yield engine, f"127.0.0.1:{port}", service
    finally:
        server.stop(None)


def _transport(node: str = "n1") -> GrpcTransport:
    """A transport as the agent `node` makes it: peer channels with its node certificate."""
    return GrpcTransport(node, lambda a: peer_channel(a, PKI.client(node)))


@pytest.fixture
def agent_service() -> Iterator[tuple[Engine, str, GossipService]]:
    with _serving(Engine()) as served:
        yield served


@pytest.fixture
def agent(agent_service) -> tuple[Engine, str]:
    engine, addr, _ = agent_service
    return engine, addr


def test_records_survive_the_wire_unchanged() -> None:
    for r in (RECORD, NodeRecord("n3", "h:1", 0, GossipState.SUSPECT, "n1"),
              NodeRecord("n3", "h:1", 2**40, GossipState.LEFT, "n3")):
        assert wire.record_from_pb(wire.record_to_pb(r), "r") == r


def test_transport_round_trips_every_call(agent: tuple[Engine, str]) -> None:
    engine, addr = agent
    t = _transport("n1")
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
    t = _transport("n1")
    try:
        assert t.ping("127.0.0.1:1", (), timeout=0.3) is None
        assert t.ping_req(["127.0.0.1:1"], "n2", "x:1", timeout=0.3) == [None]
        assert t.push_pull("127.0.0.1:1", (), join=False, timeout=0.3) is None
        t.gossip("127.0.0.1:1", ())  # no exception either
    finally:
        t.close()


def _raw(addr: str, method: str, request, creds: grpc.ChannelCredentials | None = None):
    """One gossip call on a fresh channel, with n1's node certificate unless `creds` says."""
    with peer_channel(addr, PKI.client("n1") if creds is None else creds) as ch:
        return getattr(pb_grpc.GossipStub(ch), method)(request, timeout=2)


def _no_client_cert() -> grpc.ChannelCredentials:
    """Trusts the cluster CA, presents no certificate of its own."""
    return grpc.ssl_channel_credentials(PKI.material("n1").ca_pem)


def _of_another_cluster() -> grpc.ChannelCredentials:
    """A node certificate that OUR CA signed (so TLS succeeds) naming another cluster: the
    certificate equivalent of a wrong token, refused by the servicer (UNAUTHENTICATED)."""
    return _credentials_naming("hacluster://elsewhere/node/n1")


@functools.cache
def _credentials_naming(uri: str) -> grpc.ChannelCredentials:
    """Client credentials with a certificate the cluster CA signed for identity `uri`."""
    ca_cert = x509.load_pem_x509_certificate((PKI.ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((PKI.ca_dir / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return grpc.ssl_channel_credentials(ca_cert.public_bytes(serialization.Encoding.PEM), key_pem,
                                        cert.public_bytes(serialization.Encoding.PEM))


_CREDS: dict[str, Callable[[], grpc.ChannelCredentials]] = {
    # no certificate, or one our CA did not sign: the TLS handshake itself fails
    "no certificate": _no_client_cert,
    "another cluster's CA": lambda: PKI.client("n2", where="other"),
    "a rogue CA naming this cluster": lambda: PKI.client("n2", where="rogue"),
    "an admin of another CA": lambda: PKI.client("alice", where="other"),
    # signed by our CA, but not a node of this cluster, or not the sender
    "our CA, another cluster": _of_another_cluster,
    "an admin": lambda: PKI.client("alice"),
    "a reader": lambda: PKI.client("rita"),
    "node n2 as n3": lambda: PKI.client("n2"),
}


@pytest.mark.parametrize("who, sender, code, words", [
    ("no certificate", "n1", grpc.StatusCode.UNAVAILABLE, None),
    ("another cluster's CA", "n2", grpc.StatusCode.UNAVAILABLE, None),
    ("a rogue CA naming this cluster", "n2", grpc.StatusCode.UNAVAILABLE, None),
    ("an admin of another CA", "n1", grpc.StatusCode.UNAVAILABLE, None),
    ("our CA, another cluster", "n1", grpc.StatusCode.UNAUTHENTICATED, "cluster 'elsewhere'"),
    # an admin certificate is not a node one
    ("an admin", "n1", grpc.StatusCode.PERMISSION_DENIED, "admin 'alice' may not gossip"),
    ("a reader", "n1", grpc.StatusCode.PERMISSION_DENIED, "reader 'rita' may not gossip"),
    # a member cannot speak for another
    ("node n2 as n3", "n3", grpc.StatusCode.PERMISSION_DENIED, "node 'n2' cannot speak for 'n3'"),
])
@pytest.mark.parametrize("method", ["Ping", "Gossip", "PushPull", "PingReq"])
def test_gossip_needs_the_node_certificate_of_the_sender(agent, who, sender, code, words, method) -> None:
    engine, addr = agent
    extra = {"target": "n2", "timeout_s": 0.1} if method == "PingReq" else {}
    request_ = getattr(pb, f"{method}Request")(sender=sender, **extra)
    with pytest.raises(grpc.RpcError) as e:
        _raw(addr, method, request_, _CREDS[who]())
    assert e.value.code() == code, e.value.details()
    if words is not None:
        assert words in e.value.details()
    assert engine.calls == []


def test_the_node_certificate_of_the_sender_is_accepted(agent) -> None:
    engine, addr = agent
    _raw(addr, "Ping", pb.PingRequest(sender="n2"), PKI.client("n2"))
    assert engine.calls[-1] == ("ping", "n2", ())


@pytest.mark.parametrize("method, request_, words", [
    ("Ping", pb.PingRequest(sender="intruder"), "not a member"),
    ("Ping", pb.PingRequest(sender=""), "sender: must not be empty"),
    ("Gossip", pb.GossipRequest(sender="n1",
                                updates=[pb.NodeRecord(node="n2", address="a:1", state=1)] * 513),
     "at most 512"),
    ("PingReq", pb.PingReqRequest(sender="n1", target="n9", timeout_s=0.1), "n9"),
    ("PingReq", pb.PingReqRequest(sender="n1", target="n2", timeout_s=0), "timeout_s"),
    ("PingReq", pb.PingReqRequest(sender="n1", target="n2", timeout_s=-1), "timeout_s"),
    ("PingReq", pb.PingReqRequest(sender="n1", target="n2", timeout_s=float("nan")), "timeout_s"),
    ("PingReq", pb.PingReqRequest(sender="n1", target="n2", timeout_s=float("inf")), "timeout_s"),
])
def test_a_bad_envelope_is_refused_with_a_clear_error_and_changes_nothing(agent, method, request_, words):
    engine, addr = agent
    with pytest.raises(grpc.RpcError) as e:
        _raw(addr, method, request_)
    assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
    assert words in e.value.details()
    assert engine.calls == []


GOOD = pb.NodeRecord(node="n3", address="a:3", incarnation=2, state=pb.GOSSIP_STATE_SUSPECT, origin="n1")
BAD_RECORDS = [  # each one alone is unreadable
    pb.NodeRecord(node="n2", address="a:1"),  # no state
    pb.NodeRecord(node="n2", address="a:1", state=9),  # a state from a newer agent
    pb.NodeRecord(node="x" * 64, address="a:1", state=1),
    pb.NodeRecord(node="n2", address="", state=1),
    pb.NodeRecord(node="n2", address="a:1", state=1, incarnation=2**62 + 1),
]


@pytest.mark.parametrize("bad", BAD_RECORDS)
@pytest.mark.parametrize("method", ["Ping", "Gossip", "PushPull"])
def test_one_unreadable_record_is_dropped_and_the_rest_is_delivered(agent_service, method, bad):
    engine, addr, service = agent_service
    field = "records" if method == "PushPull" else "updates"
    request_ = getattr(pb, f"{method}Request")(sender="n1", **{field: [bad, GOOD]})
    reply = _raw(addr, method, request_)
    assert engine.calls[-1][2] == (wire.record_from_pb(GOOD, "r"),)
    assert service.stats()["records_dropped"] == 1
    if method == "Ping":
        assert wire.ack_from_pb(reply)[0] == Ack(RECORD, (RECORD,))  # a real answer, not a failure


def test_a_record_with_unreadable_meta_keeps_its_state_without_the_meta(agent_service) -> None:
    engine, addr, service = agent_service
    refutation = pb.NodeRecord(node="n2", address="a:2", incarnation=5, state=pb.GOSSIP_STATE_ALIVE,
                               meta_seq=9, meta=pb.NodeMeta(cpu_percent=float("nan")))
    _raw(addr, "Gossip", pb.GossipRequest(sender="n1", updates=[refutation]))
    # The refutation survives; meta_seq 0 so the meta the receiver holds stays in force.
    assert engine.calls[-1][2] == (NodeRecord("n2", "a:2", 5, GossipState.ALIVE, "", 0, None),)
    assert service.stats() == {"metas_dropped": 1}


def test_an_unknown_check_state_reads_as_unknown(agent) -> None:
    engine, addr = agent
    record = pb.NodeRecord(node="n2", address="a:2", incarnation=1, state=pb.GOSSIP_STATE_ALIVE,
                           meta_seq=1, meta=pb.NodeMeta(checks=[
                               pb.CheckReport(name="w", kind="tcp", state=7),
                               pb.CheckReport(name="v", kind="tcp", state=pb.CHECK_STATE_UNSPECIFIED)]))
    _raw(addr, "Ping", pb.PingRequest(sender="n1", updates=[record]))
    (got,) = engine.calls[-1][2]
    assert [c.state for c in got.meta.checks] == [CheckState.UNKNOWN, CheckState.UNKNOWN]


def test_unreadable_records_warn_once_a_minute_per_peer(caplog) -> None:
    clock = FakeClock()
    with _serving(Engine(), clock=clock) as (engine, addr, service):
        bad = pb.GossipRequest(sender="n1", updates=[BAD_RECORDS[1], GOOD])
        with caplog.at_level(logging.DEBUG, logger="hacluster.gossip"):
            for _ in range(5):
                _raw(addr, "Gossip", bad)
            clock.advance(WARN_INTERVAL_S + 1)
            _raw(addr, "Gossip", bad)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "unknown gossip state 9" in warnings[0] and "4 more like it" in warnings[1]
    assert sum("unknown gossip state 9" in r.getMessage() for r in caplog.records
               if r.levelno == logging.DEBUG) == 6  # every one is in the debug log
    assert service.stats()["records_dropped"] == 6 and len(engine.calls) == 6


def test_refusal_warnings_are_keyed_on_host_and_code_and_rate_limited(caplog) -> None:
    clock = FakeClock()
    with _serving(Engine(), clock=clock) as (engine, addr, _):
        with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
            for i in range(5):  # a new connection (new source port) and a new text each time
                with pytest.raises(grpc.RpcError):
                    _raw(addr, "Ping", pb.PingRequest(sender=f"stranger{i}"))
            with pytest.raises(grpc.RpcError):
                # a certificate our CA signed for another cluster: the wrong credential
                _raw(addr, "Ping", pb.PingRequest(sender="n1"), _of_another_cluster())
            clock.advance(WARN_INTERVAL_S + 1)
            with pytest.raises(grpc.RpcError):
                _raw(addr, "Ping", pb.PingRequest(sender="stranger9"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "stranger0" in warnings[0] and "certificate of cluster 'elsewhere'" in warnings[1]
    assert "stranger9" in warnings[2] and "4 more like it" in warnings[2]
    assert engine.calls == []


def test_a_newer_agents_answers_are_read_record_by_record() -> None:
    newer = _Newer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GossipServicer_to_server(newer, server)
    addr = f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', PKI.server('n2'))}"
    server.start()
    t = _transport("n1")
    try:
        ack = t.ping(addr, (), timeout=2)
        assert ack is not None and ack.responder.node == "n2"
        assert ack.responder.meta.checks[0].state is CheckState.UNKNOWN
        assert ack.updates == (wire.record_from_pb(GOOD, "r"),)
        assert t.push_pull(addr, (), join=False, timeout=2) == (wire.record_from_pb(GOOD, "r"),)
        newer.responder_meta = pb.NodeMeta(cpu_percent=float("inf"))
        ack = t.ping(addr, (), timeout=2)  # the probe still counts; the meta is left out
        assert ack is not None and (ack.responder.meta, ack.responder.meta_seq) == (None, 0)
        newer.responder_node = ""
        assert t.ping(addr, (), timeout=2) is None  # no responder: the ack proves nothing
        assert t.stats() == {"records_dropped": 3, "metas_dropped": 1}
    finally:
        t.close()
        server.stop(None)


class _Newer(pb_grpc.GossipServicer):
    """A newer agent: a check state and a gossip state this version does not know."""

    responder_node = "n2"
    responder_meta = pb.NodeMeta(checks=[pb.CheckReport(name="w", kind="tcp", state=5)])

    def Ping(self, request, context):
        return pb.PingReply(responder=pb.NodeRecord(
            node=self.responder_node, address="a:2", incarnation=1, state=pb.GOSSIP_STATE_ALIVE,
            meta_seq=1, meta=self.responder_meta), updates=[BAD_RECORDS[1], GOOD])

    def PushPull(self, request, context):
        return pb.PushPullReply(records=[GOOD, BAD_RECORDS[1]])


# ---------------------------------------------------------------- ping-req


def test_ping_req_timeouts_are_clamped_on_both_sides(agent) -> None:
    engine, addr = agent
    reply = _raw(addr, "PingReq", pb.PingReqRequest(sender="n1", target="n2", timeout_s=3600))
    assert reply.acked and engine.calls[-1][-1] == PING_REQ_MAX_TIMEOUT_S  # clamped, not refused
    t = _transport("n1")
    try:
        # Long probe intervals or a high awareness score ask for more than a via takes.
        assert t.ping_req([addr], "n3", "x:1", timeout=60) == [True]
        assert engine.calls[-1][-1] == PING_REQ_MAX_TIMEOUT_S
        assert t.ping_req([addr], "n3", "x:1", timeout=1) == [True]
        assert engine.calls[-1][-1] == pytest.approx(0.8)
    finally:
        t.close()


def test_ping_reqs_beyond_the_limit_are_nacked_at_once() -> None:
    engine = Engine()
    engine.hold = threading.Event()
    with _serving(engine, max_workers=8) as (_, addr, service):
        with peer_channel(addr, PKI.client("n1")) as ch:
            stub = pb_grpc.GossipStub(ch)
            req = pb.PingReqRequest(sender="n1", target="n2", timeout_s=5)
            held = [stub.PingReq.future(req, timeout=10) for _ in range(PING_REQ_CONCURRENCY)]
            wait_until(lambda: engine.waiting == PING_REQ_CONCURRENCY, timeout=5,
                       what="every ping-req slot taken", interval=0.01)
            started = time.monotonic()
            assert stub.PingReq(req, timeout=10).acked is False
            assert time.monotonic() - started < 1  # a nack at once, not a wait for a worker
            assert service.stats()["ping_reqs_shed"] == 1
            # The admin API on the same server (and connection: a node may read) still answers.
            status = admin_pb2_grpc.AdminStub(ch).Status(admin_pb2.StatusRequest(), timeout=2)
            assert status.node == STATUS.node
            engine.hold.set()
            assert [f.result().acked for f in held] == [True] * PING_REQ_CONCURRENCY
            assert stub.PingReq(req, timeout=10).acked  # room again


# ---------------------------------------------------------------- client side faults


def test_a_closed_transport_answers_nothing_and_opens_nothing(agent) -> None:
    _, addr = agent
    opened: list[grpc.Channel] = []

    def factory(target: str) -> grpc.Channel:
        opened.append(peer_channel(target, PKI.client("n1")))
        return opened[-1]

    t = GrpcTransport("n1", channel_factory=factory)
    assert t.ping(addr, (), timeout=2) is not None
    opened[0].close()  # closed under the transport's feet (a channel reset, a shutdown)
    assert t.ping(addr, (), timeout=2) is None
    assert t.ping_req([addr], "n3", "x:1", timeout=2) == [None]
    assert t.push_pull(addr, (), join=False, timeout=2) is None
    t.gossip(addr, ())
    t.close()
    assert t.ping("127.0.0.1:1", (), timeout=2) is None
    assert t.ping_req([addr, "127.0.0.1:1"], "n3", "x:1", timeout=2) == [None, None]
    assert t.push_pull(addr, (), join=False, timeout=2) is None
    t.gossip(addr, ())
    assert len(opened) == 1


class _CancelEveryCall(grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation, client_call_details, request):
        call = continuation(client_call_details, request)
        call.cancel()
        return call


def test_a_cancelled_call_is_no_answer_not_an_exception(agent) -> None:
    _, addr = agent
    t = GrpcTransport("n1", channel_factory=lambda a: grpc.intercept_channel(
        peer_channel(a, PKI.client("n1")), _CancelEveryCall()))
    try:
        t.gossip(addr, (RECORD,))  # its done-callback runs at once, on a cancelled call
        assert t.ping_req([addr], "n3", "x:1", timeout=2) == [None]
    finally:
        t.close()


# ---------------------------------------------------------------- byte budgets


def _big_meta(seed: int, chars: int = wire.MAX_TEXT) -> NodeMeta:
    text = f"{seed:04d}" + "é" * chars  # two bytes each
    return NodeMeta(checks=tuple(CheckReport(f"check-{i:02d}-{'c' * 50}", "exec", text,
                                             CheckState.FAILING, 1.0, text, text)
                                 for i in range(wire.MAX_CHECKS)), version="0.2.0")


def test_texts_are_kept_up_to_what_older_agents_send_and_cut_beyond() -> None:
    assert wire.MAX_TEXT == 256  # what this version sends about itself (the feed cuts to it)
    for n in (wire.MAX_TEXT + 1, wire.RELAY_TEXT):
        c = CheckReport("web", "http", "t" * n, CheckState.FAILING, None, "e" * n, "o" * n)
        assert wire.check_from_pb(wire.check_to_pb(c), "c") == c  # relayed unchanged
    c = CheckReport("web", "http", "t" * 5000, CheckState.FAILING, None, "e" * 5000, "o" * 5000)
    back = wire.check_from_pb(wire.check_to_pb(c), "c")
    assert {len(back.target), len(back.error), len(back.output)} == {wire.RELAY_TEXT}


def test_encoded_size_is_what_a_record_adds_to_a_message() -> None:
    records = (RECORD, NodeRecord("n3", "h:1", 0, GossipState.SUSPECT, "n1"),
               NodeRecord("n4", "h:1", 3, GossipState.ALIVE, "", 2, _big_meta(7)))
    assert pb.GossipRequest(updates=wire.records_to_pb(records)).ByteSize() == \
        sum(wire.encoded_size(r) for r in records)


def test_piggyback_and_push_pull_fit_in_a_message_however_big_the_metas() -> None:
    peers = {f"n{i}": f"127.0.0.1:{20000 + i}" for i in range(2, 40)}
    engine = Membership("n1", "127.0.0.1:1", peers, _transport("n1"), clock=FakeClock())
    engine.set_meta(_big_meta(1))  # ~100 KB: 64 checks of MAX_TEXT two-byte characters
    # Thirty-eight such records, each the member's own word (only a member states its own
    # meta), and one as an older agent could send it: ~400 KB alone.
    for i, (n, a) in enumerate(peers.items()):
        engine.handle_gossip(n, (NodeRecord(n, a, 1, GossipState.ALIVE, "", 1,
                                            _big_meta(i, 5000 if n == "n2" else 256)),))
    engine.set_meta(_big_meta(2))  # news of ours, due to every member
    service = GossipService(engine, PKI.authority(), {"n1": "127.0.0.1:1", **peers})
    admin = AdminService(lambda: STATUS, PKI.authority())
    server, port = start_admin("127.0.0.1:0", admin, PKI.server("n1"), gossip=service)
    t = _transport("n2")
    try:
        ack = t.ping(f"127.0.0.1:{port}", (), timeout=5)
        assert ack is not None and ack.responder.meta is not None
        assert len(ack.updates) == GossipTiming().max_updates_per_message
        assert sum(wire.encoded_size(r) for r in ack.updates) <= PIGGYBACK_BUDGET_BYTES
        # What we pass on about others never carries their meta: their states still spread.
        assert all(r.meta is None and (r.meta_seq, r.incarnation) == (0, 1) for r in ack.updates)
        theirs = t.push_pull(f"127.0.0.1:{port}", (), join=False, timeout=5)
        assert theirs is not None and len(theirs) == len(peers) + 1
        assert theirs[0].node == "n1" and theirs[0].meta is not None  # its own record first, whole
        # n2's own record as n1 holds it goes back to n2 (how a restarted n2 would see that
        # n1 holds an earlier run's word); every other member's is bare.
        assert {r.node for r in theirs if r.meta is not None} == {"n1", "n2"}
        assert pb.PushPullReply(records=wire.records_to_pb(theirs)).ByteSize() < MAX_MESSAGE_BYTES
        # Our own news goes whole in a gossip to a member that has not had it, within budget.
        sent: list[tuple[NodeRecord, ...]] = []
        engine._transport = type("T", (), {"gossip": lambda self, a, u: sent.append(u)})()
        engine.gossip_once()
        assert sent and all(u[0].node == "n1" and u[0].meta is not None for u in sent)
        assert all(sum(wire.encoded_size(r) for r in u) <= PIGGYBACK_BUDGET_BYTES for u in sent)
    finally:
        t.close()
        server.stop(None)


def test_every_gossip_method_is_guarded() -> None:
    methods = [m for m in dir(pb_grpc.GossipServicer) if not m.startswith("_")]
    assert methods
    for m in methods:
        assert getattr(getattr(GossipService, m), "_hacluster_guarded", False), m


def test_status_is_still_served_next_to_gossip(agent) -> None:
    _, addr = agent
    with admin_channel(addr, PKI.client("alice")) as ch:
        reply = admin_pb2_grpc.AdminStub(ch).Status(admin_pb2.StatusRequest(), timeout=2)
    assert reply.node == STATUS.node
