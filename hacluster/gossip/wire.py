"""Protobuf <-> gossip types, with the validation every inbound message gets (STYLE.md §5).

Protobuf types stop here. Inbound messages come from the network, so everything is bounded
and checked, and every rule that breaks raises WireError with a message that names the
field. Records are judged one by one (records_from_pb): a record that breaks a rule is
dropped and named in `problems`, the rest of the message goes on, since one unreadable
record (a newer agent's addition, during a rolling upgrade) must not turn a probe into a
failure. Only a malformed envelope (sender, record count, an ack's responder) fails the
whole message; the servicer turns that into INVALID_ARGUMENT. Nothing half-converted leaks in.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from hacluster.api import gossip_pb2 as pb
from hacluster.gossip.precedence import MAX_INCARNATION
from hacluster.gossip.types import Ack, GossipState, NodeMeta, NodeRecord
from hacluster.model import CheckReport, CheckState, Load

MAX_RECORDS = 512  # per message; a 512-member cluster's push-pull still fits
MAX_CHECKS = 64  # per node
MAX_ID = 63
MAX_ADDRESS = 300
# Characters of target, error and output texts that this version sends about itself: the
# feed cuts its reports to this, so that the meta we hold equals everybody's copy. A record
# of 64 checks with three full ASCII texts is then ~60 KB, and the engine's byte budgets
# (membership.py) keep whole messages under the 1 MiB message limit.
MAX_TEXT = 256
# What is accepted, kept and relayed unchanged; longer texts are cut to it, both ways.
# Agents before MAX_TEXT was lowered send up to 1024 characters, and they compare their
# own record as relayed with what they hold: cut on the way through, it would look like a
# record of an earlier run to them, and they would refute it again and again.
RELAY_TEXT = 1024
# A check's name becomes half of a committed health key ("node/check", ha/verdicts.py) and
# its kind and the agent's version are shown to operators: each must be a name, never a
# path, a terminal escape or a page of text. The names an honest agent sends: a check's
# name as the config takes it (health/spec.py, CHECK_NAME), or one derived for an external
# backend, CHECK@IPV4 (dataplane/spec.py, external_check_name); a kind is a plain name. The
# wire takes exactly those (a test holds the rules equal; gossip may not import health/ or
# dataplane/, hence the second spelling), so refusing the rest costs nothing.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
CHECK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(@[0-9]{1,3}(\.[0-9]{1,3}){3})?")
# Versions are PEP 440 strings ("0.3.1", "0.4.0.dev3+g1a2b3c"): printable ASCII, no space.
VERSION = re.compile(r"[\x21-\x7e]{0,63}")


class WireError(ValueError):
    """An inbound message that breaks a rule; the text names the field."""


class Decoded(NamedTuple):
    """The readable records of a message, and what was wrong with the others."""

    records: tuple[NodeRecord, ...]
    problems: tuple[str, ...] = ()


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
    out = pb.CheckReport(name=c.name, kind=c.kind, target=c.target[:RELAY_TEXT],
                         state=_CHECK_TO_PB[c.state], error=c.error[:RELAY_TEXT],
                         output=c.output[:RELAY_TEXT], changed_at=c.changed_at)
    if c.latency_ms is not None:
        out.latency_ms = c.latency_ms
    return out


def check_from_pb(c: pb.CheckReport, where: str) -> CheckReport:
    _name(c.name, f"{where}.name", CHECK_NAME)
    _name(c.kind, f"{where}.kind", NAME)
    # A state this agent does not know (a newer agent's, or none at all) says only that
    # the check's result is not known here. A version that adds a state must expect its
    # own record back with UNKNOWN in its place, and not take it for an earlier run's.
    state = _CHECK_FROM_PB.get(c.state, CheckState.UNKNOWN)
    latency = c.latency_ms if c.HasField("latency_ms") else None
    if latency is not None and not (math.isfinite(latency) and latency >= 0):
        raise WireError(f"{where}.latency_ms: must be a finite number >= 0, got {latency}")
    if not math.isfinite(c.changed_at):
        raise WireError(f"{where}.changed_at: must be finite")
    return CheckReport(name=c.name, kind=c.kind, target=c.target[:RELAY_TEXT], state=state,
                       latency_ms=latency, error=c.error[:RELAY_TEXT],
                       output=c.output[:RELAY_TEXT], changed_at=c.changed_at)


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
    if not VERSION.fullmatch(m.version):
        raise WireError(f"{where}.version: {m.version!r} is not a version (printable ASCII, "
                        "no spaces)")
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


def encoded_size(r: NodeRecord) -> int:
    """The bytes `r` takes in a message (with its field tag and length), for byte budgets."""
    size = record_to_pb(r).ByteSize()
    return size + 1 + _varint_len(size)


def records_to_pb(records: tuple[NodeRecord, ...]) -> list[pb.NodeRecord]:
    return [record_to_pb(r) for r in records]


def records_from_pb(records: list[pb.NodeRecord], where: str) -> Decoded:
    """Every readable record; only a record count above MAX_RECORDS raises."""
    if len(records) > MAX_RECORDS:
        raise WireError(f"{where}: {len(records)} records, at most {MAX_RECORDS}")
    good: list[NodeRecord] = []
    problems: list[str] = []
    for i, r in enumerate(records):
        record, problem = _salvaged(r, f"{where}[{i}]")
        if record is not None:
            good.append(record)
        if problem:
            problems.append(problem)
    return Decoded(tuple(good), tuple(problems))


def _salvaged(r: pb.NodeRecord, where: str) -> tuple[NodeRecord | None, str]:
    """A record, or failing that the record without its meta, or None; and what was wrong.
    Keeping the state without the meta matters: an alive record may be a refutation, and
    dropping it would let a false suspicion turn into a death. The bare record has
    meta_seq 0, so the meta the receiver holds stays in force until a readable one comes."""
    try:
        return record_from_pb(r, where), ""
    except WireError as e:
        if not r.HasField("meta"):
            return None, f"{e} (record dropped)"
        problem = str(e)
    bare = pb.NodeRecord()
    bare.CopyFrom(r)
    bare.ClearField("meta")
    bare.meta_seq = 0
    try:
        return record_from_pb(bare, where), f"{problem} (meta dropped)"
    except WireError as e:
        return None, f"{e} (record dropped)"


def ack_to_pb(ack: Ack) -> pb.PingReply:
    return pb.PingReply(responder=record_to_pb(ack.responder), updates=records_to_pb(ack.updates))


def ack_from_pb(reply: pb.PingReply) -> tuple[Ack, tuple[str, ...]]:
    """The ack and the problems of its records. Raises only when even the responder's
    bare record is unreadable: without it the ack proves nothing."""
    responder, problem = _salvaged(reply.responder, "responder")
    if responder is None:
        raise WireError(problem)
    updates = records_from_pb(reply.updates, "updates")
    return (Ack(responder, updates.records),
            ((problem,) if problem else ()) + updates.problems)


def sender_from(value: str) -> str:
    _text(value, "sender", MAX_ID, empty=False)
    return value


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _name(value: str, where: str, rule: re.Pattern[str]) -> None:
    _text(value, where, MAX_ID, empty=False)
    if not rule.fullmatch(value):
        raise WireError(f"{where}: {value!r} is not a name (letters, digits, '_', '.', '-', "
                        "starting with a letter or digit" + ("; @IPV4 for an external host)"
                                                             if rule is CHECK_NAME else ")"))


def _text(value: str, where: str, limit: int, empty: bool = True) -> None:
    if not empty and not value:
        raise WireError(f"{where}: must not be empty")
    if len(value) > limit:
        raise WireError(f"{where}: {len(value)} characters, at most {limit}")
