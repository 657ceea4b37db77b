"""The HA loop: every tick, snapshot -> decide -> act (STYLE.md §1), and the SIGTERM handoff.

One loop runs on every server, on the daemon's main thread. Each tick (10 ms by default) it
takes the requests other threads sent (ha/requests.py), takes one snapshot of Raft and of
the host, lets the pure decide() (ha/decide.py) say what to do, has the VIP executor
(ha/vips.py) do it, lets the leader's duties (ha/leader.py) propose what is due, and keeps
the one-line sentence that `hacluster status` shows and the log records when it changes.
After each tick it publishes a LoopReport for the read model (ha/views.py).

Only this thread writes the loop's state. The leader goes silent when this loop stops
ticking (RaftNode.agent_alive, below), so a stuck loop never holds a VIP it cannot renew.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hacluster.config import Config
from hacluster.consensus.protocol import Consensus
from hacluster.dataplane.table import table_from_doc
from hacluster.ha.decide import (
    ANNOUNCE_OFFSETS,
    Act,
    Rules,
    Snapshot,
    TableProgress,
    VipState,
    decide,
    tick_sentence,
)
from hacluster.ha.leader import LeaderDuties
from hacluster.ha.record import Recorder
from hacluster.ha.requests import Channel, HoldNothing, Reply, Request, Stop, TickReport
from hacluster.ha.vips import TickNotes, VipExecutor
from hacluster.hostops.base import HostOps
from hacluster.hostops.connsync import ConnSync
from hacluster.model import NodeId, Role, maintenance_on

log = logging.getLogger(__name__)

HANDOFF_WAIT_S = 1.0  # how long a leader waits for its successor on SIGTERM


@dataclass(frozen=True)
class LoopReport:
    """What the loop last published (read by any thread; replaced whole after each tick)."""

    sentence: str = "starting"
    claimed_at: Mapping[str, float] = field(default_factory=dict)  # vip -> when we claimed it
    kernel_has: frozenset[str] = frozenset()  # VIPs the kernel had at the last tick's start
    releasing: bool = False  # a failover or a stop is moving the VIPs away
    tick_done_at: float = 0.0  # on the loop's clock
    waiting: Mapping[str, str] = field(default_factory=dict)  # vip -> why its claim waits


class HaLoop:
    def __init__(self, config: Config, hostops: HostOps, raft: Consensus, channel: Channel,
                 recorder: Recorder, leader: LeaderDuties | None = None, *,
                 clock: Callable[[], float], dataplane: Any = None, watchdog: Any = None,
                 sync: ConnSync | None = None):
        """dataplane: a dataplane.worker.DataplaneWorker (or a fake with want(table),
        applied_generation(), wanted_generation()), or None. watchdog: a
        sdnotify.WatchdogPinger, or None. sync: the connection-state sync a claim commits
        first (hostops/connsync.py), or None."""
        self._config = config
        self._raft = raft
        self._channel = channel
        self._recorder = recorder
        self._leader = leader
        self._clock = clock
        self._dataplane = dataplane
        self._watchdog = watchdog
        self._vips = VipExecutor(config, hostops, raft, clock, recorder, sync)
        self._rules = Rules(reannounce_settle_s=config.timing.election_max,
                            renew_every_s=config.timing.renew_every)
        self._busy = True  # the last tick left something moving: tick again after `tick`
        on_change = getattr(raft, "on_change", None)
        if on_change is not None:  # a role, leader or commit change ends a quiet pause
            on_change(channel.wake)
        self._handoff = False  # HoldNothing: a failover is moving the VIPs away
        self._stopping = False  # SIGTERM: release and never claim again
        self._stop = False
        self._answering: frozenset[NodeId] = frozenset()  # peers acking heartbeats (leader only)
        self._holding_since: float | None = None
        self._table_handed = -1
        self._report = LoopReport(tick_done_at=clock())

    # ----------------------------------------------------------------- the tick

    def tick(self) -> str:
        """One tick, taking whatever requests are waiting (tests and shutdown call this)."""
        return self._tick(self._channel.take())

    def _tick(self, requests: list[tuple[Request, Reply]]) -> str:
        for request, _ in requests:
            self._apply(request)
        notes = TickNotes()
        self._follow_table(notes)
        snap = self._snapshot(notes)
        self._recorder.observe(snap.now, snap.consensus, self._raft.state)
        decision = decide(snap, self._rules)
        self._vips.execute(decision.actions, snap.handoff, notes)
        if self._leader is not None:
            self._leader.step(snap)
        sentence = tick_sentence(decision, notes.notes, notes.error)
        self._busy = bool(requests) or sentence != self._report.sentence or _moving(snap, decision, notes)
        if sentence != self._report.sentence:
            log.info("%s", sentence)
        self._publish(sentence, notes.waiting)
        if requests:
            report = TickReport(self._vips.still_here(), sentence)
            for _, reply in requests:
                reply.deliver(report)
        return sentence

    def _apply(self, request: Request) -> None:
        if isinstance(request, HoldNothing):
            self._handoff = request.on
        elif isinstance(request, Stop):
            self._stop = True

    def _snapshot(self, notes: TickNotes) -> Snapshot:
        now = self._clock()
        view = self._raft.view()
        book = self._vips.book
        peers_back = self._watch_peers(view, now, bool(book.claimed_at))
        vips = tuple(VipState(v, self._vips.present(v, notes)) for v in self._config.vips)
        self._vips.kernel_has = {s.vip.address for s in vips if s.present}
        state = self._raft.state
        return Snapshot(
            now=now, node=self._config.node_id, consensus=view, vips=vips, handoff=self.releasing,
            maintenance=maintenance_on(state.flags), claimed_at=dict(book.claimed_at),
            announces_sent=dict(book.announces), released_in_term=dict(book.released_in_term),
            epoch_asked=book.epoch_asked, peers_back=peers_back, holding_since=self._holding_since,
            table=self._table_progress(), renewed_at=dict(book.renewed_at))

    def _watch_peers(self, view: Any, now: float, holding: bool) -> frozenset[NodeId]:
        """The peers that answer heartbeats again since the last tick, while this leader
        holds VIPs. "Answering" is the leader's view of heartbeat acknowledgements, which
        also sees partitions shorter than the TCP link timeout. decide() re-announces."""
        if view.role is not Role.LEADER or not holding:
            self._answering, self._holding_since = frozenset(), None
            return frozenset()
        if self._holding_since is None:
            self._holding_since = now
        limit = self._config.timing.election_min
        answering = frozenset(p.id for p in view.peers
                              if p.last_ack_age_s is not None and p.last_ack_age_s < limit)
        back = answering - self._answering
        self._answering = answering
        return back

    def _follow_table(self, notes: TickNotes) -> None:
        """Every node: hand the committed table to the data plane (hot standby, §6)."""
        state = self._raft.state
        if self._dataplane is None or state.table is None or state.table_generation == self._table_handed:
            return
        try:
            self._dataplane.want(table_from_doc(state.table))
        except ValueError as e:
            notes.fail(f"committed table {state.table_generation} unreadable: {e}")
        self._table_handed = state.table_generation

    def _table_progress(self) -> TableProgress | None:
        if self._dataplane is None or not self._config.services:
            return None
        return TableProgress(self._dataplane.applied_generation(), self._dataplane.wanted_generation())

    def _publish(self, sentence: str, waiting: Mapping[str, str]) -> None:
        self._report = LoopReport(
            sentence=sentence, claimed_at=dict(self._vips.book.claimed_at),
            kernel_has=frozenset(self._vips.kernel_has), releasing=self.releasing,
            tick_done_at=self._clock(), waiting=dict(waiting))

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        tick = self._config.timing.tick
        next_at = self._clock()
        while True:
            requests = self._channel.take()
            if any(isinstance(r, Stop) for r, _ in requests):
                for _, reply in requests:
                    reply.deliver(TickReport(self._vips.still_here(), self._report.sentence))
                return
            try:
                self._tick(requests)
            except Exception:  # the loop must survive anything; the next tick reconciles
                log.exception("tick failed")
                self._report = dataclasses.replace(self._report, tick_done_at=self._clock())
            self._raft.agent_alive()
            if self._watchdog is not None:  # pings only when due: a stuck loop stops them
                self._watchdog.tick(self._report.sentence)
            if not self._busy:
                self._rest()
                next_at = self._clock()
                continue
            next_at += tick
            delay = next_at - self._clock()
            if delay < -tick * 10:  # fell far behind (suspended?): do not burst to catch up
                next_at = self._clock()
                delay = 0
            if not self._channel.sleep(delay):
                next_at = self._clock()  # woken: the next pause counts from now

    def _rest(self) -> None:
        """After a tick that left nothing moving: sleep until woken or a tick is due. A
        holder's lease deadline moves on with every heartbeat ack, so waking at one that has
        moved since only re-arms the sleep, without a tick (a tick at each stale deadline,
        about 7 a second, was most of an idle leader's loop). Never past the idle tick."""
        until = self._clock() + self._config.timing.idle_tick
        while self._channel.sleep(self._quiet_pause(until)) and not self._due(until):
            pass

    def _quiet_pause(self, until: float | None = None) -> float:
        """How long a quiet loop may sleep: until _next_due, never less than the fast tick.
        Anything that can change the decision sooner wakes the loop: a request, a Raft role,
        leader or commit change (RaftNode.on_change)."""
        t = self._config.timing
        now = self._clock()
        return max(t.tick, self._next_due(now + t.idle_tick if until is None else until) - now)

    def _due(self, until: float) -> bool:
        """Whether a quiet sleep that ran its course must end in a tick."""
        return self._next_due(until) <= self._clock()

    def _next_due(self, until: float) -> float:
        """When a quiet loop must tick: the idle tick's end (`until`), and for a holder the
        lease's end (it releases right then if no heartbeat extended it) and its next
        renewal, whichever comes first."""
        due = until
        book = self._vips.book
        if book.claimed_at or self._vips.kernel_has:
            due = min(due, self._raft.lease_deadline())
            if book.renewed_at:
                due = min(due, min(book.renewed_at.values()) + self._config.timing.renew_every)
        return due

    def stop(self) -> None:
        """End run() within a tick. Safe from a signal handler (see Channel.send)."""
        self._channel.send(Stop())

    @property
    def releasing(self) -> bool:
        """Hold nothing: a failover or a stop is under way."""
        return self._handoff or self._stopping

    @property
    def stopping(self) -> bool:
        return self._stopping

    def report(self) -> LoopReport:
        return self._report

    def shutdown(self) -> None:
        """SIGTERM path, after run() returned: release VIPs first, then hand leadership to a
        follower. If an address is still here after the release, no transfer: the successor
        of an ordinary election probes ARP before claiming, a transferred one would not (I1)."""
        self._stopping = True
        self.tick()  # decide() releases everything while stopping
        view = self._raft.view()
        if view.role is not Role.LEADER or len(self._config.members) == 1:
            return
        left = self._vips.still_here()
        if left:
            self.tick()  # one more try
            left = self._vips.still_here()
        if left:
            log.error("VIP(s) %s still present after the release: no leadership transfer; the "
                      "next leader will probe before claiming", ", ".join(left))
            return
        started = self._clock()
        self._raft.transfer_leadership(None, lambda ok: log.info(
            "leadership transfer %s", "sent" if ok else "refused"))
        while self._clock() - started < HANDOFF_WAIT_S:
            if self._raft.view().role is not Role.LEADER:
                log.info("handed leadership over in %.0f ms", (self._clock() - started) * 1000)
                return
            time.sleep(0.005)
        log.warning("no successor took over within %.1f s; stopping anyway", HANDOFF_WAIT_S)


def _moving(snap: Snapshot, decision: Any, notes: TickNotes) -> bool:
    """Whether this tick left something under way that wants the next tick soon: any action
    but a renewal, a claim waiting or an error, a leader that may not hold yet (its epoch, a
    claim), an election, an announce burst not finished, a handoff, a table being applied."""
    c = snap.consensus
    if any(a.act is not Act.RENEW for a in decision.actions) or notes.waiting or notes.error:
        return True
    if snap.handoff or c.role is Role.CANDIDATE:
        return True
    if c.role is Role.LEADER and not (c.lease_ok and c.epoch_applied):
        return True
    if any(n < len(ANNOUNCE_OFFSETS) for n in snap.announces_sent.values()):
        return True
    t = snap.table
    return t is not None and t.wanted is not None and t.wanted != t.applied
