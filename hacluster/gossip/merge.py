"""Applying claims to the member table, lock held (the merge half of memberlist's state.go).

`Merger` is a mixin of `Membership`: its methods run with `_lock` held and never call the
transport. They follow `precedence()`'s verdicts, refute claims about ourselves, and queue
what changed for broadcast. State changes are collected as notes, which the caller hands to
`_notify()` after releasing the lock, since the callback may call back into the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from hacluster.gossip.awareness import Awareness
from hacluster.gossip.broadcast import BroadcastQueue
from hacluster.gossip.precedence import (
    ALIVE,
    DEAD,
    GONE,
    INCARNATION_LIMIT,
    LEFT,
    SUSPECT,
    Member,
    MemberView,
    Verdict,
    answerable,
    from_earlier_run,
    precedence,
)
from hacluster.gossip.suspicion import Suspicion, expected_confirmations, suspicion_bounds
from hacluster.gossip.types import GossipState, NodeRecord
from hacluster.model import NodeId

if TYPE_CHECKING:
    from hacluster.gossip.membership import GossipTiming

log = logging.getLogger("hacluster.gossip")

_Note = tuple[MemberView, GossipState]


class Merger:
    """The lock-held state changes of `Membership`, which sets these attributes."""

    _id: NodeId
    _me: Member
    _members: dict[NodeId, Member]
    _timing: GossipTiming
    _clock: Callable[[], float]
    _awareness: Awareness
    _queue: BroadcastQueue
    _stats: dict[str, int]
    _unknown_logged: set[NodeId]
    _notes: list[_Note]
    _on_change: Callable[[MemberView, GossipState | None], None] | None

    def _touch(self, node: NodeId) -> None:
        member = self._members.get(node)
        if member is None:
            self._unknown(node)
        elif not member.is_self:
            member.last_seen = self._clock()

    def _unknown(self, node: NodeId) -> None:
        self._stats["unknown_records"] += 1
        if node not in self._unknown_logged:
            self._unknown_logged.add(node)
            log.warning("ignoring gossip about %r: not a configured member", node)

    def _merge_full_state(self, records: Iterable[NodeRecord]) -> None:
        # As memberlist's mergeState: another member's full state may be stale, so its
        # "dead" only makes a member suspect here; a live member then gets to refute it.
        self._merge_all(replace(r, state=SUSPECT) if r.state is DEAD and r.node != self._id else r
                        for r in records)

    def _merge_all(self, records: Iterable[NodeRecord]) -> None:
        for record in records:
            self._merge(record)

    def _merge(self, record: NodeRecord) -> None:
        if not answerable(record):
            self._absurd(record)
            return
        if record.node == self._id:
            self._merge_self(record)
            return
        member = self._members.get(record.node)
        if member is None:
            self._unknown(record.node)
            return
        verdict = precedence(member.current(), record)
        if verdict is Verdict.APPLY:
            self._apply(member, record)
        elif verdict is Verdict.META:
            member.meta, member.meta_seq = record.meta, record.meta_seq
            self._queue.queue(member.record())
        elif verdict is Verdict.CONFIRM:
            self._confirm(member, record.origin)

    def _apply(self, member: Member, record: NodeRecord) -> None:
        old = member.state
        member.incarnation, member.state = record.incarnation, record.state
        member.origin = "" if record.state is ALIVE else record.origin
        if record.state is ALIVE:
            member.meta_seq = record.meta_seq
            if record.meta is not None:
                member.meta = record.meta
        if record.state is not SUSPECT:
            member.suspicion = None
        elif old is SUSPECT and member.suspicion is not None:
            self._confirm(member, record.origin)  # keeps the clock of the first suspicion
        else:
            member.suspicion = self._new_suspicion(record.origin)
        self._queue.queue(member.record())
        if old is not record.state:
            self._changed(member, old)

    def _confirm(self, member: Member, origin: NodeId) -> None:
        if member.suspicion is not None and member.suspicion.confirm(origin):
            self._stats["confirmations"] += 1
            log.debug("%s: suspicion confirmed by %s (%d so far)", member.node, origin,
                      member.suspicion.confirmations)
            # Re-gossip under the confirmer's name, so the others can count it too.
            self._queue.queue(replace(member.record(), origin=origin))

    def _new_suspicion(self, origin: NodeId) -> Suspicion:
        t = self._timing
        live = sum(1 for m in self._members.values() if m.state not in GONE)
        low, high = suspicion_bounds(live, t.suspicion_mult, t.suspicion_max_timeout_mult, t.probe_interval)
        return Suspicion(self._clock(), origin, expected_confirmations(live, t.suspicion_mult), low, high)

    def _changed(self, member: Member, old: GossipState) -> None:
        now = self._clock()
        member.state_changed = now
        node, inc, origin = member.node, member.incarnation, member.origin
        if member.state is SUSPECT:
            self._stats["suspicions"] += 1
            log.info("%s is suspect (%s got no ack, incarnation %d)", node, origin, inc)
        elif member.state is DEAD:
            self._stats["deaths"] += 1
            log.info("%s is dead (%s's suspicion timed out, incarnation %d)", node, origin, inc)
        elif member.state is LEFT:
            self._stats["lefts"] += 1
            log.info("%s left the cluster (incarnation %d)", node, inc)
        elif old is SUSPECT:
            log.info("%s is alive (refuted the suspicion, incarnation %d)", node, inc)
        else:
            self._stats["revivals"] += 1
            log.info("%s is alive again (was %s, incarnation %d)", node, old, inc)
        self._notes.append((self._view(member, now), old))

    def _merge_self(self, record: NodeRecord) -> None:
        """Refute any claim about us that is not our current alive record. Our own LEFT is
        final until restart. A claim at or above INCARNATION_LIMIT is forged or corrupt:
        echoing it plus one would put a record on the wire that no member accepts (and
        every member ignores the claim itself, precedence.answerable)."""
        me = self._me
        if me.state is LEFT:
            return
        if record.incarnation >= INCARNATION_LIMIT:
            self._absurd(record)  # answerable by the rule for others, but not by us
            return
        if record.state is ALIVE:
            if from_earlier_run(me.current(), record):
                self._refute(record, "an alive record of ours from an earlier run", penalize=False)
        elif record.incarnation >= me.incarnation:
            # A LEFT about us is from our own earlier run, not a sign that we are slow.
            self._refute(record, f"{record.origin or 'someone'} calling us {record.state}",
                         penalize=record.state is not LEFT)

    def _absurd(self, record: NodeRecord) -> None:
        self._stats["absurd_claims"] += 1
        n = self._stats["absurd_claims"]
        if n == 1 or n % 100 == 0:  # whoever sends one sends it again: do not flood the log
            log.warning("ignoring a claim that %s is %s at incarnation %d (from %s): beyond any "
                        "real incarnation (%d such claims so far)", record.node,
                        record.state.value, record.incarnation, record.origin or "someone", n)

    def _refute(self, record: NodeRecord, why: str, penalize: bool) -> None:
        self._me.incarnation = record.incarnation + 1
        self._stats["refutations"] += 1
        if penalize:
            # Lifeguard: being suspected hints that we were too slow to answer.
            self._awareness.apply(1)
        self._queue.queue(self._me.record())
        log.info("refuting %s (incarnation %d): now incarnation %d", why, record.incarnation,
                 self._me.incarnation)

    def _apply_self(self, state: GossipState) -> None:
        old = self._me.state
        self._me.state, self._me.origin = state, self._id
        self._queue.queue(self._me.record())
        self._changed(self._me, old)

    def _take_notes(self) -> list[_Note]:
        notes, self._notes = self._notes, []
        return notes

    def _notify(self, notes: list[_Note]) -> None:
        """Outside the lock: the callback may call back into members()."""
        if self._on_change is None:
            return
        for view, old in notes:
            try:
                self._on_change(view, old)
            except Exception:
                log.exception("on_change callback failed for %s", view.node)

    def _view(self, m: Member, now: float) -> MemberView:
        if m.is_self:
            seen: float | None = 0.0
        else:
            seen = None if m.last_seen is None else max(0.0, now - m.last_seen)
        confirmations = m.suspicion.confirmations if m.state is SUSPECT and m.suspicion else 0
        return MemberView(m.node, m.address, m.state, m.incarnation, m.meta, seen,
                          max(0.0, now - m.state_changed), confirmations, m.is_self)
