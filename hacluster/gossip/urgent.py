"""Out-of-turn probes: another channel says a member may be gone, so probe it now.

`Urgent` is a mixin of `Membership`. The leader's Raft notices within a few heartbeats that a
follower's acks have stopped; gossip alone would only find out at that member's turn in the
probe round (up to a probe interval or two later), then spend a probe interval on direct and
indirect probes. `request_probe(node)` queues the member for the urgent thread (runner.py),
which probes it directly and through `indirect_checks` others *at the same time*, within one
probe timeout: no ack from anyone makes it SUSPECT, as a regular probe would. Suspicion then
runs its usual course (refuted, confirmed, or DEAD after the Lifeguard timeout): this only
starts it sooner, and a suspicion is still no verdict on its own (ha/verdicts.py).

`corroborated(node)`: the leader, holding its lease (so its own network is sound), has seen
a member SUSPECT in gossip while its Raft answers *and* its kernel's TCP acks stopped for
health.corroborate_ms: the member is gone (powered off, cut off); a CPU-starved one's kernel
still acks. Its suspicion is then declared DEAD at once instead of at the end of the
Lifeguard timeout, which grows with log N (2.8 s at 25 servers): more confirmations could
only shorten that timer to its minimum, and this is stronger evidence than they are. The
DEAD record spreads as any other; a member that is in fact alive refutes it as it refutes
any (a higher incarnation).

A member is probed out of turn only while ALIVE, and at most once per REPEAT_PROBES probe
intervals: the first probe is what finds a powered-off member sooner, while a slow member
(CPU-starved) would be asked again and again, and every out-of-turn probe is work it has no
time for (a ping and ping-reqs to answer, often a suspicion to refute). Probing a member at
10 % of a CPU every probe interval doubled the longest Raft silence it showed at 8 %
(bench/starvation.py).
Like the rest of the engine: `_lock` guards the state and is never held across a transport
call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hacluster.gossip.precedence import ALIVE, DEAD, LIVE, SUSPECT
from hacluster.gossip.types import Ack, NodeRecord
from hacluster.model import NodeId

if TYPE_CHECKING:
    from hacluster.gossip.awareness import Awareness
    from hacluster.gossip.membership import GossipTiming
    from hacluster.gossip.precedence import Member

JOIN_SLACK_S = 1.0  # beyond the probe timeout, how long to wait for the direct ping's thread
REPEAT_PROBES = 10  # probe intervals between two out-of-turn probes of the same member


class Urgent:
    """request_probe() and the urgent thread's step; Membership provides the rest."""

    _id: NodeId
    _lock: threading.Lock
    _timing: GossipTiming
    _members: dict[NodeId, Member]
    _awareness: Awareness
    _stats: dict[str, int]
    _transport: Any  # types.Transport
    _clock: Callable[[], float]

    def _init_urgent(self) -> None:
        self._urgent: set[NodeId] = set()
        self._urgent_at: dict[NodeId, float] = {}
        self._urgent_wake = threading.Event()

    def request_probe(self, node: NodeId) -> bool:
        """Probe `node` at once, out of turn (any thread; returns at once). False when it is
        not probed: unknown, ourselves, not ALIVE, or probed out of turn within the last
        REPEAT_PROBES probe intervals."""
        with self._lock:
            member = self._members.get(node)
            now = self._clock()
            last = self._urgent_at.get(node)
            if member is None or member.is_self or member.state is not ALIVE \
                    or node in self._urgent \
                    or (last is not None and now - last < REPEAT_PROBES * self._timing.probe_interval):
                return False
            self._urgent.add(node)
            self._urgent_at[node] = now
            self._stats["urgent_probes"] += 1
        self._urgent_wake.set()
        return True

    def corroborated(self, node: NodeId) -> bool:
        """Declare `node` DEAD now if we suspect it (see the module docstring); True if so
        (any thread)."""
        with self._lock:
            member = self._members.get(node)
            if member is None or member.is_self or member.state is not SUSPECT:
                return False
            self._apply(member, NodeRecord(node, member.address, member.incarnation, DEAD,
                                           origin=self._id))
            self._stats["corroborated_deaths"] += 1
            notes = self._take_notes()
        self._notify(notes)
        return True

    def probe_urgent(self) -> None:
        """Probe every member request_probe() queued (the urgent thread's step; tests call
        it directly)."""
        with self._lock:
            nodes = sorted(self._urgent)
            self._urgent.clear()
        for node in nodes:
            self._probe_at_once(node)

    def _probe_at_once(self, node: NodeId) -> None:
        with self._lock:
            target = self._members.get(node)
            if target is None or target.state is not ALIVE:
                return
            address = target.address
            timeout = self._awareness.scale(self._timing.probe_timeout)
            updates = self._updates_for(target)
            vias = self._random_members(self._timing.indirect_checks, (ALIVE,), exclude=node)
            self._stats["pings_sent"] += 1
            self._stats["ping_reqs_sent"] += len(vias)
        direct: list[Ack | None] = []

        def ping() -> None:
            direct.append(self._transport.ping(address, updates, timeout))

        # the direct ping and the ping-reqs at once: one probe timeout in all
        pinger = threading.Thread(target=ping, name=f"gossip-urgent-ping-{self._id}", daemon=True)
        pinger.start()
        answers = self._transport.ping_req([m.address for m in vias], node, address, timeout) \
            if vias else []
        pinger.join(timeout + JOIN_SLACK_S)
        ack = direct[0] if direct else None
        with self._lock:
            if ack is not None and self._ack_ok(node, ack):
                self._awareness.apply(-1)
                self._on_ack(node, ack)
            else:
                self._stats["probe_failures"] += 1
                # as a regular failed probe: ours may be the sick side (Lifeguard)
                self._awareness.apply(1 + sum(1 for a in answers if a is None))
                if any(a is True for a in answers):
                    self._stats["indirect_acks"] += 1
                else:
                    member = self._members[node]
                    if member.state in LIVE:
                        self._merge(NodeRecord(node, member.address, member.incarnation, SUSPECT,
                                               origin=self._id), self._id)
            notes = self._take_notes()
        self._notify(notes)

    # Membership's (and Merger's) own, used above.
    _updates_for: Callable[..., tuple[NodeRecord, ...]]
    _random_members: Callable[..., list[Member]]
    _ack_ok: Callable[[NodeId, Ack], bool]
    _on_ack: Callable[[NodeId, Ack], None]
    _merge: Callable[..., None]
    _apply: Callable[..., None]
    _take_notes: Callable[[], list[Any]]
    _notify: Callable[[list[Any]], None]
