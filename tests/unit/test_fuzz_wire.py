"""gossip/wire.py against random bytes and random messages (hypothesis).

Whatever a peer sends, decoding ends in a WireError or in records that keep every rule
(bounded texts and counts, finite numbers, known states): nothing else escapes, and what
is decoded survives being sent on unchanged (a relay must not alter a record).
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from hacluster.api import gossip_pb2 as pb
from hacluster.gossip import wire
from hacluster.gossip.precedence import MAX_INCARNATION
from hacluster.gossip.types import Ack, GossipState, NodeRecord
from hacluster.model import CheckState
from tests.unit.fuzz_strategies import LONG_TEXT, fuzz_settings, messages, with_unknown_field

STRINGS = st.one_of(st.text(max_size=40), LONG_TEXT, st.sampled_from(["", "n1", "n2", "a:1", "10.0.0.1:7101",
                                                                      "web", "http", "\x00", "é" * 63]))
RECORDS = messages(pb.NodeRecord, STRINGS)
# A record with many checks in its meta (the count limit is per node).
RECORDS_MANY_CHECKS = st.builds(lambda r, m: _with_meta(r, m), messages(pb.NodeRecord, STRINGS, many=False),
                                messages(pb.NodeMeta, STRINGS))
ANY_RECORD = st.one_of(RECORDS, RECORDS_MANY_CHECKS)


def _with_meta(r: pb.NodeRecord, m: pb.NodeMeta) -> pb.NodeRecord:
    r.meta.CopyFrom(m)
    return r


def assert_sound(r: NodeRecord) -> None:
    """A decoded record keeps the rules wire.py promises, and relays unchanged."""
    assert isinstance(r, NodeRecord) and isinstance(r.state, GossipState)
    assert 0 < len(r.node) <= wire.MAX_ID and 0 < len(r.address) <= wire.MAX_ADDRESS
    assert len(r.origin) <= wire.MAX_ID
    assert 0 <= r.incarnation <= MAX_INCARNATION and 0 <= r.meta_seq <= MAX_INCARNATION
    if r.meta is not None:
        assert len(r.meta.checks) <= wire.MAX_CHECKS and len(r.meta.version) <= wire.MAX_ID
        assert math.isfinite(r.meta.load.cpu_percent) and math.isfinite(r.meta.load.mem_percent)
        for c in r.meta.checks:
            assert 0 < len(c.name) <= wire.MAX_ID and 0 < len(c.kind) <= wire.MAX_ID
            assert isinstance(c.state, CheckState) and math.isfinite(c.changed_at)
            assert c.latency_ms is None or (math.isfinite(c.latency_ms) and c.latency_ms >= 0)
            assert max(len(c.target), len(c.error), len(c.output)) <= wire.RELAY_TEXT
    assert wire.record_from_pb(wire.record_to_pb(r), "relayed") == r
    assert wire.encoded_size(r) > 0


def assert_problems(problems: tuple[str, ...], dropped: int) -> None:
    assert all(isinstance(p, str) and p.endswith(("(record dropped)", "(meta dropped)")) for p in problems)
    assert sum(p.endswith("(record dropped)") for p in problems) == dropped


def decode_records(records: Any, where: str) -> None:
    try:
        decoded = wire.records_from_pb(records, where)
    except wire.WireError as e:
        assert len(records) > wire.MAX_RECORDS and str(e).startswith(f"{where}: ")
        return
    for r in decoded.records:
        assert_sound(r)
    assert_problems(decoded.problems, len(records) - len(decoded.records))


def decode_ack(reply: pb.PingReply) -> None:
    try:
        ack, problems = wire.ack_from_pb(reply)
    except wire.WireError as e:
        assert str(e).startswith(("responder", "updates")), str(e)
        return
    assert isinstance(ack, Ack)
    for r in (ack.responder, *ack.updates):
        assert_sound(r)
    assert all(isinstance(p, str) and p for p in problems)


@fuzz_settings(150)
@given(st.lists(ANY_RECORD, max_size=6))
def test_any_records_decode_to_sound_ones_and_named_problems(records: list[pb.NodeRecord]) -> None:
    decode_records(records, "updates")


@fuzz_settings(100)
@given(messages(pb.PushPullRequest, STRINGS))
def test_any_push_pull_decodes_or_is_refused_whole(request: pb.PushPullRequest) -> None:
    decode_records(request.records, "records")


@fuzz_settings(150)
@given(messages(pb.PingReply, STRINGS))
def test_any_ack_decodes_or_is_a_wire_error(reply: pb.PingReply) -> None:
    decode_ack(reply)


@fuzz_settings(100)
@given(ANY_RECORD)
def test_a_single_record_decodes_or_is_a_wire_error_naming_the_field(record: pb.NodeRecord) -> None:
    try:
        r = wire.record_from_pb(record, "r")
    except wire.WireError as e:
        assert str(e).startswith("r."), str(e)
        return
    assert_sound(r)


@fuzz_settings(100)
@given(STRINGS, st.integers(-(2**31), 2**31 - 1))
def test_sender_and_state(sender: str, state: int) -> None:
    try:
        assert wire.sender_from(sender) == sender and 0 < len(sender) <= wire.MAX_ID
    except wire.WireError as e:
        assert str(e).startswith("sender: ")
    try:
        assert isinstance(wire.state_from_pb(state), GossipState)
    except wire.WireError as e:
        assert str(e).startswith("state: ")


# What the servers' deserializers get: any bytes, or a real message damaged or grown.
def _damaged(data: bytes, at: int, junk: bytes) -> bytes:
    at = at % (len(data) + 1)
    return data[:at] + junk + data[at + len(junk):]


_MESSAGE_TYPES = [pb.PingRequest, pb.PingReply, pb.GossipRequest, pb.PushPullRequest, pb.PushPullReply,
                  pb.NodeRecord]


@st.composite
def payloads(draw: st.DrawFn) -> tuple[type, bytes]:
    cls = draw(st.sampled_from(_MESSAGE_TYPES))
    kind = draw(st.sampled_from(["bytes", "damaged", "grown"]))
    if kind == "bytes":
        return cls, draw(st.binary(max_size=300))
    data = draw(messages(cls, STRINGS)).SerializeToString()
    if kind == "grown":
        return cls, with_unknown_field(data, draw(st.sampled_from([len(data) + 10, 70_000, 1 << 20])))
    return cls, _damaged(data, draw(st.integers(0, 1 << 20)), draw(st.binary(min_size=1, max_size=8)))


@fuzz_settings(150)
@given(payloads())
def test_any_bytes_parse_and_decode_or_are_refused(payload: tuple[type, bytes]) -> None:
    cls, data = payload
    try:
        msg = cls.FromString(data)
    except DecodeError:
        return  # what gRPC's deserializer raises; the server answers it (test_fuzz_rpc.py)
    if cls is pb.PingReply:
        decode_ack(msg)
    elif cls is pb.NodeRecord:
        decode_records([msg], "updates")
    else:
        if hasattr(msg, "sender"):
            try:
                wire.sender_from(msg.sender)
            except wire.WireError:
                pass
        decode_records(msg.records if hasattr(msg, "records") else msg.updates, "records")
