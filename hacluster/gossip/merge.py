"""Applying claims to the member table, lock held (the merge half of memberlist's state.go).

`Merger` is a mixin of `Membership`: its methods run with `_lock` held and never call the
transport. Every record comes with its authenticated sender: a member's own word about
itself and hearsay about it are taken by different rules (provenance.py), then by
`precedence()`'s verdicts. Claims about ourselves are refuted within reach, and what
changed is queued for broadcast as hearsay. State changes are collected as notes, which the
caller hands to `_notify()` after releasing the lock, since the callback may call back into
the engine.
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
from hacluster.gossip.provenance import (
    HEARSAY_MARGIN,
    Word,
    as_claim,
    hearsay,
    hearsay_too_far,
    newer_own_meta,
    out_of_reach,
    own_word,
)
from hacluster.gossip.suspicion import Suspicion, expected_confirmations, suspicion_bounds
from hacluster.gossip.types import GossipState, NodeRecord
from hacluster.model import NodeId

if TYPE_CHECKING:
    import threading

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
    _warned: set[tuple[str, NodeId]]
    _notes: list[_Note]
    _on_change: Callable[[MemberView, GossipState | None], None] | None
    _expiry_wake: threading.Event  # set when a suspicion starts or is confirmed (runner.py)

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

    def _merge_full_state(self, records: Iterable[NodeRecord], sender: NodeId) -> None:
        for record in records:
            self._merge(record, sender, full_state=True)

    def _merge_all(self, records: Iterable[NodeRecord], sender: NodeId) -> None:
        for record in records:
            self._merge(record, sender)

    def _merge(self, record: NodeRecord, sender: NodeId, full_state: bool = False) -> None:
        """`record` as `sender` (authenticated; our own id for our own observations) gave
        it. `full_state`: from a push-pull, which may be stale (provenance.as_claim)."""
        if not answerable(record):
            self._absurd(record, sender)
            return
        if record.node == self._id:
            self._merge_self(record, sender)
            return
        member = self._members.get(record.node)
        if member is None:
            self._unknown(record.node)
            return
        if record.node == sender and record.state in (ALIVE, LEFT):
            self._merge_own_word(member, record)
        else:
            self._merge_hearsay(member, record, sender, full_state)

    def _merge_own_word(self, member: Member, record: NodeRecord) -> None:
        word = own_word(member.incarnation, member.heard, record.incarnation)
        if word is Word.STALE:
            return
        member.heard = record.incarnation
        if word is Word.RESET:
            self._stats["resets"] += 1
            log.info("%s speaks for itself at incarnation %d: replacing the claim that it is %s "
                     "at %d, which is not its word (hearsay, or an earlier run of it)",
                     member.node, record.incarnation, member.state.value, member.incarnation)
            self._apply(member, record)
            return
        current = member.current()
        verdict = precedence(current, record)
        if verdict is Verdict.IGNORE and newer_own_meta(current, record):
            verdict = Verdict.META
        self._follow(member, record, verdict)

    def _merge_hearsay(self, member: Member, record: NodeRecord, sender: NodeId,
                       full_state: bool) -> None:
        node = record.node
        if record.meta is not None and record.meta != member.meta:
            self._forged("forged_meta", sender, "ignoring %s's checks, draining flag and load "
                         "as %s tells them: only %s itself states its own", node, sender, node)
        if record.state is LEFT and not (member.state is LEFT
                                         and member.incarnation >= record.incarnation):
            self._forged("forged_lefts", sender, "%s says that %s left: only %s itself can say "
                         "so; taken as %s's claim that it is dead", sender, node, node, sender)
        if hearsay_too_far(member.incarnation, member.heard, record.incarnation):
            if member.heard is None:
                # Before its first word to us (just after our start, in a cluster that has
                # run long) an honest claim can be this far: no warning; its word comes
                # within a probe pass and then the claims will fit.
                self._stats["unheard_claims"] += 1
                log.debug("not yet taking %s's claim that %s is %s at incarnation %d: more than "
                          "%d above what we hold, and we have not heard %s itself yet", sender,
                          node, record.state.value, record.incarnation, HEARSAY_MARGIN, node)
                return
            self._forged("forged_incarnations", sender, "ignoring %s's claim that %s is %s at "
                         "incarnation %d: more than %d above what %s itself last said (%d)",
                         sender, node, record.state.value, record.incarnation, HEARSAY_MARGIN,
                         node, member.heard)
            return
        claim = as_claim(record, sender, full_state)
        self._follow(member, claim, precedence(member.current(), claim))

    def _follow(self, member: Member, record: NodeRecord, verdict: Verdict) -> None:
        if verdict is Verdict.APPLY:
            self._apply(member, record)
        elif verdict is Verdict.META:
            # Nothing to broadcast: others take a member's meta only from itself.
            member.meta, member.meta_seq = record.meta, record.meta_seq
        elif verdict is Verdict.CONFIRM:
            self._confirm(member, record.origin)

    def _forged(self, kind: str, sender: NodeId, msg: str, *args: object) -> None:
        """Count; warn on the first of each kind from each sender, then every 100th of the
        kind (a forger repeats itself; senders are members, so the set stays small)."""
        self._stats[kind] += 1
        n = self._stats[kind]
        if (kind, sender) in self._warned and n % 100:
            return
        self._warned.add((kind, sender))
        log.warning(msg + " (%d such so far)", *args, n)

    def _apply(self, member: Member, record: NodeRecord) -> None:
        old, old_incarnation = member.state, member.incarnation
        member.incarnation, member.state = record.incarnation, record.state
        if record.state is ALIVE and (old in GONE or record.incarnation != old_incarnation):
            member.told = None  # it may have restarted, forgetting our news: tell it again
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
            self._expiry_wake.set()  # the expiry thread sleeps until the earliest deadline
        self._queue.queue(hearsay(member, self._id))
        if old is not record.state:
            self._changed(member, old)

    def _confirm(self, member: Member, origin: NodeId) -> None:
        if member.suspicion is not None and member.suspicion.confirm(origin):
            self._stats["confirmations"] += 1
            self._expiry_wake.set()  # its deadline came closer: the expiry thread looks again
            log.debug("%s: suspicion confirmed by %s (%d so far)", member.node, origin,
                      member.suspicion.confirmations)
            # Re-gossip under the confirmer's name, so the others can count it too.
            self._queue.queue(replace(hearsay(member, self._id), origin=origin))

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

    def _merge_self(self, record: NodeRecord, sender: NodeId) -> None:
        """Refute any claim about us that is not our current alive record. Our own LEFT is
        final until restart. A claim at or above INCARNATION_LIMIT is forged or corrupt:
        echoing it plus one would put a record on the wire that no member accepts (and
        every member ignores the claim itself, precedence.answerable). A claim beyond our
        reach (provenance.py, rule 3) is not outbid: our own word goes to every member."""
        me = self._me
        if me.state is LEFT:
            return
        if record.incarnation >= INCARNATION_LIMIT:
            self._absurd(record, sender)  # answerable by the rule for others, but not by us
            return
        if record.state is ALIVE:
            if not from_earlier_run(me.current(), record):
                return
            why, penalize = "an alive record of ours from an earlier run", False
        elif record.incarnation >= me.incarnation:
            # A LEFT about us is from our own earlier run, not a sign that we are slow.
            why = f"{record.origin or 'someone'} calling us {record.state}"
            penalize = record.state is not LEFT
        else:
            return
        if out_of_reach(me.incarnation, record.incarnation):
            self._forged("claims_beyond_reach", sender, "%s says that we are %s at incarnation "
                         "%d, more than %d above our %d: an earlier run of ours, or forged; not "
                         "climbing to it, telling every member our own word instead", sender,
                         record.state.value, record.incarnation, HEARSAY_MARGIN, me.incarnation)
            for m in self._members.values():
                m.told = None
            return
        self._refute(record, why, penalize)

    def _absurd(self, record: NodeRecord, sender: NodeId) -> None:
        self._stats["absurd_claims"] += 1
        n = self._stats["absurd_claims"]
        if n == 1 or n % 100 == 0:  # whoever sends one sends it again: do not flood the log
            log.warning("ignoring a claim that %s is %s at incarnation %d (from %s, by %s): beyond "
                        "any real incarnation (%d such claims so far)", record.node,
                        record.state.value, record.incarnation, sender,
                        record.origin or "someone", n)

    def _refute(self, record: NodeRecord, why: str, penalize: bool) -> None:
        """Our record outbids the claim. It needs no queueing: every member whose `told`
        is not our new record gets it from us (membership.py), and the ack or push-pull
        answer to the message that carried the claim already holds it."""
        self._me.incarnation = record.incarnation + 1
        self._stats["refutations"] += 1
        if penalize:
            # Lifeguard: being suspected hints that we were too slow to answer.
            self._awareness.apply(1)
        log.info("refuting %s (incarnation %d): now incarnation %d", why, record.incarnation,
                 self._me.incarnation)

    def _apply_self(self, state: GossipState) -> None:
        old = self._me.state
        self._me.state, self._me.origin = state, self._id
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
