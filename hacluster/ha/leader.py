"""The leader's duties besides the VIPs: commit health verdicts and balancing-table
generations, and hand leadership over when this leader is drained.

Called by the loop once per tick with the tick's snapshot, on the loop thread. Proposals go
through pysyncobj without blocking (callbacks come back on its thread); at most one of each
kind is in flight, and refused or lost ones back off instead of retrying every tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hacluster.config import Config
from hacluster.consensus.protocol import Consensus
from hacluster.consensus.state import suspects_down
from hacluster.dataplane.build import build_table
from hacluster.dataplane.table import table_to_doc
from hacluster.events import EventLog
from hacluster.ha.decide import Snapshot
from hacluster.ha.verdicts import Observed, Policy, VerdictTracker, corroborated
from hacluster.model import ConsensusView, GossipState, Role, is_draining, maintenance_on

log = logging.getLogger(__name__)

PROPOSE_EVERY_S = 0.1  # how often the leader compares the wanted state with the committed
INFLIGHT_S = 2.0  # a proposal unanswered this long is given up and redone
BACKOFF_MAX_S = 30.0  # after failed proposals, wait up to this long before the next
HEALTH_BATCH = 256  # keys per proposal (the state machine takes at most 1024)
DRAINED_RETRY_S = 5.0  # a drained leader's handoff attempts: 5 s apart, doubling after failures
DRAINED_RETRY_MAX_S = 300.0


class Proposer:
    """The leader's proposals of one kind (health, table): looked at every PROPOSE_EVERY_S,
    at most one in flight (given up after INFLIGHT_S), and after a refused or lost one a
    backoff of 0.5 s doubling to BACKOFF_MAX_S rather than a retry every tick."""

    def __init__(self, clock: Callable[[], float], what: str, timings: Any = None):
        self.clock = clock
        self.what = what
        self.timings = timings  # metrics.Timings: commit latency of what it proposes
        self._due = 0.0
        self._blocked_until = 0.0
        self._backoff = 0.0

    def due(self, now: float, changed: bool = False) -> bool:
        """Time to compare again: PROPOSE_EVERY_S after the last look, or at once when the
        committed state `changed`; never while a proposal is in flight or backing off."""
        if now < self._blocked_until or (now < self._due and not changed):
            return False
        self._due = now + PROPOSE_EVERY_S
        return True

    def submit(self, raft: Consensus, now: float, term: int, command: dict[str, Any]) -> None:
        self._blocked_until = now + INFLIGHT_S
        sent = self.clock()

        def done(result: Any, err: int) -> None:
            if result is not None and result.ok:
                self._blocked_until = self._backoff = 0.0
                if self.timings is not None:
                    self.timings.observe_raft_commit(self.clock() - sent)
                log.info("committed %s (term %d)", result.detail, term)
                return
            # Refused (deposed meanwhile, a stale generation) or lost: try again later.
            self._backoff = min(BACKOFF_MAX_S, max(0.5, self._backoff * 2))
            self._blocked_until = self.clock() + self._backoff
            log.warning("%s not committed (%s); next try in %.1f s", self.what,
                        result.detail if result is not None else f"pysyncobj reason {err}",
                        self._backoff)

        raft.submit(command, done)


class LeaderDuties:
    def __init__(self, config: Config, raft: Consensus, clock: Callable[[], float], events: EventLog,
                 gossip: Any = None, timings: Any = None, handover: Callable[[], Any] | None = None):
        """gossip: a gossip.membership.Membership (or a fake with members()), or None to
        run without health gossip. handover: moves leadership and VIPs to the best member
        (failover.run), raising errors.Refused when it cannot; None: a drained leader stays."""
        self._config = config
        self._raft = raft
        self._clock = clock
        self._events = events
        self._gossip = gossip
        self._handover = handover
        self._verdicts = VerdictTracker(
            (c.name for c in config.checks), config.health_settle,
            Policy(rejoin=config.health_rejoin, raft_fresh=config.timing.election_max,
                   corroborate=config.health_corroborate))
        self._health = Proposer(clock, "health change", timings)
        self._table = Proposer(clock, "table", timings)
        self._table_seen = -1  # the state generation the table was last compared at
        self._contradicted: frozenset[str] = frozenset()
        self._drained_next_try = 0.0
        self._drained_failures = 0
        self._drained_seen_at: float | None = None  # when this leader was first seen drained

    def step(self, snap: Snapshot) -> None:
        silent = self._silent(snap)
        for node in silent:
            self._gossip.request_probe(node)
        if silent and snap.consensus.lease_ok:  # our own links are sound: a majority acks
            self._confirm_deaths(snap.consensus)
        self._health_step(snap, look_now=bool(silent))
        self._table_step(snap)
        self._leave_if_drained(snap)

    # ----------------------------------------------------------------- health verdicts

    def _silent(self, snap: Snapshot) -> list[str]:
        """Leader: the members whose Raft acks (and kernel's TCP acks) stopped for
        health.silence_probe_ms. Gossip probes them out of turn (gossip/urgent.py, at most
        once per 10 probe intervals), so a SUSPECT comes within a probe timeout, and the
        verdicts are looked at every tick until they ack again: with corroborate_ms of
        silence, a powered-off server's backends leave in well under a second."""
        after, view = self._config.health_silence_probe, snap.consensus
        if not after or self._gossip is None or view.role is not Role.LEADER:
            return []
        # not one whose kernel still acks: the verdict would not take it down anyway, and a
        # starved member has no CPU to spare for answering probes
        return [p.id for p in view.peers + view.observers
                if p.last_ack_age_s is not None and p.last_ack_age_s >= after
                and not (p.tcp_silent_s is not None and p.tcp_silent_s < after)]

    def _confirm_deaths(self, view: ConsensusView) -> None:
        """Have gossip declare DEAD at once a suspect that Raft and its kernel corroborate
        (verdicts.corroborated, gossip/urgent.py): dead everywhere ~1 s after a power-off
        instead of after the Lifeguard timeout, which grows with the cluster."""
        policy = self._verdicts.policy
        for obs in self._observed(view):
            if corroborated(obs, policy) and self._gossip.corroborated(obs.node):
                log.warning("%s: suspect in gossip, and neither Raft nor its kernel has answered "
                            "for %.0f ms: declared dead", obs.node, (obs.raft_silent or 0) * 1000)

    def _health_step(self, snap: Snapshot, look_now: bool = False) -> None:
        """Commit the health changes the gossiped view has settled on (DESIGN.md §5).

        Gossip never touches VIP ownership; this only feeds the replicated health that the
        balancing table follows. At most one proposal is in flight; failed ones back off.
        """
        view = snap.consensus
        if view.role is not Role.LEADER or not view.epoch_applied:
            self._verdicts.reset()
            return
        self._follow_config()
        if not self._health.due(snap.now, look_now):
            return
        state = self._raft.state
        suspects = tuple(state.suspects)
        if self._gossip is None:
            # Nothing judges health without gossip; a suspect by election is back once Raft
            # has heard it for the rejoin time.
            changes: dict[str, bool | None] = {}
            rejoined = self._verdicts.back(snap.now, self._raft_only(view), suspects)
        else:
            changes = self._verdicts.changes(snap.now, self._observed(view), state.health, suspects)
            rejoined = self._verdicts.rejoined
            self._note_contradictions()
        if not changes and not rejoined:
            return
        command: dict[str, Any] = {"type": "health", "term": view.term,
                                   "changes": dict(sorted(changes.items())[:HEALTH_BATCH])}
        if rejoined:
            command["rejoined"] = sorted(rejoined)
        self._health.submit(self._raft, snap.now, view.term, command)

    def _follow_config(self) -> None:
        """The checks and health timings of the config as it is now: a reload
        (hacluster/reload.py) swaps them in the shared Config. A removed check's committed
        verdicts are then forgotten (no member reports it any more)."""
        c = self._config
        self._verdicts.checks = tuple(k.name for k in c.checks)
        self._verdicts.settle = c.health_settle
        policy = Policy(rejoin=c.health_rejoin, raft_fresh=c.timing.election_max,
                        corroborate=c.health_corroborate)
        if policy != self._verdicts.policy:
            self._verdicts.policy = policy

    def _observed(self, view: ConsensusView) -> list[Observed]:
        """Gossip's members plus how long Raft has not heard each one (the leader's acks, a
        non-voter's answers; none for ourselves; since we lead for one not heard since)."""
        links = view.peers + view.observers  # voters and non-voters alike
        silent: dict[str, float | None] = {p.id: p.last_ack_age_s for p in links}
        silent[self._config.node_id] = 0.0
        tcp = {p.id: p.tcp_silent_s for p in links}
        return [Observed(m.node, m.state, m.meta, m.state_age, silent.get(m.node), tcp.get(m.node))
                for m in self._gossip.members()]

    def _raft_only(self, view: ConsensusView) -> list[Observed]:
        """Without gossip: every member as ALIVE with what Raft knows of it, for the rejoin rule."""
        me = Observed(self._config.node_id, GossipState.ALIVE, None, raft_silent=0.0)
        return [me] + [Observed(p.id, GossipState.ALIVE, None, raft_silent=p.last_ack_age_s)
                       for p in view.peers]

    def _note_contradictions(self) -> None:
        now = self._verdicts.contradicted
        for node in sorted(now - self._contradicted):
            log.error("%s is dead in gossip but Raft still hears it: gossip (grpc_port) is cut "
                      "off while the Raft port works; its backends keep their last verdict", node)
        for node in sorted(self._contradicted - now):
            log.warning("%s: gossip and Raft agree again", node)
        self._contradicted = now

    # ----------------------------------------------------------------- balancing table

    def _table_step(self, snap: Snapshot) -> None:
        """Commit a new table generation when config + health + admin flags call for one (§6)."""
        view = snap.consensus
        if not self._config.services or view.role is not Role.LEADER or not view.epoch_applied:
            return
        state = self._raft.state
        # A committed change (a verdict, a flag) is looked at in the same tick, not up to
        # PROPOSE_EVERY_S later: the table is what takes a dead backend's new flows away.
        changed, self._table_seen = state.generation != self._table_seen, state.generation
        if not self._table.due(snap.now, changed):
            return
        current = state.table_generation
        if maintenance_on(state.flags) and state.table is not None:
            return  # frozen: health is still committed, the table follows it afterwards
        desired = table_to_doc(build_table(self._config.services, self._member_addresses(), state.health,
                                           state.flags, current + 1))
        # a member suspected by election is out of every service (state.py's one rule)
        desired = suspects_down(desired, state.suspects)
        if state.table is not None and {**desired, "generation": current} == state.table:
            return
        self._table.submit(self._raft, snap.now, view.term, {
            "type": "table", "term": view.term, "expect_generation": current, "table": desired})

    def _member_addresses(self) -> dict[str, str]:
        """The committed members' addresses: a backend on a server that is not (or no longer)
        a member is left out of the table (issue 16)."""
        return {m.id: m.address for m in self._config.members}

    # ----------------------------------------------------------------- drained leader

    def _leave_if_drained(self, snap: Snapshot) -> None:
        """A drained server is not eligible to lead: a leader that is drained hands over to
        an eligible member (in the background, at most every DRAINED_RETRY_S), unless the
        cluster is in maintenance mode (VIPs stay where they are). Not at once: the flows
        that go through this VIP holder (NAT, conntrack) end when the VIP moves, so it first
        gives them the services' longest drain_timeout_s, as draining promises
        (`hacluster failover` moves it at once)."""
        flags = self._raft.state.flags
        if snap.consensus.role is not Role.LEADER or not is_draining(flags, self._config.node_id):
            self._drained_seen_at = None
            return
        if self._drained_seen_at is None:
            self._drained_seen_at = snap.now
        grace = max((s.drain_timeout_s for s in self._config.services), default=0)
        if self._handover is None or maintenance_on(flags) or snap.handoff \
                or snap.now < self._drained_next_try or snap.now - self._drained_seen_at < grace:
            return
        # Each attempt releases the VIPs first: failed ones back off (5 s, 10 s, ... 5 min)
        # so that a handoff that cannot succeed does not cut the service every few seconds.
        self._drained_next_try = snap.now + min(DRAINED_RETRY_MAX_S,
                                                DRAINED_RETRY_S * 2 ** self._drained_failures)
        threading.Thread(target=self._hand_over, name="drained-handoff", daemon=True).start()

    def _hand_over(self) -> None:
        assert self._handover is not None
        try:
            self._handover()
            self._drained_failures = 0
        except Exception as e:  # noqa: BLE001 - retried later; the reason is worth a line
            self._drained_failures += 1
            log.warning("drained leader: no handoff yet (attempt %d): %s", self._drained_failures, e)
            self._events.add("failover", f"{self._config.node_id} is drained but could not hand "
                             f"over: {e}", attempt=self._drained_failures)
