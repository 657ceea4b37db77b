"""Protobuf <-> gossip types, with the validation every inbound message gets (STYLE.md §5).

Protobuf types stop here. Inbound messages come from the network, so everything is bounded
and checked; a message that breaks a rule raises WireError with a message that names the
field, and the servicer turns it into INVALID_ARGUMENT. Nothing half-converted leaks in.
"""

from __future__ import annotations

import math

from hacluster.api import gossip_pb2 as pb
from hacluster.gossip.types import Ack, GossipState, NodeMeta, NodeRecord
from hacluster.model import CheckReport, CheckState, Load

MAX_RECORDS = 512  # per message; a 512-member cluster's push-pull still fits
MAX_CHECKS = 64  # per node
MAX_ID = 63
MAX_ADDRESS = 300
MAX_TEXT = 1024  # error and output texts are truncated to this on the way out
MAX_INCARNATION = 2**62


class WireError(ValueError):
    """An inbound message that breaks a rule; the text names the field."""


_STATE_TO_PB = {GossipState.ALIVE: pb.GOSSIP_STATE_ALIVE, GossipState.SUSPECT: pb.GOSSIP_STATE_SUSPECT,
                GossipState.DEAD: pb.GOSSIP_STATE_DEAD, GossipState.LEFT: pb.GOSSIP_STATE_LEFT}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}
_CHECK_TO_PB = {CheckState.PASSING: pb.CHECK_STATE_PASSING, CheckState.FAILING: pb.CHECK_STATE_FAILING,
                CheckState.UNKNOWN: pb.CHECK_STATE_UNKNOWN}
_CHECK_FROM_PB = {v: k for k, v in _CHECK_TO_PB.items()}


def state_to_pb(state: GossipState) -> int:
    return _STATE_TO_PB[state]


def state_from_pb(value: int, where: str = "state") -> GossipState:
    try:
        return _STATE_FROM_PB[value]
    except KeyError:
        raise WireError(f"{where}: unknown gossip state {value}") from None


def check_to_pb(c: CheckReport) -> pb.CheckReport:
    out = pb.CheckReport(name=c.name, kind=c.kind, target=c.target[:MAX_TEXT],
                         state=_CHECK_TO_PB[c.state], error=c.error[:MAX_TEXT],
                         output=c.output[:MAX_TEXT], changed_at=c.changed_at)
    if c.latency_ms is not None:
        out.latency_ms = c.latency_ms
    return out


def check_from_pb(c: pb.CheckReport, where: str) -> CheckReport:
    _text(c.name, f"{where}.name", MAX_ID, empty=False)
    _text(c.kind, f"{where}.kind", MAX_ID, empty=False)
    state = _CHECK_FROM_PB.get(c.state)
    if state is None:
        raise WireError(f"{where}.state: unknown check state {c.state}")
    latency = c.latency_ms if c.HasField("latency_ms") else None
    if latency is not None and not (math.isfinite(latency) and latency >= 0):
        raise WireError(f"{where}.latency_ms: must be a finite number >= 0, got {latency}")
    if not math.isfinite(c.changed_at):
        raise WireError(f"{where}.changed_at: must be finite")
    return CheckReport(name=c.name, kind=c.kind, target=c.target[:MAX_TEXT], state=state,
                       latency_ms=latency, error=c.error[:MAX_TEXT], output=c.output[:MAX_TEXT],
                       changed_at=c.changed_at)


def meta_to_pb(m: NodeMeta) -> pb.NodeMeta:
    return pb.NodeMeta(checks=[check_to_pb(c) for c in m.checks], cpu_percent=m.load.cpu_percent,
                       mem_percent=m.load.mem_percent, draining=m.draining, version=m.version)


def meta_from_pb(m: pb.NodeMeta, where: str) -> NodeMeta:
    if len(m.checks) > MAX_CHECKS:
        raise WireError(f"{where}.checks: {len(m.checks)} checks, at most {MAX_CHECKS}")
    for name, v in (("cpu_percent", m.cpu_percent), ("mem_percent", m.mem_percent)):
        if not math.isfinite(v):
            raise WireError(f"{where}.{name}: must be finite")
    _text(m.version, f"{where}.version", MAX_ID)
    return NodeMeta(checks=tuple(check_from_pb(c, f"{where}.checks[{i}]") for i, c in enumerate(m.checks)),
                    load=Load(m.cpu_percent, m.mem_percent), draining=m.draining, version=m.version)


def record_to_pb(r: NodeRecord) -> pb.NodeRecord:
    out = pb.NodeRecord(node=r.node, address=r.address, incarnation=r.incarnation,
                        state=_STATE_TO_PB[r.state], origin=r.origin, meta_seq=r.meta_seq)
    if r.meta is not None:
        out.meta.CopyFrom(meta_to_pb(r.meta))
    return out


def record_from_pb(r: pb.NodeRecord, where: str) -> NodeRecord:
    _text(r.node, f"{where}.node", MAX_ID, empty=False)
    _text(r.address, f"{where}.address", MAX_ADDRESS, empty=False)
    _text(r.origin, f"{where}.origin", MAX_ID)
    for name, v in (("incarnation", r.incarnation), ("meta_seq", r.meta_seq)):
        if v > MAX_INCARNATION:
            raise WireError(f"{where}.{name}: {v} is beyond any real value")
    return NodeRecord(node=r.node, address=r.address, incarnation=r.incarnation,
                      state=state_from_pb(r.state, f"{where}.state"), origin=r.origin,
                      meta_seq=r.meta_seq,
                      meta=meta_from_pb(r.meta, f"{where}.meta") if r.HasField("meta") else None)


def records_to_pb(records: tuple[NodeRecord, ...]) -> list[pb.NodeRecord]:
    return [record_to_pb(r) for r in records]


def records_from_pb(records: list[pb.NodeRecord], where: str) -> tuple[NodeRecord, ...]:
    if len(records) > MAX_RECORDS:
        raise WireError(f"{where}: {len(records)} records, at most {MAX_RECORDS}")
    return tuple(record_from_pb(r, f"{where}[{i}]") for i, r in enumerate(records))


def ack_to_pb(ack: Ack) -> pb.PingReply:
    return pb.PingReply(responder=record_to_pb(ack.responder), updates=records_to_pb(ack.updates))


def ack_from_pb(reply: pb.PingReply) -> Ack:
    return Ack(responder=record_from_pb(reply.responder, "responder"),
               updates=records_from_pb(reply.updates, "updates"))


def sender_from(value: str) -> str:
    _text(value, "sender", MAX_ID, empty=False)
    return value


def _text(value: str, where: str, limit: int, empty: bool = True) -> None:
    if not empty and not value:
        raise WireError(f"{where}: must not be empty")
    if len(value) > limit:
        raise WireError(f"{where}: {len(value)} characters, at most {limit}")
