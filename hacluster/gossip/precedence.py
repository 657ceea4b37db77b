"""What we hold about one member and how two claims about it are ordered (SWIM's rules).

`Member` is one row of a member's table, `MemberView` what it shows of it, and `precedence()`
decides what an incoming claim does to a row. Pure: no clock, no lock, no I/O; the engine
(membership.py) applies the verdicts under its lock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hacluster.gossip.suspicion import Suspicion
from hacluster.gossip.types import GossipState, NodeMeta, NodeRecord
from hacluster.model import NodeId

ALIVE, SUSPECT, DEAD, LEFT = GossipState.ALIVE, GossipState.SUSPECT, GossipState.DEAD, GossipState.LEFT
LIVE = (ALIVE, SUSPECT)
GONE = (DEAD, LEFT)

MAX_INCARNATION = 2**62  # the wire refuses anything above (wire.py)
# Honest incarnations grow by one per refutation and never get near this; a claim above it
# is forged or corrupt. Every member ignores it, and a member never refutes past it, so a
# forged "suspect at 2**62" can neither stick nor push the refutation off the wire. Claims
# below it are bounded too: nobody moves another's incarnation far from its own word
# (provenance.py), so nobody can push a member to this limit.
INCARNATION_LIMIT = MAX_INCARNATION // 2


@dataclass(frozen=True)
class MemberView:
    """What `hacluster members` shows, one per member including ourselves."""

    node: NodeId
    address: str
    state: GossipState
    incarnation: int
    meta: NodeMeta | None  # None until heard from
    last_seen_age: float | None  # since a message came directly from it; None = never; 0 = self
    state_age: float  # since its state last changed in our view
    confirmations: int  # suspect only: independent confirmations so far
    is_self: bool


class Verdict(enum.Enum):
    IGNORE = "ignore"
    APPLY = "apply"  # take the incoming state and incarnation
    META = "meta"  # same alive incarnation, newer meta
    CONFIRM = "confirm"  # the same suspicion, possibly from another reporter


def precedence(current: NodeRecord, incoming: NodeRecord) -> Verdict:
    """SWIM ordering of two claims about the same (other) member.

    alive(i) beats anything below i (and so revives dead/left); suspect(i) beats alive(<=i)
    and suspect(<i) but never revives; dead/left(i) beat alive/suspect(<=i); left(i) beats
    dead(i) because the member itself said so; a same-incarnation alive only brings meta.
    """
    i, j, cur = incoming.incarnation, current.incarnation, current.state
    if incoming.state is ALIVE:
        if i > j:
            return Verdict.APPLY
        if i == j and cur in LIVE and _newer_meta(current, incoming):
            return Verdict.META
        return Verdict.IGNORE
    if incoming.state is SUSPECT:
        if (cur is ALIVE and i >= j) or (cur is SUSPECT and i > j):
            return Verdict.APPLY
        return Verdict.CONFIRM if cur is SUSPECT and i == j else Verdict.IGNORE
    if cur in LIVE:
        return Verdict.APPLY if i >= j else Verdict.IGNORE
    if i > j or (i == j and incoming.state is LEFT and cur is DEAD):
        return Verdict.APPLY
    return Verdict.IGNORE


def answerable(record: NodeRecord) -> bool:
    """Whether the member the claim is about can still outbid it: alive(i) up to
    INCARNATION_LIMIT, suspect/dead/left(i) only below it, since the refutation is i + 1.
    Every member drops unanswerable claims before precedence(), and the member itself
    ignores claims at or above the limit (merge.py), so no member holds a claim that its
    subject cannot refute.
    The one value this leaves open, alive(INCARNATION_LIMIT) (its subject could no longer
    be suspected), only its subject can state: hearsay never moves an incarnation far from
    the subject's own word, and the subject's word replaces a claim it cannot outbid
    (provenance.py, rules 2 and 4)."""
    if record.state is ALIVE:
        return record.incarnation <= INCARNATION_LIMIT
    return record.incarnation < INCARNATION_LIMIT


def from_earlier_run(me: NodeRecord, record: NodeRecord) -> bool:
    """An alive record about us that is not ours: we restarted (incarnation and meta_seq
    back at 0) and the cluster still holds what we said before. Others would ignore our
    new record until we outbid it."""
    if record.incarnation != me.incarnation:
        return record.incarnation > me.incarnation
    if record.meta_seq != me.meta_seq:
        return record.meta_seq > me.meta_seq
    return record.meta is not None and record.meta != me.meta


def _newer_meta(current: NodeRecord, incoming: NodeRecord) -> bool:
    if incoming.meta is None:
        return False
    return incoming.meta_seq > current.meta_seq or (
        incoming.meta_seq == current.meta_seq and current.meta is None)


@dataclass
class Member:
    node: NodeId
    address: str
    is_self: bool
    state_changed: float
    incarnation: int = 0
    state: GossipState = ALIVE
    origin: NodeId = ""
    meta_seq: int = 0
    meta: NodeMeta | None = None
    last_seen: float | None = None
    suspicion: Suspicion | None = None
    heard: int | None = None  # the incarnation of its own latest word to us (provenance.py)
    told: tuple[object, ...] | None = None  # which of our own records it got from us

    def current(self) -> NodeRecord:
        """Everything we hold, meta included whatever the state (for precedence)."""
        return NodeRecord(self.node, self.address, self.incarnation, self.state, self.origin,
                          self.meta_seq, self.meta)

    def record(self) -> NodeRecord:
        """The claim as its subject makes it (ours), or as we show it to its subject: only
        alive records carry meta. About others, to others, see provenance.hearsay()."""
        if self.state is ALIVE:
            return NodeRecord(self.node, self.address, self.incarnation, ALIVE, "",
                              self.meta_seq, self.meta)
        return NodeRecord(self.node, self.address, self.incarnation, self.state, self.origin)
