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

Only a member states its own meta and its own leave, and others move its incarnation only
so far (provenance.py, which also gives the rule for recovering from a claim at the limit):
so each member tells every other member its own news itself. A member whose `told` is not
our current record gets it in the next message we send it, and gossip rounds go to such
members first; acks and push-pulls always carry it.

Split by concern: the ordering of claims and the per-member record are in precedence.py,
who may say what in provenance.py, the lock-held merge of claims into our table in
merge.py (mixin `Merger`), the background threads in runner.py (mixin `Runner`),
out-of-turn probes when Raft has stopped hearing a member in urgent.py (mixin `Urgent`);
this module holds the protocol exchanges and the API.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from hacluster.gossip.awareness import Awareness
from hacluster.gossip.broadcast import BroadcastQueue
from hacluster.gossip.merge import Merger
from hacluster.gossip.precedence import (
    ALIVE,
    DEAD,
    GONE,
    LEFT,
    LIVE,
    SUSPECT,
    Member,
    MemberView,
    Verdict,
    precedence,
)
from hacluster.gossip.provenance import hearsay
from hacluster.gossip.runner import EXPIRY_IDLE_S, STOP_WAIT, Runner
from hacluster.gossip.types import Ack, GossipState, GossipTiming, NodeMeta, NodeRecord, Transport
from hacluster.gossip.urgent import Urgent
from hacluster.gossip.wire import encoded_size
from hacluster.model import NodeId

__all__ = ["DEFAULT_TIMING", "EXPIRY_IDLE_S", "PUSH_PULL_TIMEOUT_PROBES", "STOP_WAIT", "GossipTiming",
           "MemberView", "Membership", "Verdict", "precedence"]

log = logging.getLogger("hacluster.gossip")

# A push-pull carries the full state (tens of records): allow two probe intervals, unscaled.
PUSH_PULL_TIMEOUT_PROBES = 2.0

# Byte budgets, against channels.MAX_MESSAGE_BYTES (1 MiB; a bigger message is refused
# whole). Piggybacked records stop at PIGGYBACK_BUDGET_BYTES, which leaves room for an
# ack's responder record (our own: ~60 KB with 64 checks of full ASCII texts, under 256 KB
# even if every character took four bytes); only our own record carries meta, the others
# are hearsay without it. A push-pull sends the full state within FULL_STATE_BUDGET_BYTES,
# then bare records (see _full_state).
PIGGYBACK_BUDGET_BYTES = 256 * 1024
FULL_STATE_BUDGET_BYTES = 512 * 1024


DEFAULT_TIMING = GossipTiming()


_STATS = ("pings_sent", "ping_reqs_sent", "gossips_sent", "push_pulls_sent", "pings_received",
          "ping_reqs_received", "gossips_received", "push_pulls_received", "acks_received",
          "probe_failures", "indirect_acks", "suspicions", "confirmations", "refutations",
          "deaths", "lefts", "revivals", "unknown_records", "absurd_claims", "step_errors",
          "urgent_probes", "corroborated_deaths",
          # provenance.py: claims refused for their sender, and members' words taken over
          # claims they could not outbid
          "forged_meta", "forged_lefts", "forged_incarnations", "unheard_claims",
          "claims_beyond_reach", "resets")


class Membership(Merger, Runner, Urgent):
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
        self._me = Member(node_id, address, True, now, meta=NodeMeta(version=version), last_seen=now)
        self._members: dict[NodeId, Member] = {node_id: self._me}
        for peer, peer_address in peers.items():
            if peer != node_id:
                # Nothing to tell yet: our first record reaches each in its ack or our join.
                self._members[peer] = Member(peer, peer_address, False, now, told=self._stamp())
        self._awareness = Awareness(timing.awareness_max)
        self._queue = BroadcastQueue(timing.retransmit_mult)
        self._probe_order: list[NodeId] = []
        self._probe_index = 0
        self._stats = dict.fromkeys(_STATS, 0)
        self._unknown_logged: set[NodeId] = set()
        self._warned: set[tuple[str, NodeId]] = set()
        self._notes = []
        self._stop_event = threading.Event()
        self._expiry_wake = threading.Event()  # set when a suspicion starts or is confirmed
        self._threads: list[threading.Thread] = []
        self._joined = False
        self._init_urgent()

    def set_peers(self, peers: dict[NodeId, str]) -> None:
        """The committed membership changed (issue 16): a new member is known from now on (not
        yet alive: its first ack or join says so), a removed one is forgotten (no probes, its
        records refused as from a stranger); a member whose address changed is probed there."""
        with self._lock:
            now = self._clock()
            for node in [n for n in self._members if n != self._id and n not in peers]:
                del self._members[node]
                log.info("gossip: %s is no longer a member", node)
            for node, address in peers.items():
                if node == self._id:
                    continue
                known = self._members.get(node)
                if known is None:
                    self._members[node] = Member(node, address, False, now, told=self._stamp())
                    log.info("gossip: %s (%s) is a member", node, address)
                elif known.address != address:
                    self._members[node] = replace(known, address=address)

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
                if member.state in LIVE:
                    self._merge(NodeRecord(node, member.address, member.incarnation, SUSPECT,
                                           origin=self._id), self._id)
            notes = self._take_notes()
        self._notify(notes)

    def gossip_once(self) -> None:
        """Send queued broadcasts to `gossip_nodes` random live members, those that have not
        had our own current record from us first, with it (nothing if nothing is due)."""
        with self._lock:
            batches = []
            for member in self._gossip_targets():
                updates = self._updates_for(member, buddy=False)
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
            peers = [] if self._me.state is LEFT else self._random_members(1, GONE)
        if peers:
            self._push_pull_with(peers[0].node, peers[0].address, join=False)

    def _gossip_targets(self) -> list[Member]:
        """Up to gossip_nodes live members, first those whose `told` is not our record."""
        k, stamp = self._timing.gossip_nodes, self._stamp()
        untold = [m for m in self._members.values()
                  if not m.is_self and m.state in LIVE and m.told != stamp]
        if not untold:
            return self._random_members(k, LIVE)
        chosen = self._rng.sample(untold, min(k, len(untold)))
        return chosen + self._random_members(k - len(chosen), LIVE, told=stamp)

    def expire_suspicions(self) -> None:
        """Declare dead every suspect whose Lifeguard timeout has passed by clock()."""
        with self._lock:
            now = self._clock()
            for m in self._members.values():
                if m.state is SUSPECT and m.suspicion is not None and now >= m.suspicion.deadline():
                    self._apply(m, NodeRecord(m.node, m.address, m.incarnation, DEAD, origin=self._id))
            notes = self._take_notes()
        self._notify(notes)

    def next_expiry_in(self, idle: float) -> float:
        """Seconds until the earliest suspicion's deadline (a hair past it, so that the look
        then finds it due), at most `idle`: how long the expiry thread may sleep."""
        with self._lock:
            deadlines = [m.suspicion.deadline() for m in self._members.values()
                         if m.state is SUSPECT and m.suspicion is not None]
            now = self._clock()
        if not deadlines:
            return idle
        return min(idle, max(0.0, min(deadlines) - now) + 0.001)

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
            peers = self._random_members(len(self._members), LIVE)
            goodbye, stamp = self._me.record(), self._stamp()
            for member in peers:
                member.told = stamp
            notes = self._take_notes()
        self._notify(notes)
        # Only we can say that we left (provenance.py): say it to every live member, once.
        for member in peers:
            self._transport.gossip(member.address, (goodbye,))
        pushed = 0
        for member in peers:
            remaining = deadline - self._clock()
            if pushed >= self._timing.gossip_nodes or remaining <= 0:
                break
            if self._push_pull_with(member.node, member.address, False, remaining):
                pushed += 1
        log.info("left the cluster (told %d members, %d of them by push-pull)", len(peers), pushed)

    def set_meta(self, meta: NodeMeta) -> None:
        """Publish new meta (checks, load, draining). An empty version gets ours."""
        if not meta.version and self._version:
            meta = replace(meta, version=self._version)
        with self._lock:
            if meta == self._me.meta:
                return
            self._me.meta = meta
            self._me.meta_seq += 1  # a new record: every member is due to get it from us

    # ------------------------------------------------------------------ inbound handlers

    def handle_ping(self, sender: NodeId, updates: tuple[NodeRecord, ...]) -> Ack:
        with self._lock:
            self._stats["pings_received"] += 1
            self._touch(sender)
            self._merge_all(updates, sender)
            # After the merge: a refutation of a suspicion carried by this very ping is
            # already in our record, so the prober learns it from the ack.
            member = self._members.get(sender)
            ack = Ack(self._me.record(), self._updates_for(member, own=False))
            if member is not None:
                member.told = self._stamp()
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
            updates = self._updates_for(self._members[target], buddy=False)
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
            self._merge_all(updates, sender)
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
            self._merge_full_state(records, sender)
            answer = self._full_state(sender)
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

    # ------------------------------------------------------------------ internals (lock held)

    def _push_pull_with(self, node: NodeId, address: str, join: bool,
                        timeout: float | None = None) -> bool:
        """Called without the lock. True when the other side answered."""
        limit = self._timing.probe_interval * PUSH_PULL_TIMEOUT_PROBES
        with self._lock:
            records = self._full_state(node)
            self._stats["push_pulls_sent"] += 1
        theirs = self._transport.push_pull(address, records, join,
                                           limit if timeout is None else min(timeout, limit))
        if theirs is None:
            log.debug("push-pull with %s: no answer", node)
            return False
        with self._lock:
            self._touch(node)
            self._merge_full_state(theirs, node)
            notes = self._take_notes()
        self._notify(notes)
        return True

    def _next_probe_target(self) -> Member | None:
        """Randomized round-robin (SWIM): every live member once per pass, reshuffled."""
        for _ in range(2 * len(self._members) + 1):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = [n for n in self._members if n != self._id]
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            member = self._members.get(self._probe_order[self._probe_index])
            self._probe_index += 1
            if member is not None and member.state in LIVE:
                return member
        return None

    def _random_members(self, k: int, states: Iterable[GossipState], exclude: NodeId = "",
                        told: tuple[object, ...] | None = None) -> list[Member]:
        """`told`: only members whose `told` is that."""
        wanted = tuple(states)
        pool = [m for m in self._members.values()
                if not m.is_self and m.node != exclude and m.state in wanted
                and (told is None or m.told == told)]
        return self._rng.sample(pool, max(0, min(k, len(pool))))

    def _stamp(self) -> tuple[object, ...]:
        """Which of our own records is current (a member's `told` is the last it got)."""
        return (self._me.state, self._me.incarnation, self._me.meta_seq)

    def _take_updates(self, *firsts: NodeRecord) -> tuple[NodeRecord, ...]:
        """Queued records for one message, `firsts` ahead of them: at most
        max_updates_per_message, and no more than PIGGYBACK_BUDGET_BYTES encoded. Queued
        records are hearsay (provenance.hearsay), without meta, ~100 bytes each; only our
        own record, one of `firsts`, carries meta, and it fits the budget (see above)."""
        limit = self._timing.max_updates_per_message - len(firsts)
        taken = self._queue.take(limit, len(self._members)) if limit > 0 else ()
        chosen = list(firsts)
        used = sum(encoded_size(r) for r in firsts)
        ahead = {r.node for r in firsts}
        for r in taken:
            size = encoded_size(r)
            if r.node not in ahead and used + size <= PIGGYBACK_BUDGET_BYTES:
                chosen.append(r)
                used += size
        return tuple(chosen)

    def _updates_for(self, member: Member | None, buddy: bool = True,
                     own: bool = True) -> tuple[NodeRecord, ...]:
        """Piggyback for a message to `member`. `own`: our own record first when it has not
        had it from us (and it is marked told). `buddy`: Lifeguard's buddy system, extended
        to dead and left: a member we do not hold alive always hears our claim from us when
        we probe it or answer its ping, so it can refute at once instead of waiting for
        gossip, which never goes to the dead."""
        if member is None or member.is_self:
            return self._take_updates()
        firsts = []
        if own and member.told != self._stamp():
            firsts.append(self._me.record())
            member.told = self._stamp()
        if buddy and member.state is not ALIVE:
            firsts.append(member.record())
        return self._take_updates(*firsts)

    def _full_state(self, to: NodeId) -> tuple[NodeRecord, ...]:
        """Every member's record for `to`, ours first, within FULL_STATE_BUDGET_BYTES: past
        it, records go bare. State and incarnation are what a push-pull repairs; bare
        records are ~100 bytes, so those of a cluster as large as wire.MAX_RECORDS fit in
        what is left of the message limit. Others' records go as hearsay, except `to`'s
        own: what we hold of its word, meta_seq and meta included, is how a restarted `to`
        learns that we hold an earlier run's record (precedence.from_earlier_run)."""
        out: list[NodeRecord] = []
        used = 0
        target = self._members.get(to)
        if target is not None and not target.is_self:
            target.told = self._stamp()
        for m in self._members.values():
            r = m.record() if m.is_self or m.node == to else hearsay(m, self._id)
            size = encoded_size(r)
            if used + size > FULL_STATE_BUDGET_BYTES:
                r = _bare(r)
                size = encoded_size(r)
            out.append(r)
            used += size
        return tuple(out)

    def _ack_ok(self, target: NodeId, ack: Ack) -> bool:
        if ack.responder.node == target:
            return True
        log.warning("probe of %s answered by %s: check the gossip addresses", target, ack.responder.node)
        return False

    def _on_ack(self, target: NodeId, ack: Ack) -> None:
        self._stats["acks_received"] += 1
        self._touch(target)
        # We called the target's configured address, whose certificate names it: its word.
        self._merge(ack.responder, target)
        self._merge_all(ack.updates, target)


def _bare(r: NodeRecord) -> NodeRecord:
    """`r` without its meta, for when the meta does not fit in a message. meta_seq goes to
    0 with it, so the receiver keeps the meta it holds (precedence: no newer meta) and
    takes the state and incarnation, which may be a refutation."""
    return r if r.meta is None else replace(r, meta_seq=0, meta=None)
