"""Every admin and gossip RPC against random bytes and garbage messages (hypothesis).

The agent's real gRPC server (Admin + Gossip on one port, mutual TLS, as daemon.py starts
it) runs on loopback with fakes behind it. Each call, whoever makes it (admin, reader or
node certificate), must end with a status within its deadline: OK or a deliberate refusal.
UNKNOWN (an exception escaped a handler) and DEADLINE_EXCEEDED (a hang) fail the test, and
so does an agent that no longer answers a plain Status correctly afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from types import ModuleType

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import given
from hypothesis import strategies as st

from hacluster.actions import AdminActions
from hacluster.admin import AdminService, start_admin, status_to_pb
from hacluster.api import admin_pb2, gossip_pb2
from hacluster.channels import MAX_MESSAGE_BYTES
from hacluster.consensus.state import encode
from hacluster.dataplane.build import build_table
from hacluster.dataplane.status import backends_status
from hacluster.dataplane.table import table_to_doc
from hacluster.errors import Refusal, Refused
from hacluster.gossip.grpc_transport import GossipService
from hacluster.ha.failover import Outcome, Plan
from hacluster.model import ChecksStatus
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view
from tests.unit.fuzz_strategies import LONG_TEXT, fuzz_settings, is_repeated, messages, with_unknown_field
from tests.unit.pki import PKI
from tests.unit.test_admin import STATUS
from tests.unit.test_backends_cli import SERVICES, Worker
from tests.unit.test_gossip_grpc import Engine
from tests.unit.test_members_checks import CHECKS
from tests.unit.test_members_checks import MEMBERS as MEMBERS_STATUS

CALL_TIMEOUT_S = 10.0  # generous for a loaded CI machine: a hang shows as DEADLINE_EXCEEDED
STREAM_S = 2.0  # how long a server stream (Events) is read
GOSSIP_MEMBERS = {"n1": "127.0.0.1:9", "n2": "127.0.0.1:10", "n3": "127.0.0.1:11"}
# Who calls: the certificates of the cluster's test PKI (tests/unit/pki.py).
CALLERS = ("alice", "rita", "n1", "n2")  # admin, reader, node n1, node n2
ROLE = {"alice": "admin", "rita": "reader", "n1": "node", "n2": "node"}
# Admin methods only an admin certificate may call. Any other Admin method counts as a read
# here (asserting less: a new action should be added, a new read needs nothing).
ADMIN_ACTIONS = {"Drain", "Weight", "Failover"}
# The refusals and answers a call may end with; anything else is a bug.
CLEAN = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
         grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
         grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
# grpcio's own answer to bytes the method's request type cannot parse (before any handler).
UNPARSABLE = (grpc.StatusCode.INTERNAL, "Exception deserializing request!")
# The client may send and receive more than the server accepts: the server's limit is tested.
CLIENT_OPTIONS = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20),
                  ("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]


@dataclass(frozen=True)
class Method:
    service: str  # Admin | Gossip
    name: str
    path: str
    request: type[Message]
    reply: type[Message]
    streams: bool  # server streaming (Events); the rest are unary

    def allows(self, caller: str) -> bool:
        """Whether `caller`'s role may call this at all (tls.py's READ/ACT/NODE roles)."""
        role = ROLE[caller]
        if self.service == "Gossip":
            return role == "node"
        return role == "admin" if self.name in ADMIN_ACTIONS else True


def _methods(module: ModuleType, service: str) -> list[Method]:
    desc = module.DESCRIPTOR.services_by_name[service]
    out = []
    for m in desc.methods:
        assert not m.client_streaming, f"{m.full_name}: client streaming is not fuzzed yet"
        out.append(Method(service, m.name, f"/{desc.full_name}/{m.name}", getattr(module, m.input_type.name),
                          getattr(module, m.output_type.name), m.server_streaming))
    return out


# Every method the protos declare, so a new RPC is fuzzed without anyone adding it here.
METHODS = _methods(admin_pb2, "Admin") + _methods(gossip_pb2, "Gossip")


@dataclass
class Served:
    address: str
    channels: dict[str, grpc.Channel]
    engine: Engine
    raft: FakeRaft


def _checks(node: str | None) -> ChecksStatus:
    return CHECKS


def _failover(to: str | None, dry_run: bool, timeout: float) -> Outcome:
    """A stand-in for failover.Failover.run (which needs a running agent loop): refuses
    what is not a member, plans a move to the others, never moves anything."""
    if to is not None and to not in GOSSIP_MEMBERS:
        raise Refused(f"no member {to!r}", Refusal.NOT_FOUND)
    return Outcome(Plan("n1", to or "n2", ("10.0.0.100",)), True, f"would move to {to or 'n2'}")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    engine = Engine()
    cfg = config(checks=[{"name": "web", "kind": "http"}], services=SERVICES)
    raft = FakeRaft(current=leader_view())
    raft.state.apply(encode({"type": "leader_epoch", "term": raft.current.term, "node": "n1"}))
    table = build_table(cfg.services, {m.id: m.address for m in cfg.members}, {}, {}, 1)
    raft.state.apply(encode({"type": "table", "term": raft.current.term, "expect_generation": 0,
                             "table": table_to_doc(table)}))
    admin = AdminService(lambda: STATUS, PKI.authority(), members_provider=lambda: MEMBERS_STATUS,
                         checks_provider=_checks,
                         backends_provider=lambda _s: backends_status("n1", raft.state, Worker()),
                         actions=AdminActions(cfg, raft), failover=_failover)
    gossip = GossipService(engine, PKI.authority(), GOSSIP_MEMBERS)
    server, port = start_admin("127.0.0.1:0", admin, PKI.server("n1"), gossip=gossip)
    address = f"127.0.0.1:{port}"
    channels = {c: grpc.secure_channel(address, PKI.client(c), options=CLIENT_OPTIONS) for c in CALLERS}
    try:
        yield Served(address, channels, engine, raft)
    finally:
        for ch in channels.values():
            ch.close()
        server.stop(None)


def call(served: Served, caller: str, method: Method, payload: bytes) -> tuple[grpc.StatusCode, str, bytes]:
    """(code, details, reply bytes) of one raw call; asserts it ended cleanly and in time.
    A stream is read for at most STREAM_S (a follower's stream runs until the client's
    deadline, so there DEADLINE_EXCEEDED is a clean end); its replies are joined."""
    channel = served.channels[caller]
    start = time.monotonic()
    try:
        if method.streams:  # no (de)serializers: raw bytes both ways
            stream = channel.unary_stream(method.path)(payload, timeout=STREAM_S)
            reply = b"".join(_checked(method, r) for r in stream)
        else:
            reply = _checked(method, channel.unary_unary(method.path)(payload, timeout=CALL_TIMEOUT_S))
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        reply, code, details = b"", e.code(), e.details() or ""
    took = time.monotonic() - start
    where = (f"{method.path} as {caller}, {len(payload)} bytes: {code.name} after {took:.2f} s: "
             f"{details[:300]!r}")
    ended = CLEAN | ({grpc.StatusCode.DEADLINE_EXCEEDED} if method.streams else set())
    assert code in ended or (code, details) == UNPARSABLE, where
    return code, details, reply


def _checked(method: Method, reply: bytes) -> bytes:
    method.reply.FromString(reply)  # a well-formed answer
    return reply


def assert_expected(served: Served, caller: str, method: Method, payload: bytes) -> None:
    """The call ends as its input says it must, as far as that is determined."""
    code, details, _ = call(served, caller, method, payload)
    if len(payload) > MAX_MESSAGE_BYTES:
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (method.path, code, details[:200])
        return
    try:
        method.request.FromString(payload)
    except DecodeError:
        assert (code, details) == UNPARSABLE, (method.path, code, details[:200])
        return
    if not method.allows(caller):
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), \
            (method.path, caller, code, details[:200])


def assert_still_serving(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """A fresh connection gets the right Status, and nothing was logged as an error but
    grpcio's own line for each request it could not parse."""
    with grpc.secure_channel(served.address, PKI.client("rita")) as ch:
        raw = ch.unary_unary("/hacluster.v1.Admin/Status")(b"", timeout=CALL_TIMEOUT_S)
    assert admin_pb2.StatusReply.FromString(raw) == status_to_pb(STATUS)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.getMessage() != "Exception deserializing message!"]
    assert not errors, [r.getMessage() for r in errors[:5]]


# --- random bytes ----------------------------------------------------------------------------

# Just below, at and just above the limit; far above is the burst test's (each call over the
# limit costs ~0.2 s on a loaded machine: grpcio reads it all before refusing it).
SIZES = [MAX_MESSAGE_BYTES - 100, MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1]
# Strings: the names the fakes know (so calls get past validation), random text, and texts
# at the wire limits and beyond; message_calls() makes the ones of about a megabyte.
STRINGS = st.one_of(st.sampled_from(["n1", "n2", "n3", "n9", "web", "web/n1", "web/n3", "", "\x00"]),
                    st.text(max_size=30), LONG_TEXT)


def _valid(method: Method) -> bytes:
    return method.request().SerializeToString()


@st.composite
def raw_payloads(draw: st.DrawFn, method: Method) -> bytes:
    kind = draw(st.sampled_from(["bytes", "bytes", "message", "damaged", "damaged", "padded"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    data = draw(messages(method.request, STRINGS, many=False)).SerializeToString()
    if kind == "message":
        return data
    if kind == "padded":  # a known message grown to just below, at and above the limit
        return with_unknown_field(data, draw(st.sampled_from(SIZES)))
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at + 3:]


@st.composite
def raw_calls(draw: st.DrawFn) -> tuple[str, Method, bytes]:
    method = draw(st.sampled_from(METHODS))
    return draw(st.sampled_from(CALLERS)), method, draw(raw_payloads(method))


def test_random_bytes_to_every_method_end_in_a_clean_status(served: Served,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    @fuzz_settings(150)
    @given(raw_calls())
    def run(c: tuple[str, Method, bytes]) -> None:
        assert_expected(served, *c)

    run()
    assert_still_serving(served, caplog)


# --- structurally valid garbage ---------------------------------------------------------------

def _string_fields(cls: type[Message]) -> list[str]:
    return [f.name for f in cls.DESCRIPTOR.fields
            if f.type == FieldDescriptor.TYPE_STRING and not is_repeated(f)]


# Values that get a request past the envelope checks (a member sender, a known service...),
# so that what follows them (records, flags, replies) is fuzzed too, not only the refusals.
AIMED = {"sender": ["n1", "n2"], "target": ["n1", "n2", "n3", "web/n1", "web/n3"], "service": ["web"],
         "backend": ["n1", "n2", "n3"], "node": ["n1", "n2", "n3"], "to": ["n2", "n3"]}


@st.composite
def message_calls(draw: st.DrawFn) -> tuple[str, Method, bytes]:
    """A message of the method's type with any values, half of the time aimed (AIMED, and a
    caller allowed to make the call); sometimes one of its strings is made big enough that
    the message lands just below, at or just above the size limit."""
    method = draw(st.sampled_from(METHODS))
    msg = draw(messages(method.request, STRINGS))
    fields = _string_fields(method.request)
    caller = draw(st.sampled_from(CALLERS))
    if draw(st.booleans()):
        for name in sorted(set(fields) & set(AIMED)):  # sorted: the same draws in every process
            if draw(st.integers(0, 3)):
                setattr(msg, name, draw(st.sampled_from(AIMED[name])))
        caller = (msg.sender if msg.sender in CALLERS else "n1") if method.service == "Gossip" else (
            "alice" if method.name in ADMIN_ACTIONS else caller)
    if fields and draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(fields))
        setattr(msg, name, "")
        room = MAX_MESSAGE_BYTES - msg.ByteSize() - 8  # the field's tag and length, roughly
        # mostly below: a call over the limit costs ~0.2 s (grpcio reads it all first)
        setattr(msg, name, "x" * max(0, room + draw(st.sampled_from([-1000, -100, -10, -1, 0, 10]))))
    return caller, method, msg.SerializeToString()


def test_garbage_messages_to_every_method_end_in_a_clean_status(served: Served,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    @fuzz_settings(150)
    @given(message_calls())
    def run(c: tuple[str, Method, bytes]) -> None:
        assert_expected(served, *c)

    run()
    assert_still_serving(served, caplog)


def test_refused_callers_change_nothing(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage from a caller that may not call the method never reaches the engine or Raft."""
    refused = [(c, m) for c in CALLERS for m in METHODS if not m.allows(c)]

    @fuzz_settings(100)
    @given(st.sampled_from(refused).flatmap(
        lambda cm: st.tuples(st.just(cm), messages(cm[1].request, STRINGS, many=False))))
    def run(c: tuple[tuple[str, Method], Message]) -> None:
        (caller, method), msg = c
        calls, generation = len(served.engine.calls), served.raft.state.generation
        code, details, _ = call(served, caller, method, msg.SerializeToString())
        if len(msg.SerializeToString()) <= MAX_MESSAGE_BYTES:
            assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), details
        assert (len(served.engine.calls), served.raft.state.generation) == (calls, generation)

    run()
    assert_still_serving(served, caplog)


def test_a_burst_of_big_calls_at_once_ends_cleanly(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """More calls at once than the server admits (maximum_concurrent_rpcs), most of them
    near or over the size limit: each is answered or refused, and the agent carries on."""
    sizes = (MAX_MESSAGE_BYTES - 100, MAX_MESSAGE_BYTES + 100, 3 * MAX_MESSAGE_BYTES)
    jobs = [(CALLERS[i % len(CALLERS)], m, with_unknown_field(_valid(m), size))
            for i, m in enumerate(METHODS * 2) for size in sizes]
    with futures.ThreadPoolExecutor(max_workers=24) as pool:
        done = list(pool.map(lambda job: call(served, *job), jobs))  # call() checks each
    assert len(done) == len(jobs)
    assert_still_serving(served, caplog)


LONG = "x" * 100_000  # far below the message limit, far above what fits in status details


@pytest.mark.parametrize("name, request_", [
    ("Checks", admin_pb2.ChecksRequest(node=LONG)), ("Backends", admin_pb2.BackendsRequest(service=LONG)),
    ("Drain", admin_pb2.DrainRequest(target=LONG)),
    ("Weight", admin_pb2.WeightRequest(service=LONG, backend="n1", weight=1)),
])
def test_a_refusal_of_a_long_name_reaches_the_caller(served: Served, name: str, request_: Message) -> None:
    method = next(m for m in METHODS if m.service == "Admin" and m.name == name)
    code, details, _ = call(served, "alice", method, request_.SerializeToString())
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (code, details[:200])
