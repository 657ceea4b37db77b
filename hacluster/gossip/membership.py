"""SWIM membership with Lifeguard's refinements, as a driven engine (DESIGN.md §5).

Each period a member probes one other member (randomized round-robin); on no ack it asks up
to k others to probe it (ping-req), and on no answer at all it suspects it. A suspicion
turns into death after a timeout that shrinks as other members confirm it (suspicion.py);
the suspect refutes by raising its incarnation. Claims travel piggybacked on pings, acks
and gossip (broadcast.py) and a slow push-pull exchange repairs what was missed. Our own
health score (awareness.py) stretches our timeouts when we are the slow one.

The engine does no I/O of its own: it talks through a `Transport` (types.py) and reads time
from an injected clock, so tests drive `probe_once()` & co. directly under a fake clock.
Invariant: `_lock` guards all state and is never held across a transport call, so inbound
handlers on other threads (the transport's server) cannot deadlock with our own probes.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from hacluster.gossip.awareness import Awareness
from hacluster.gossip.broadcast import BroadcastQueue
from hacluster.gossip.suspicion import Suspicion, expected_confirmations, suspicion_bounds
from hacluster.gossip.types import Ack, GossipState, NodeMeta, NodeRecord, Transport
from hacluster.model import NodeId

log = logging.getLogger("hacluster.gossip")

ALIVE, SUSPECT, DEAD, LEFT = GossipState.ALIVE, GossipState.SUSPECT, GossipState.DEAD, GossipState.LEFT
_LIVE = (ALIVE, SUSPECT)
_GONE = (DEAD, LEFT)

# A push-pull carries the full state (tens of records): allow two probe intervals, unscaled.
PUSH_PULL_TIMEOUT_PROBES = 2.0
EXPIRY_PERIOD = 0.05
STOP_WAIT = 2.0  # stop() waits this long for threads stuck in a transport call


@dataclass(frozen=True)
class GossipTiming:
    """Seconds and multipliers; the defaults suit a hospital LAN (sub-millisecond RTT)."""

    probe_interval: float = 0.5
    probe_timeout: float = 0.2  # must stay well below probe_interval: ping-reqs use the rest
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    push_pull_interval: float = 10.0
    reconnect_interval: float = 2.0  # dead/left members retried with a push-pull this often
    awareness_max: int = 8
    max_updates_per_message: int = 16  # bound on piggybacked records per message


DEFAULT_TIMING = GossipTiming()


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
        if i == j and cur in _LIVE and _newer_meta(current, incoming):
            return Verdict.META
        return Verdict.IGNORE
    if incoming.state is SUSPECT:
        if (cur is ALIVE and i >= j) or (cur is SUSPECT and i > j):
            return Verdict.APPLY
        return Verdict.CONFIRM if cur is SUSPECT and i == j else Verdict.IGNORE
    if cur in _LIVE:
        return Verdict.APPLY if i >= j else Verdict.IGNORE
    if i > j or (i == j and incoming.state is LEFT and cur is DEAD):
        return Verdict.APPLY
    return Verdict.IGNORE


def _from_earlier_run(me: NodeRecord, record: NodeRecord) -> bool:
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
class _Member:
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

    def current(self) -> NodeRecord:
        """Everything we hold, meta included whatever the state (for precedence)."""
        return NodeRecord(self.node, self.address, self.incarnation, self.state, self.origin,
                          self.meta_seq, self.meta)

    def record(self) -> NodeRecord:
        """The claim as gossiped: only alive records carry meta."""
        if self.state is ALIVE:
            return NodeRecord(self.node, self.address, self.incarnation, ALIVE, "",
                              self.meta_seq, self.meta)
        return NodeRecord(self.node, self.address, self.incarnation, self.state, self.origin)


_STATS = ("pings_sent", "ping_reqs_sent", "gossips_sent", "push_pulls_sent", "pings_received",
          "ping_reqs_received", "gossips_received", "push_pulls_received", "acks_received",
          "probe_failures", "indirect_acks", "suspicions", "confirmations", "refutations",
          "deaths", "lefts", "revivals", "unknown_records", "step_errors")

_Note = tuple[MemberView, GossipState]


class Membership:
    """One member's view of a statically configured cluster (peers come from config)."""

    def __init__(self, node_id: NodeId, address: str, peers: dict[NodeId, str], transport: Transport,
                 timing: GossipTiming = DEFAULT_TIMING, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, version: str = "",
                 on_change: Callable[[MemberView, GossipState | None], None] | None = None) -> None:
        self._id = node_id
        self._transport = transport
        self._timing = timing
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._version = version
        self._on_change = on_change
        self._lock = threading.Lock()
        now = clock()
        self._me = _Member(node_id, address, True, now, meta=NodeMeta(version=version), last_seen=now)
        self._members: dict[NodeId, _Member] = {node_id: self._me}
        for peer, peer_address in peers.items():
            if peer != node_id:
                self._members[peer] = _Member(peer, peer_address, False, now)
        self._awareness = Awareness(timing.awareness_max)
        self._queue = BroadcastQueue(timing.retransmit_mult)
        self._probe_order: list[NodeId] = []
        self._probe_index = 0
        self._stats = dict.fromkeys(_STATS, 0)
        self._unknown_logged: set[NodeId] = set()
        self._notes: list[_Note] = []
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._joined = False

    # ------------------------------------------------------------------ driven steps

    def probe_once(self) -> None:
        """Probe the next member: direct ping, then ping-req through others, then suspect."""
        with self._lock:
            target = None if self._me.state is LEFT else self._next_probe_target()
            if target is None:
                return
            node, address = target.node, target.address
            timeout = self._awareness.scale(self._timing.probe_timeout)
            period = self._awareness.scale(self._timing.probe_interval)
            updates = self._updates_for(target)
            self._stats["pings_sent"] += 1
            started = self._clock()
        ack = self._transport.ping(address, updates, timeout)
        if ack is not None and self._ack_ok(node, ack):
            with self._lock:
                self._awareness.apply(-1)
                self._on_ack(node, ack)
                notes = self._take_notes()
            self._notify(notes)
            return
        self._probe_indirect(node, address, max(timeout, period - (self._clock() - started)))

    def _probe_indirect(self, node: NodeId, address: str, timeout: float) -> None:
        with self._lock:
            self._stats["probe_failures"] += 1
            self._awareness.apply(1)
            vias = self._random_members(self._timing.indirect_checks, (ALIVE,), exclude=node)
            self._stats["ping_reqs_sent"] += len(vias)
        answers = self._transport.ping_req([m.address for m in vias], node, address, timeout) if vias else []
        with self._lock:
            # Lifeguard: a via that does not even nack suggests *our* network is the problem.
            self._awareness.apply(sum(1 for a in answers if a is None))
            if any(a is True for a in answers):
                self._stats["indirect_acks"] += 1
                log.debug("%s acked through a ping-req", node)
            else:
                member = self._members[node]
                if member.state in _LIVE:
                    self._merge(NodeRecord(node, member.address, member.incarnation, SUSPECT,
                                           origin=self._id))
            notes = self._take_notes()
        self._notify(notes)

    def gossip_once(self) -> None:
        """Send queued broadcasts to `gossip_nodes` random live members (none if empty)."""
        with self._lock:
            batches = []
            for member in self._random_members(self._timing.gossip_nodes, _LIVE):
                updates = self._take_updates()
                if not updates:
                    break
                batches.append((member.address, updates))
            self._stats["gossips_sent"] += len(batches)
        for address, updates in batches:
            self._transport.gossip(address, updates)

    def push_pull_once(self) -> None:
        """Full-state sync with one random alive member (repairs missed broadcasts)."""
        with self._lock:
            peers = self._random_members(1, (ALIVE,))
        if peers:
            self._push_pull_with(peers[0].node, peers[0].address, join=False)

    def reconnect_once(self) -> None:
        """Push-pull with one random dead or left member: a healed partition or a restarted
        server learns it was declared dead, refutes, and its answer revives it here."""
        with self._lock:
            peers = [] if self._me.state is LEFT else self._random_members(1, _GONE)
        if peers:
            self._push_pull_with(peers[0].node, peers[0].address, join=False)

    def expire_suspicions(self) -> None:
        """Declare dead every suspect whose Lifeguard timeout has passed by clock()."""
        with self._lock:
            now = self._clock()
            for m in self._members.values():
                if m.state is SUSPECT and m.suspicion is not None and now >= m.suspicion.deadline():
                    self._apply(m, NodeRecord(m.node, m.address, m.incarnation, DEAD, origin=self._id))
            notes = self._take_notes()
        self._notify(notes)

    def join(self) -> bool:
        """Push-pull (join=True) with configured peers in random order until one answers.
        True when one did, or when there is no one to join (a one-node cluster).
        start() calls it first thing unless it was called already."""
        self._joined = True
        with self._lock:
            peers = [(m.node, m.address) for m in self._members.values() if not m.is_self]
            self._rng.shuffle(peers)
        for node, address in peers:
            if self._push_pull_with(node, address, join=True):
                log.info("joined the cluster through %s", node)
                return True
        if peers:
            log.warning("join: none of %d peers answered", len(peers))
        return not peers

    def leave(self, timeout: float) -> None:
        """Mark ourselves LEFT (final until restart), queue it for broadcast and push it to a
        few live members within `timeout` so they do not wait for a suspicion to expire."""
        with self._lock:
            deadline = self._clock() + timeout
            if self._me.state is not LEFT:
                self._apply_self(LEFT)
            peers = self._random_members(len(self._members), _LIVE)
            notes = self._take_notes()
        self._notify(notes)
        pushed = 0
        for member in peers:
            remaining = deadline - self._clock()
            if pushed >= self._timing.gossip_nodes or remaining <= 0:
                break
            if self._push_pull_with(member.node, member.address, False, remaining):
                pushed += 1
        log.info("left the cluster (told %d members directly)", pushed)

    def set_meta(self, meta: NodeMeta) -> None:
        """Publish new meta (checks, load, draining). An empty version gets ours."""
        if not meta.version and self._version:
            meta = replace(meta, version=self._version)
        with self._lock:
            if meta == self._me.meta:
                return
            self._me.meta = meta
            self._me.meta_seq += 1
            self._queue.queue(self._me.record())

    # ------------------------------------------------------------------ inbound handlers

    def handle_ping(self, sender: NodeId, updates: tuple[NodeRecord, ...]) -> Ack:
        with self._lock:
            self._stats["pings_received"] += 1
            self._touch(sender)
            self._merge_all(updates)
            # After the merge: a refutation of a suspicion carried by this very ping is
            # already in our record, so the prober learns it from the ack.
            ack = Ack(self._me.record(), self._updates_for(self._members.get(sender)))
            notes = self._take_notes()
        self._notify(notes)
        return ack

    def handle_ping_req(self, sender: NodeId, target: NodeId, target_address: str, timeout: float) -> bool:
        """Probe `target` for `sender` within `timeout`; True when it acked. The transport
        passes a timeout shorter than the requester's own deadline, so that our nack gets
        back in time (a missed nack counts against the requester's health)."""
        with self._lock:
            self._stats["ping_reqs_received"] += 1
            self._touch(sender)
            if target == self._id:
                return True
            if target not in self._members:
                self._unknown(target)
                return False
            updates = self._take_updates()
            self._stats["pings_sent"] += 1
        ack = self._transport.ping(target_address, updates, timeout)
        if ack is None or not self._ack_ok(target, ack):
            return False
        with self._lock:
            self._on_ack(target, ack)
            notes = self._take_notes()
        self._notify(notes)
        return True

    def handle_gossip(self, sender: NodeId, updates: tuple[NodeRecord, ...]) -> None:
        with self._lock:
            self._stats["gossips_received"] += 1
            self._touch(sender)
            self._merge_all(updates)
            notes = self._take_notes()
        self._notify(notes)

    def handle_push_pull(self, sender: NodeId, records: tuple[NodeRecord, ...],
                         join: bool) -> tuple[NodeRecord, ...]:
        """Merge theirs first, then answer ours, so a refutation is in the answer."""
        with self._lock:
            self._stats["push_pulls_received"] += 1
            self._touch(sender)
            if join:
                log.info("%s is joining", sender)
            self._merge_full_state(records)
            answer = self._full_state()
            notes = self._take_notes()
        self._notify(notes)
        return answer

    # ------------------------------------------------------------------ views

    def members(self) -> tuple[MemberView, ...]:
        with self._lock:
            now = self._clock()
            return tuple(self._view(self._members[n], now) for n in sorted(self._members))

    def member(self, node: NodeId) -> MemberView | None:
        with self._lock:
            m = self._members.get(node)
            return None if m is None else self._view(m, self._clock())

    def awareness(self) -> int:
        with self._lock:
            return self._awareness.score

    def probe_delay(self) -> float:
        """The pause between probes: the probe interval stretched by our awareness score."""
        with self._lock:
            return self._awareness.scale(self._timing.probe_interval)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    # ------------------------------------------------------------------ background threads

    def start(self) -> None:
        """Run the steps on daemon threads with real time: one per step, so a probe waiting
        out its timeouts never delays gossip or suspicion expiry."""
        t = self._timing
        loops: list[tuple[str, Callable[[], None], Callable[[], float]]] = [
            ("probe", self.probe_once, self.probe_delay),
            ("gossip", self.gossip_once, lambda: t.gossip_interval),
            ("push-pull", self._join_then_push_pull, self._push_pull_delay),
            ("reconnect", self.reconnect_once, lambda: t.reconnect_interval),
            ("expire", self.expire_suspicions, lambda: EXPIRY_PERIOD),
        ]
        with self._lock:
            if self._threads:
                return
            self._stop_event = stop = threading.Event()
            self._threads = [threading.Thread(target=self._run, args=(name, step, delay, stop),
                                              name=f"gossip-{name}-{self._id}", daemon=True)
                             for name, step, delay in loops]
            threads = list(self._threads)
        for thread in threads:
            thread.start()

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
            self._stop_event.set()
        deadline = time.monotonic() + STOP_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.warning("gossip threads still in a transport call after stop: %s", ", ".join(stuck))

    def _join_then_push_pull(self) -> None:
        # The first turn of the push-pull thread joins: a failed join is not fatal, since
        # members that come up later push-pull with us or find us through reconnect.
        if not self._joined:
            self.join()
        else:
            self.push_pull_once()

    def _run(self, name: str, step: Callable[[], None], delay: Callable[[], float],
             stop: threading.Event) -> None:
        while not stop.wait(delay()):
            try:
                step()
            except Exception:
                with self._lock:
                    self._stats["step_errors"] += 1
                log.exception("gossip %s step failed", name)

    def _push_pull_delay(self) -> float:
        if not self._joined:
            return 0.0  # join at once
        with self._lock:
            return self._timing.push_pull_interval * self._rng.uniform(0.75, 1.25)

    # ------------------------------------------------------------------ internals (lock held)

    def _push_pull_with(self, node: NodeId, address: str, join: bool,
                        timeout: float | None = None) -> bool:
        """Called without the lock. True when the other side answered."""
        limit = self._timing.probe_interval * PUSH_PULL_TIMEOUT_PROBES
        with self._lock:
            records = self._full_state()
            self._stats["push_pulls_sent"] += 1
        theirs = self._transport.push_pull(address, records, join,
                                           limit if timeout is None else min(timeout, limit))
        if theirs is None:
            log.debug("push-pull with %s: no answer", node)
            return False
        with self._lock:
            self._touch(node)
            self._merge_full_state(theirs)
            notes = self._take_notes()
        self._notify(notes)
        return True

    def _next_probe_target(self) -> _Member | None:
        """Randomized round-robin (SWIM): every live member once per pass, reshuffled."""
        for _ in range(2 * len(self._members) + 1):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = [n for n in self._members if n != self._id]
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            member = self._members[self._probe_order[self._probe_index]]
            self._probe_index += 1
            if member.state in _LIVE:
                return member
        return None

    def _random_members(self, k: int, states: Iterable[GossipState], exclude: NodeId = "") -> list[_Member]:
        wanted = tuple(states)
        pool = [m for m in self._members.values()
                if not m.is_self and m.node != exclude and m.state in wanted]
        return self._rng.sample(pool, min(k, len(pool)))

    def _take_updates(self) -> tuple[NodeRecord, ...]:
        return self._queue.take(self._timing.max_updates_per_message, len(self._members))

    def _updates_for(self, member: _Member | None) -> tuple[NodeRecord, ...]:
        """Piggyback for a message exchanged with `member`. Lifeguard's buddy system,
        extended to dead and left: a member we do not hold alive always hears our claim
        from us when we probe it or answer its ping, so it can refute at once instead of
        waiting for gossip, which never goes to the dead."""
        if member is None or member.is_self or member.state is ALIVE:
            return self._take_updates()
        limit = max(0, self._timing.max_updates_per_message - 1)
        others = self._queue.take(limit, len(self._members)) if limit else ()
        return (member.record(),) + tuple(r for r in others if r.node != member.node)

    def _full_state(self) -> tuple[NodeRecord, ...]:
        return tuple(m.record() for m in self._members.values())

    def _ack_ok(self, target: NodeId, ack: Ack) -> bool:
        if ack.responder.node == target:
            return True
        log.warning("probe of %s answered by %s: check the gossip addresses", target, ack.responder.node)
        return False

    def _on_ack(self, target: NodeId, ack: Ack) -> None:
        self._stats["acks_received"] += 1
        self._touch(target)
        self._merge(ack.responder)
        self._merge_all(ack.updates)

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

    def _apply(self, member: _Member, record: NodeRecord) -> None:
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

    def _confirm(self, member: _Member, origin: NodeId) -> None:
        if member.suspicion is not None and member.suspicion.confirm(origin):
            self._stats["confirmations"] += 1
            log.debug("%s: suspicion confirmed by %s (%d so far)", member.node, origin,
                      member.suspicion.confirmations)
            # Re-gossip under the confirmer's name, so the others can count it too.
            self._queue.queue(replace(member.record(), origin=origin))

    def _new_suspicion(self, origin: NodeId) -> Suspicion:
        t = self._timing
        live = sum(1 for m in self._members.values() if m.state not in _GONE)
        low, high = suspicion_bounds(live, t.suspicion_mult, t.suspicion_max_timeout_mult, t.probe_interval)
        return Suspicion(self._clock(), origin, expected_confirmations(live, t.suspicion_mult), low, high)

    def _changed(self, member: _Member, old: GossipState) -> None:
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
        final until restart."""
        me = self._me
        if me.state is LEFT:
            return
        if record.state is ALIVE:
            if _from_earlier_run(me.current(), record):
                self._refute(record, "an alive record of ours from an earlier run", penalize=False)
        elif record.incarnation >= me.incarnation:
            # A LEFT about us is from our own earlier run, not a sign that we are slow.
            self._refute(record, f"{record.origin or 'someone'} calling us {record.state}",
                         penalize=record.state is not LEFT)

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

    def _view(self, m: _Member, now: float) -> MemberView:
        if m.is_self:
            seen: float | None = 0.0
        else:
            seen = None if m.last_seen is None else max(0.0, now - m.last_seen)
        confirmations = m.suspicion.confirmations if m.state is SUSPECT and m.suspicion else 0
        return MemberView(m.node, m.address, m.state, m.incarnation, m.meta, seen,
                          max(0.0, now - m.state_changed), confirmations, m.is_self)
