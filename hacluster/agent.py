"""The agent: wiring, and the tick loop snapshot -> decide -> act (STYLE.md §1).

One agent runs on every server. Each tick (10 ms by default) it takes one snapshot of Raft
and of the host, lets the pure decide() say what to do, does it through HostOps, and keeps
the one-line sentence that `hacluster status` shows and the log records when it changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from hacluster import __version__
from hacluster.config import Config, ConfigError, load_config
from hacluster.consensus.raft import RaftNode
from hacluster.dataplane.build import build_table
from hacluster.dataplane.table import table_from_doc, table_to_doc
from hacluster.decide import Act, Action, decide, may_hold
from hacluster.events import EventLog
from hacluster.hostops.base import HostOps, HostOpsError
from hacluster.logs import setup_logging
from hacluster.model import (
    AgentStatus,
    ChecksStatus,
    CheckState,
    CommittedHealth,
    GossipMemberStatus,
    MembersStatus,
    MemberStatus,
    NodeChecks,
    Role,
    Snapshot,
    VipState,
    VipStatus,
)
from hacluster.sdnotify import Notifier, WatchdogPinger
from hacluster.verdicts import Observed, Policy, VerdictTracker

log = logging.getLogger("hacluster.agent")

HANDOFF_WAIT_S = 1.0  # how long a leader waits for its successor on SIGTERM
HEALTH_EVERY_S = 0.1  # how often the leader compares the gossiped health with the committed
HEALTH_INFLIGHT_S = 2.0  # a health proposal unanswered this long is given up and redone
HEALTH_BACKOFF_MAX_S = 30.0  # after failed proposals, wait up to this long before the next
HEALTH_BATCH = 256  # keys per proposal (the state machine takes at most 1024)
LEAVE_TIMEOUT_S = 0.5  # on stop: how long to spend telling the cluster we leave
DRAINED_RETRY_S = 5.0  # a drained leader's handoff attempts: 5 s apart, doubling after failures
DRAINED_RETRY_MAX_S = 300.0
EPOCH_RETRY_S = 0.5  # a leader's epoch entry not applied after this long is proposed again
GUARD_CHECK_S = 10.0  # how often the Raft port guard is checked (and put back if gone)
AUDIT_FILE = "audit.jsonl"  # in data_dir: every admin action this agent executed (audit.py)


class Agent:
    def __init__(self, config: Config, hostops: HostOps, raft: Any,
                 clock: Callable[[], float] = time.monotonic, gossip: Any = None,
                 dataplane: Any = None, events: EventLog | None = None, failovers: Any = None,
                 timings: Any = None):
        """raft: a RaftNode, or any object with view(), state, register_epoch(term),
        submit(command, callback) and transfer_leadership(to, done) (unit tests pass a
        fake). gossip: a gossip.membership.Membership (or a fake with members()), or None
        to run without health gossip. dataplane: a dataplane.worker.DataplaneWorker (or a
        fake with want(table), applied_generation(), wanted_generation()), or None."""
        self.config = config
        self.hostops = hostops
        self.raft = raft
        self.clock = clock
        self.gossip = gossip
        self._verdicts = VerdictTracker(
            (c.name for c in config.checks), config.health_settle,
            Policy(rejoin=config.health_rejoin, raft_fresh=config.timing.election_max,
                   corroborate=config.health_corroborate))
        self._health_proposals = _Proposer(clock, "health change", timings)
        self._contradicted: frozenset[str] = frozenset()
        self.dataplane = dataplane
        self._table_handed = -1
        self._table_proposals = _Proposer(clock, "table", timings)
        self._members_addr = {m.id: m.address for m in config.members}
        self.started = clock()
        self.sentence = "starting"
        self.handoff = False  # a failover (failover.py) is moving the VIPs away
        self.stopping = False  # SIGTERM: release and never claim again (handoff_and_release)
        self._released_in_term: dict[str, int] = {}  # VIP -> the term we last released it in
        self.events = events if events is not None else EventLog(config.node_id)
        self._last_role: Role | None = None
        self._last_leader: str | None = None
        self._leader_at: float | None = None
        self._seen_generation = -1
        self._seen_health: dict[str, bool] = {}
        self._seen_table = 0
        self.failover: Any = None  # a failover.Failover, set by main(): drained leaders hand over
        self.failovers = failovers  # metrics.FailoverHistogram, or None
        self.watchdog: WatchdogPinger | None = None  # systemd WATCHDOG=1 + STATUS=, set by main()
        self._seen_other_leader = False  # only then is our own win a failover
        self._silent_before: float | None = None
        self._claims_timed: set[str] = set()  # VIPs whose first claim this leadership was timed
        self._drained_next_try = 0.0
        self._drained_failures = 0
        self._drained_seen_at: float | None = None  # when this leader was first seen drained
        self._ticks = 0
        self._ticked = threading.Condition()
        self._epoch_requested = 0
        self._epoch_requested_at = 0.0
        self._claimed_at: dict[str, float] = {}
        self._announces: dict[str, int] = {}
        self._answering: set[str] = set()  # peers acking heartbeats (leader only)
        self._holding_since: float | None = None
        self._last_error = ""
        self._notes: list[str] = []  # this tick's remarks, appended to its sentence
        self._kernel_has: set[str] = set()  # VIPs the kernel had at the last tick's start
        self._stop = threading.Event()
        self._last_tick_done = clock()

    # ----------------------------------------------------------------- the tick

    def snapshot(self) -> Snapshot:
        now = self.clock()
        view = self.raft.view()
        self._watch_peers(view, now)
        vips = tuple(VipState(v, self._present(v)) for v in self.config.vips)
        self._kernel_has = {s.vip.address for s in vips if s.present}
        return Snapshot(now=now, node=self.config.node_id, consensus=view, vips=vips,
                        handoff=self.releasing, claimed_at=dict(self._claimed_at))

    def _watch_peers(self, view: Any, now: float) -> None:
        """Re-announce held VIPs when a peer that was not answering answers again.

        A healed partition or a rebooted server may still map the VIP to an old holder's MAC
        (so may a switch): a new gratuitous ARP burst repairs that. "Answering" is the
        leader's view of heartbeat acknowledgements, which also sees partitions shorter than
        the TCP link timeout. Peers answering for the first time right after we won do not
        count: the claim's own burst covers them.
        """
        if view.role is not Role.LEADER or not self._claimed_at:
            self._answering, self._holding_since = set(), None
            return
        if self._holding_since is None:
            self._holding_since = now
        limit = self.config.timing.election_min
        answering = {p.id for p in view.peers
                     if p.last_ack_age_s is not None and p.last_ack_age_s < limit}
        back = answering - self._answering
        self._answering = answering
        if back and now - self._holding_since > self.config.timing.election_max:
            log.info("peer(s) %s reconnected: re-announcing held VIPs", ", ".join(sorted(back)))
            for addr in self._claimed_at:
                self._claimed_at[addr] = now
                self._announces[addr] = 0

    def _present(self, vip: Any) -> bool:
        try:
            return self.hostops.vip_present(vip)
        except HostOpsError as e:
            self._error(str(e))
            return False

    def tick(self) -> str:
        snap = self.snapshot()
        self._note_events(snap)
        self._retry_lost_epoch(snap)
        decision = decide(snap, self._epoch_requested, self._announces)
        if not may_hold(snap)[0]:
            self._claimed_at.clear()
            self._announces.clear()
        for action in decision.actions:
            self._act(action)
        self._health_step(snap)
        self._table_step(snap)
        self._leave_leadership_if_drained(snap)
        sentence = ", ".join([decision.sentence, *self._table_note(), *self._notes])
        self._notes.clear()
        if self._last_error:
            sentence += f", error: {self._last_error}"
            self._last_error = ""
        if sentence != self.sentence:
            log.info("%s", sentence)
            self.sentence = sentence
        return sentence

    def _retry_lost_epoch(self, snap: Snapshot) -> None:
        """A leader claims nothing until its epoch entry is applied; a proposal that
        pysyncobj dropped (a leadership change under way, a full queue) would otherwise
        leave it leading without ever holding the VIPs. Ask again after EPOCH_RETRY_S (the
        state machine takes the same epoch twice as a no-op)."""
        c = snap.consensus
        if c.role is Role.LEADER and not c.epoch_applied and self._epoch_requested == c.term \
                and snap.now - self._epoch_requested_at > EPOCH_RETRY_S:
            log.warning("leader epoch %d not applied %.1f s after asking: asking again", c.term,
                        snap.now - self._epoch_requested_at)
            self._epoch_requested = 0

    def _note_events(self, snap: Snapshot) -> None:
        """Leader changes, and committed health and table changes, into the event log."""
        view = snap.consensus
        if view.role is not self._last_role:
            if view.role is Role.LEADER:
                self._leader_at = snap.now
                self._claims_timed.clear()
                self._silent_before = (getattr(self.raft, "silent_before_leading", None)
                                       if self._seen_other_leader else None)
                self.events.add("leader", f"{self.config.node_id} leads (term {view.term}"
                                + (", by transfer)" if view.won_by_transfer else ")"),
                                term=view.term, by_transfer=view.won_by_transfer)
            elif self._last_role is Role.LEADER:
                self.events.add("leader", f"{self.config.node_id} no longer leads (term {view.term})",
                                term=view.term)
            self._last_role = view.role
        me = self.config.node_id
        if view.leader not in (None, me):
            self._seen_other_leader = True
        if view.leader != self._last_leader and view.leader not in (None, me):
            self.events.add("leader", f"{view.leader} leads (term {view.term}), as {me} sees it",
                            term=view.term, leader=view.leader)
        self._last_leader = view.leader
        state = self.raft.state
        if state.generation == self._seen_generation:
            return
        self._seen_generation = state.generation
        health = dict(state.health)
        for key in sorted(set(health) | set(self._seen_health)):
            now, before = health.get(key), self._seen_health.get(key)
            if now is not before and now is not None:
                node, _, check = key.partition("/")
                self.events.add("health", f"{key} committed {'up' if now else 'DOWN'}", node=node,
                                check=check, healthy=now)
        self._seen_health = health
        if state.table_generation != self._seen_table:
            self._seen_table = state.table_generation
            self.events.add("table", f"balancing table generation {state.table_generation} committed",
                            generation=state.table_generation)

    def _act(self, a: Action) -> None:
        try:
            if a.act is Act.REGISTER_EPOCH:
                self._epoch_requested = a.term
                self._epoch_requested_at = self.clock()
                self.raft.register_epoch(a.term)
            elif a.act is Act.CLAIM:
                self._claim(a)
            elif a.act is Act.RENEW:
                if self._fenced_claim(a.vip):
                    self._claimed_at.setdefault(a.vip.address, self.clock())
                else:
                    self._claimed_at.pop(a.vip.address, None)
            elif a.act is Act.ANNOUNCE:
                # Announcing an address we no longer hold would pull clients to us: fence it.
                if a.vip.address not in self._claimed_at or not self._lease_holds():
                    return
                self.hostops.announce(a.vip)
                self._announces[a.vip.address] = self._announces.get(a.vip.address, 0) + 1
            elif a.act is Act.RELEASE:
                self._released_in_term[a.vip.address] = self.raft.view().term
                self.hostops.release_vip(a.vip)
                self._kernel_has.discard(a.vip.address)
                log.info("released VIP %s", a.vip)
                self.events.add("vip", f"released {a.vip.address}", vip=a.vip.address)
        except HostOpsError as e:
            self._error(f"{a.act.value} {a.vip.address if a.vip else ''}: {e}")

    def _claim(self, a: Action) -> None:
        vip = a.vip
        assert vip is not None
        term = self.raft.view().term
        if a.skip_probe and self._released_in_term.get(vip.address) == term:
            # Leadership came by transfer, but in this very term we let this address go
            # (a failover that timed out): whoever we handed it to may claim it unprobed.
            a = dataclasses.replace(a, skip_probe=False)
        if not a.skip_probe and self.hostops.probe(vip, self.config.timing.probe):
            # Someone still answers for it: a frozen or killed holder whose kernel keeps the
            # address until its lifetime ends. Claiming now would make two holders (I1).
            self._notes.append(f"waiting: {vip.address} still answers ARP")
            return
        # The probe waited: the lease may have ended meanwhile.
        if not self._fenced_claim(vip):
            return
        view = self.raft.view()
        now = self.clock()
        self._claimed_at[vip.address] = now
        self.hostops.announce(vip)
        self._announces[vip.address] = 1
        log.info("claimed VIP %s (term %d%s)", vip, view.term,
                 ", by transfer, no probe" if a.skip_probe else "")
        after = (now - self._leader_at) * 1000 if self._leader_at is not None else None
        self.events.add("vip", f"claimed {vip.address}" + (f" {after:.0f} ms after becoming leader"
                                                           if after is not None else "")
                        + (" (by transfer, no probe)" if a.skip_probe else ""),
                        vip=vip.address, after_leader_ms=after if after is not None else "", term=view.term,
                        by_transfer=a.skip_probe)
        if self.failovers is not None and after is not None and vip.address not in self._claims_timed:
            # the first claim of each VIP in this leadership: a failover's end, as seen here
            self._claims_timed.add(vip.address)
            self.failovers.observe_claim(after / 1000, self._silent_before, view.won_by_transfer)

    def _lease_holds(self) -> bool:
        return not self.releasing and self.raft.lease_ok_now()

    def _lease_deadline(self) -> float:
        """Until when a claim may be sent (GUARD_CLOCK), or -inf if it may not at all."""
        return float("-inf") if self.releasing else self.raft.lease_deadline()

    def _fenced_claim(self, vip: Any) -> bool:
        """Add/renew vip only if the lease holds right now, and undo it if it ended meanwhile.

        The decision was taken earlier in the tick; a process paused in between (SIGSTOP, a
        VM stall, swap, a GIL wait) would otherwise wake up and renew a VIP that a new
        leader claimed after the old address expired (the kernel re-creates it). The lease
        is therefore checked inside hostops right before the netlink send (a window of a
        few bytecodes), and once more after it: a renewal that raced the end of the lease
        is undone at once.
        """
        if not self.hostops.claim_vip(vip, self.config.timing.vip_lifetime, self._lease_deadline):
            return False
        if not self._lease_holds():
            self.hostops.release_vip(vip)
            log.warning("lease ended during the renewal of %s: released it again", vip)
            return False
        return True

    # ----------------------------------------------------------------- health verdicts

    def _health_step(self, snap: Snapshot) -> None:
        """Leader only: commit the health changes the gossiped view has settled on (§5).

        Gossip never touches VIP ownership; this only feeds the replicated health that the
        balancing table follows. At most one proposal is in flight; failed ones back off.
        """
        view = snap.consensus
        if self.gossip is None:
            return
        if view.role is not Role.LEADER or not view.epoch_applied:
            self._verdicts.reset()
            return
        if not self._health_proposals.due(snap.now):
            return
        changes = self._verdicts.changes(snap.now, self._observed(view),
                                         self.raft.state.health)
        self._note_contradictions()
        if not changes:
            return
        batch = dict(sorted(changes.items())[:HEALTH_BATCH])
        self._health_proposals.submit(self.raft, snap.now, view.term,
                                      {"type": "health", "term": view.term, "changes": batch})

    # ----------------------------------------------------------------- balancing table

    def _table_step(self, snap: Snapshot) -> None:
        """Every node: hand the committed table to the data plane (hot standby). Leader:
        commit a new generation when config + health + admin states call for one (§6)."""
        state = self.raft.state
        if self.dataplane is not None and state.table is not None \
                and state.table_generation != self._table_handed:
            try:
                self.dataplane.want(table_from_doc(state.table))
            except ValueError as e:
                self._error(f"committed table {state.table_generation} unreadable: {e}")
            self._table_handed = state.table_generation
        view = snap.consensus
        if not self.config.services or view.role is not Role.LEADER or not view.epoch_applied:
            return
        if not self._table_proposals.due(snap.now):
            return
        current = state.table_generation
        if self.maintenance() and state.table is not None:
            return  # frozen: health is still committed, the table follows it afterwards
        desired = build_table(self.config.services, self._members_addr, state.health, state.flags,
                              current + 1)
        if state.table is not None and \
                table_to_doc(dataclasses.replace(desired, generation=current)) == state.table:
            return
        self._table_proposals.submit(self.raft, snap.now, view.term, {
            "type": "table", "term": view.term, "expect_generation": current,
            "table": table_to_doc(desired)})

    def _table_note(self) -> list[str]:
        notes = ["MAINTENANCE: table frozen, no automatic handoff"] if self.maintenance() else []
        if self.dataplane is None or not self.config.services:
            return notes
        applied = self.dataplane.applied_generation()
        wanted = self.dataplane.wanted_generation()
        note = f"table gen {applied if applied is not None else 'none'}"
        if wanted is not None and wanted != applied:
            note += f" (applying {wanted})"
        return [*notes, note]

    def _observed(self, view: Any) -> list[Observed]:
        """Gossip's members plus how long Raft has not heard each one (the leader's acks;
        unknown for ourselves and for a peer not heard since we lead)."""
        silent = {p.id: p.last_ack_age_s for p in view.peers}
        return [Observed(m.node, m.state, m.meta, m.state_age, silent.get(m.node))
                for m in self.gossip.members()]

    def _note_contradictions(self) -> None:
        now = self._verdicts.contradicted
        for node in sorted(now - self._contradicted):
            log.error("%s is dead in gossip but Raft still hears it: gossip (grpc_port) is cut "
                      "off while the Raft port works; its backends keep their last verdict",
                      node)
        for node in sorted(self._contradicted - now):
            log.warning("%s: gossip and Raft agree again", node)
        self._contradicted = now

    def _error(self, msg: str) -> None:
        if msg != self._last_error:
            log.warning("%s", msg)
        self._last_error = msg

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        tick = self.config.timing.tick
        next_at = self.clock()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive anything; the next tick reconciles
                log.exception("tick failed")
            self._last_tick_done = self.clock()
            with self._ticked:
                self._ticks += 1
                self._ticked.notify_all()
            self.raft.agent_alive()
            if self.watchdog is not None:  # pings only when due: a stuck loop stops them
                self.watchdog.tick(self.sentence)
            next_at += tick
            delay = next_at - self.clock()
            if delay < -tick * 10:  # fell far behind (suspended?): do not burst to catch up
                next_at = self.clock()
                delay = 0
            self._stop.wait(max(0.0, delay))

    def stop(self) -> None:
        self._stop.set()

    def wait_ticks(self, n: int, timeout: float) -> bool:
        """Wait until the loop completed n more ticks (False after `timeout` s): a tick
        that started before a change began with the old snapshot, the next one sees it."""
        with self._ticked:
            goal = self._ticks + n
            return self._ticked.wait_for(lambda: self._ticks >= goal, timeout)

    @property
    def releasing(self) -> bool:
        """Hold nothing: a failover or a stop is under way (two flags, two writers)."""
        return self.handoff or self.stopping

    def vips_still_here(self) -> list[str]:
        """The configured VIPs the kernel still has here (empty: all released)."""
        out = []
        for v in self.config.vips:
            try:
                if self.hostops.vip_present(v):
                    out.append(v.address)
            except HostOpsError:
                out.append(v.address)  # unknown counts as present: never assume it is gone
        return out

    def handoff_and_release(self) -> None:
        """SIGTERM path: release VIPs first, then hand leadership to a follower. If an
        address is still here after the release, no transfer: the successor of an ordinary
        election probes ARP before claiming, a transferred one would not (I1)."""
        self.stopping = True
        self.tick()  # decide() releases everything while stopping is set
        view = self.raft.view()
        if view.role is not Role.LEADER or len(self.config.members) == 1:
            return
        left = self.vips_still_here()
        if left:
            self.tick()  # one more try
            left = self.vips_still_here()
        if left:
            log.error("VIP(s) %s still present after the release: no leadership transfer; the "
                      "next leader will probe before claiming", ", ".join(left))
            return
        started = self.clock()
        self.raft.transfer_leadership(None, lambda ok: log.info(
            "leadership transfer %s", "sent" if ok else "refused"))
        while self.clock() - started < HANDOFF_WAIT_S:
            if self.raft.view().role is not Role.LEADER:
                log.info("handed leadership over in %.0f ms",
                         (self.clock() - started) * 1000)
                return
            time.sleep(0.005)
        log.warning("no successor took over within %.1f s; stopping anyway", HANDOFF_WAIT_S)

    # ----------------------------------------------------------------- status

    def _status_sentence(self) -> str:
        """The last tick's sentence, flagged when the loop has stopped producing new ones."""
        return self.sentence + _stall_note(self.clock() - self._last_tick_done)

    def status(self) -> AgentStatus:
        view = self.raft.view()
        state = self.raft.state
        me = self.config.me
        admin = {m.id: m.grpc_endpoint for m in self.config.members}
        members = [MemberStatus(me.id, me.raft_endpoint, True, True, None, admin[me.id])]
        members += [MemberStatus(p.id, p.address, False, p.connected,
                                 None if p.last_ack_age_s is None else p.last_ack_age_s * 1000,
                                 admin.get(p.id, ""))
                    for p in view.peers]
        wall_offset = time.time() - self.clock()
        claimed = dict(self._claimed_at)
        return AgentStatus(
            node=self.config.node_id, cluster=self.config.cluster, version=__version__,
            role=view.role, term=view.term, leader=view.leader, lease_ok=view.lease_ok,
            lease_remaining_ms=view.lease_remaining_s * 1000, has_quorum=view.has_quorum,
            handoff=self.releasing,
            # held: what the kernel has (at the last tick), not what we meant to hold: a
            # release that failed must show (hacluster status then sees two holders)
            vips=tuple(VipStatus(v.address, v.prefixlen, v.interface,
                                 v.address in claimed or v.address in self._kernel_has,
                                 None if v.address not in claimed
                                 else (claimed[v.address] + wall_offset) * 1000)
                       for v in self.config.vips),
            members=tuple(members), sentence=self._status_sentence(),
            commit_index=view.commit_index, last_applied=view.last_applied,
            epoch_term=state.epoch_term, generation=state.generation,
            uptime_s=self.clock() - self.started, maintenance=self.maintenance(),
        )


    def maintenance(self) -> bool:
        """Cluster-wide maintenance mode (the replicated flag `maintenance`)."""
        return self.raft.state.flags.get("maintenance") == "true"

    def _leave_leadership_if_drained(self, snap: Snapshot) -> None:
        """A drained server is not eligible to lead: a leader that is drained hands over to
        an eligible member (in the background, at most every DRAINED_RETRY_S), unless the
        cluster is in maintenance mode (VIPs stay where they are). Not at once: the flows
        that go through this VIP holder (NAT, conntrack) end when the VIP moves, so it first
        gives them the services' longest drain_timeout_s, as draining promises
        (`hacluster failover` moves it at once)."""
        if snap.consensus.role is not Role.LEADER or not self.draining():
            self._drained_seen_at = None
            return
        if self._drained_seen_at is None:
            self._drained_seen_at = snap.now
        grace = max((s.drain_timeout_s for s in self.config.services), default=0)
        if self.failover is None or self.maintenance() or self.releasing \
                or snap.now < self._drained_next_try or snap.now - self._drained_seen_at < grace:
            return
        # Each attempt releases the VIPs first: failed ones back off (5 s, 10 s, ... 5 min)
        # so that a handoff that cannot succeed does not cut the service every few seconds.
        self._drained_next_try = snap.now + min(DRAINED_RETRY_MAX_S,
                                                DRAINED_RETRY_S * 2 ** self._drained_failures)

        def run() -> None:
            try:
                self.failover.run(None, False, 0)
                self._drained_failures = 0
            except Exception as e:  # noqa: BLE001 - retried later; the reason is worth a line
                self._drained_failures += 1
                log.warning("drained leader: no handoff yet (attempt %d): %s", self._drained_failures, e)
                self.events.add("failover", f"{self.config.node_id} is drained but could not hand "
                                f"over: {e}", attempt=self._drained_failures)
        threading.Thread(target=run, name="drained-handoff", daemon=True).start()

    def draining(self) -> bool:
        """This node is being drained (the replicated flag `draining/<node>`, set by admins)."""
        return self.raft.state.flags.get(f"draining/{self.config.node_id}") == "true"

    def members_status(self) -> MembersStatus:
        view = self.raft.view()
        out = []
        links = {p.id: p for p in view.peers}
        for m in self.gossip.members() if self.gossip else ():
            checks = m.meta.checks if m.meta else ()
            role = self._raft_role_of(m.node, view, links.get(m.node))
            load = m.meta.load if m.meta else None
            out.append(GossipMemberStatus(
                id=m.node, address=m.address, is_self=m.is_self, state=m.state,
                incarnation=m.incarnation, last_seen_s=m.last_seen_age, state_age_s=m.state_age,
                confirmations=m.confirmations, raft_role=role,
                checks_passing=sum(c.state is CheckState.PASSING for c in checks),
                checks_total=len(checks), draining=bool(m.meta and m.meta.draining),
                version=m.meta.version if m.meta else "",
                cpu_percent=load.cpu_percent if load else 0.0,
                mem_percent=load.mem_percent if load else 0.0, meta_known=m.meta is not None))
        awareness = self.gossip.awareness() if self.gossip else 0
        return MembersStatus(node=self.config.node_id, awareness=awareness, members=tuple(out))

    def _raft_role_of(self, node: str, view: Any, link: Any) -> str:
        """What this agent can tell about a member's Raft role: a leader knows who answers
        its heartbeats; a follower knows who leads and whose Raft link is up."""
        if node == view.leader:
            return "leader"
        if view.leader is None:
            return "unknown"
        if node == self.config.node_id:
            return "follower"
        if view.role is Role.LEADER:
            ok = link is not None and link.last_ack_age_s is not None \
                and link.last_ack_age_s < self.config.timing.election_max
        else:
            ok = link is not None and link.connected
        return "follower" if ok else "unreachable"

    def checks_status(self, node: str | None = None) -> ChecksStatus:
        state = self.raft.state
        nodes = tuple(NodeChecks(m.node, m.state, m.meta.checks if m.meta else ())
                      for m in (self.gossip.members() if self.gossip else ())
                      if node is None or m.node == node)
        committed = []
        for key, healthy in sorted(state.health.items()):
            n, _, check = key.partition("/")
            if node is None or n == node:
                committed.append(CommittedHealth(n, check, healthy))
        return ChecksStatus(node=self.config.node_id, nodes=nodes, committed=tuple(committed),
                            generation=state.generation)


class _Proposer:
    """The leader's proposals of one kind (health, table): looked at every HEALTH_EVERY_S,
    at most one in flight (given up after HEALTH_INFLIGHT_S), and after a refused or lost
    one a backoff of 0.5 s doubling to HEALTH_BACKOFF_MAX_S rather than a retry every tick."""

    def __init__(self, clock: Callable[[], float], what: str, timings: Any = None):
        self.clock = clock
        self.what = what
        self.timings = timings  # metrics.Timings: commit latency of what it proposes
        self._due = 0.0
        self._blocked_until = 0.0
        self._backoff = 0.0

    def due(self, now: float) -> bool:
        if now < self._due or now < self._blocked_until:
            return False
        self._due = now + HEALTH_EVERY_S
        return True

    def submit(self, raft: Any, now: float, term: int, command: dict[str, Any]) -> None:
        self._blocked_until = now + HEALTH_INFLIGHT_S
        sent = self.clock()

        def done(result: Any, err: int) -> None:
            if result is not None and result.ok:
                self._blocked_until = self._backoff = 0.0
                if self.timings is not None:
                    self.timings.observe_raft_commit(self.clock() - sent)
                log.info("committed %s (term %d)", result.detail, term)
                return
            # Refused (deposed meanwhile, a stale generation) or lost: try again later.
            self._backoff = min(HEALTH_BACKOFF_MAX_S, max(0.5, self._backoff * 2))
            self._blocked_until = self.clock() + self._backoff
            log.warning("%s not committed (%s); next try in %.1f s", self.what,
                        result.detail if result is not None else f"pysyncobj reason {err}",
                        self._backoff)

        raft.submit(command, done)


def _stall_note(age: float) -> str:
    return f" (AGENT LOOP STUCK for {age:.1f} s: VIPs are not renewed)" if age > 1.0 else ""


def _make_gossip(config: Config, tls: Any) -> tuple[Any, Any, Any]:
    from hacluster.channels import peer_channel
    from hacluster.gossip.grpc_transport import GossipService, GrpcTransport
    from hacluster.gossip.membership import Membership
    from hacluster.tls import Authority

    creds = tls.channel_credentials()
    transport = GrpcTransport(config.node_id, lambda address: peer_channel(address, creds))
    membership = Membership(
        config.node_id, config.me.grpc_endpoint,
        {p.id: p.grpc_endpoint for p in config.peers}, transport,
        timing=config.gossip, version=__version__,
        on_change=_log_gossip_change)
    service = GossipService(membership, Authority(config.cluster),
                            {m.id: m.grpc_endpoint for m in config.members})
    return membership, service, transport


def _log_gossip_change(view: Any, old: Any) -> None:
    log.info("gossip: %s is %s (was %s, incarnation %d)", view.node, view.state.value,
             old.value if old is not None else "unknown", view.incarnation)


def _make_dataplane(config: Config) -> Any:
    """The data plane worker for the configured services, or None without services.

    auto: nftables when `nft` works here (root or CAP_NET_ADMIN, the nf_tables module),
    else the userspace proxy, said loudly: it is slower and cannot keep client addresses.
    """
    if not config.services:
        return None
    from hacluster.dataplane.apply import NftApplier
    from hacluster.dataplane.proxy import ProxyDataplane
    from hacluster.dataplane.worker import DataplaneWorker

    if config.dataplane in ("auto", "nftables"):
        nft = NftApplier()
        ok, why = nft.available()
        if ok:
            return DataplaneWorker(nft, "nftables")
        if config.dataplane == "nftables":
            raise ConfigError(config.source, [f"dataplane: nftables is not usable here: {why}"])
        log.error("nftables is not usable here (%s): serving the balancing table with the "
                  "userspace proxy instead (slower; backends see this server's address)", why)
        reason = f"nftables is not usable: {why}"
    else:
        reason = "the config asks for it (dataplane: proxy)"
    proxy = ProxyDataplane(reason=reason)
    proxy.start()
    return DataplaneWorker(proxy, "userspace proxy")


def _make_raft_guard(config: Config) -> Any:
    """The nftables guard of our Raft port (docs/security.md), applied before Raft listens;
    None when it cannot be programmed here, said loudly: the port is then open to any host
    that reaches it, with only the cluster secret in front of pysyncobj's unpickler."""
    from hacluster.dataplane.guard import GuardError, RaftGuard

    guard = RaftGuard()
    members = [(m.id, m.address) for m in config.members]
    ok, why = guard.check()
    if ok:
        try:
            guard.apply(members, config.me.raft_port, config.me.address)
            log.info("raft guard: port %d accepts %d member address(es) only (table inet "
                     "hacluster_guard)", config.me.raft_port, len({a for _, a in members}))
            return guard
        except (GuardError, ValueError) as e:
            why = str(e)
    log.error("RAFT PORT NOT GUARDED: %s. Port %d is open to every host that can reach %s; only "
              "the cluster secret protects it", why, config.me.raft_port, config.me.address)
    return None


def _keep_raft_guard(guard: Any, config: Config, events: EventLog, stop: threading.Event) -> None:
    """Every GUARD_CHECK_S, put the guard back if something removed it (a firewall reload
    with `flush ruleset` does), loudly."""
    members = [(m.id, m.address) for m in config.members]

    def loop() -> None:
        while not stop.wait(GUARD_CHECK_S):
            try:
                if guard.ensure(members, config.me.raft_port, config.me.address):
                    log.warning("raft guard was missing or changed (firewall reload?): applied again")
                    events.add("agent", "raft port guard was missing: applied again")
            except Exception as e:  # noqa: BLE001 - keep trying; say it every time
                log.error("RAFT PORT NOT GUARDED: cannot re-apply the guard: %s", e)
    threading.Thread(target=loop, name="raft-guard", daemon=True).start()


def _serve_metrics(config: Config, agent: Agent, raft: Any, failovers: Any, timings: Any,
                   tls: Any) -> Any:
    """The Prometheus listener (config metrics.listen), or None. A taken port does not
    stop the agent (metrics are not worth an outage): it runs on, loudly."""
    if config.metrics_listen is None:
        return None
    from prometheus_client import CollectorRegistry

    from hacluster.dataplane.status import backends_status
    from hacluster.metrics import AgentCollector, LeaderChangeTally, MetricsBindError, serve_metrics
    from hacluster.statuspage import EVENTS_SHOWN, status_pages

    def backends() -> Any:
        return backends_status(config.node_id, raft.state, agent.dataplane)

    registry = CollectorRegistry()
    registry.register(AgentCollector(
        agent.status, agent.members_status, agent.checks_status, backends, failovers,
        # when this agent's certificate expires (alerts warn weeks ahead)
        extra=lambda: {"hacluster_tls_cert_expiry_timestamp_seconds": tls.not_after.timestamp()},
        leader_changes=LeaderChangeTally(agent.events), timings=timings))
    try:
        # the read-only status page on the same listener: `/` and `/status.json`
        server = serve_metrics(config.metrics_listen, registry, status_pages(
            agent.status, agent.members_status, backends, lambda: agent.events.after(0, EVENTS_SHOWN)),
            tls=tls if config.metrics_tls else None)
    except MetricsBindError as e:
        log.error("%s; running without metrics", e)
        agent.events.add("agent", f"no metrics: {e}")
        return None
    log.info("metrics and status page: %s://%s/ (%s)", "https" if config.metrics_tls else "http",
             config.metrics_listen, "client certificates of the cluster CA only" if config.metrics_tls
             else "plain HTTP, no authentication: keep it on a management network")
    return server


def _make_health(config: Config, agent: Agent, membership: Any) -> tuple[Any, Any]:
    from hacluster.gossip.feed import HealthFeed
    from hacluster.health.load import LoadSampler
    from hacluster.health.runner import HealthRunner

    sampler = LoadSampler()
    feed = HealthFeed(membership, lambda: runner.reports(), sampler.sample,
                      draining=agent.draining, version=__version__)
    runner = HealthRunner(config.checks, default_host=config.me.address,
                          on_change=feed.checks_changed)
    return runner, feed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hacluster-agent",
                                description="Run the hacluster agent for this server.")
    p.add_argument("--config", required=True, help="this server's YAML config")
    p.add_argument("--version", action="version", version=f"hacluster-agent {__version__}")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
        secret = config.read_secret()
    except ConfigError as e:
        print(f"hacluster-agent: refusing to start: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    notifier = Notifier.from_env(unset_environment=True)  # before any thread starts (putenv)
    log.info("%s", notifier.describe())
    for w in config.warnings:
        log.warning("config: %s", w)

    from hacluster.actions import AdminActions
    from hacluster.admin import AdminService, serve_admin  # gRPC pulls in threads: import late
    from hacluster.dataplane.status import backends_status
    from hacluster.failover import Failover
    from hacluster.hostops.netlink import NetlinkHostOps
    from hacluster.tls import Authority, TlsError, load_tls

    try:
        tls = load_tls(config.tls, config.cluster, ("node",), config.node_id)
    except TlsError as e:
        print(f"hacluster-agent: refusing to start: tls.{e}", file=sys.stderr)
        return 2
    log.info("mutual TLS: %s, certificate valid until %s", tls.identity,
             tls.not_after.strftime("%Y-%m-%d"))
    from hacluster.audit import AuditError, AuditLog
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        audit = AuditLog(config.data_dir / AUDIT_FILE, config.node_id)
    except (OSError, AuditError) as e:
        print(f"hacluster-agent: refusing to start: the audit log {config.data_dir / AUDIT_FILE} "
              f"cannot be opened: {e}", file=sys.stderr)
        return 2

    hostops = NetlinkHostOps()
    raft = RaftNode(config, secret)
    membership, gossip_service, transport = _make_gossip(config, tls)
    try:
        dataplane = _make_dataplane(config)
    except ConfigError as e:
        print(f"hacluster-agent: refusing to start: {e}", file=sys.stderr)
        return 2
    from hacluster.metrics import FailoverHistogram, Timings
    failovers, timings = FailoverHistogram(), Timings()
    if dataplane is not None:
        dataplane.timings = timings
    transport.on_rtt = timings.observe_probe_rtt
    agent = Agent(config, hostops, raft, gossip=membership, dataplane=dataplane, failovers=failovers,
                  timings=timings)
    runner, feed = _make_health(config, agent, membership)
    agent.failover = Failover(agent)
    agent.watchdog = WatchdogPinger(notifier, agent.clock)
    admin = AdminService(agent.status, Authority(config.cluster), members_provider=agent.members_status,
                         checks_provider=agent.checks_status,
                         backends_provider=lambda _svc: backends_status(
                             config.node_id, raft.state, agent.dataplane),
                         actions=AdminActions(config, raft), failover=agent.failover.run,
                         events=agent.events, audit=audit)
    try:
        server = serve_admin(config.me.grpc_endpoint, admin, tls.server_credentials(), max_workers=8,
                             gossip=gossip_service)
    except Exception as e:  # noqa: BLE001 - any bind error must stop start-up loudly
        print(f"hacluster-agent: cannot serve admin API on {config.me.grpc_endpoint}: {e}",
              file=sys.stderr)
        return 1
    raft_guard = _make_raft_guard(config)  # before raft.start(): Raft never listens unguarded
    guard_stop = threading.Event()
    if raft_guard is not None:
        _keep_raft_guard(raft_guard, config, agent.events, guard_stop)
    raft.start()
    membership.start()  # joins (push-pull with a peer) from its own thread
    runner.start()
    feed.start()
    if dataplane is not None:
        dataplane.start()
    metrics_server = _serve_metrics(config, agent, raft, failovers, timings, tls)
    log.info("hacluster-agent %s: node %s of cluster %s, %d member(s), VIPs: %s, checks: %s",
             __version__, config.node_id, config.cluster, len(config.members),
             ", ".join(str(v) for v in config.vips) or "none",
             ", ".join(f"{c.name} ({c.kind})" for c in config.checks) or "none")

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        notifier.stopping("stopping: releasing VIPs, handing leadership over")
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier.ready(agent.sentence)  # admin gRPC serves, Raft started; the watchdog runs from now
    try:
        agent.run()
        agent.handoff_and_release()
    finally:
        for step, fn in (("metrics", lambda: metrics_server and metrics_server.stop()),
                         ("health feed", feed.stop), ("checks", runner.stop),
                         # peers mark us LEFT: our backends go down at once
                         ("gossip leave", lambda: membership.leave(LEAVE_TIMEOUT_S)),
                         ("gossip", membership.stop), ("gRPC server", lambda: server.stop(0.2)),
                         ("gossip channels", transport.close), ("raft", raft.stop),
                         ("raft guard", lambda: guard_stop.set() or (raft_guard and raft_guard.remove())),
                         ("data plane", lambda: dataplane and dataplane.stop()),
                         ("hostops", hostops.close), ("audit log", audit.close)):
            try:
                fn()
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                log.exception("stopping %s failed", step)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
