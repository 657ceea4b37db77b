"""`hacluster failover [--to NODE]`: a graceful move of leadership and VIPs (issue 5).

The leader checks that the move can succeed (`plan`, pure), then, on its own agent: asks its
HA loop to hold nothing (a HoldNothing request through the loop's channel: the loop does the
release, so no netlink call races it, and answers with what the kernel still has), asks
pysyncobj to hand leadership to the target (Raft TimeoutNow; the target wins without
pre-vote and claims without probing, as it knows the old holder let go), and waits until
it no longer leads. Nothing is left behind: no flag, no constraint; the old leader is an
ordinary follower afterwards (Raft never moves leadership back by itself). If the target
does not take over in time, the handoff is cancelled and this leader claims its VIPs again
(after its ARP probe).

Eligible target: a member other than the leader, whose Raft link answered within the
election timeout and whose log is caught up, ALIVE in this leader's gossip view, not
draining, and with no committed "down" verdict for any of its own checks (the derived
checks of external hosts, `CHECK@ADDRESS`, say nothing about the member itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hacluster.config import Config
from hacluster.consensus.protocol import Consensus
from hacluster.errors import Refusal, Refused
from hacluster.events import EventLog
from hacluster.ha.requests import Channel, HoldNothing
from hacluster.model import ConsensusView, GossipState, Role, is_draining

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3.0
MAX_TIMEOUT_S = 30.0
RELEASE_WAIT_S = 1.0  # the tick loop runs every tick_ms: two ticks are plenty
TRANSFER_RETRY_S = 0.02  # pysyncobj denies a transfer while the target's log lags


@dataclass(frozen=True)
class Plan:
    source: str
    target: str
    vips: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    dry_run: bool
    detail: str
    released_at_unix_ms: float = 0.0
    handed_over_ms: float = 0.0


def _refuse(message: str) -> Refused:
    return Refused(message, Refusal.PRECONDITION)


def why_not(member: str, view: ConsensusView, gossip: Mapping[str, GossipState] | None,
            health: Mapping[str, bool], flags: Mapping[str, str], fresh_s: float,
            caught_up: Callable[[str], bool]) -> str | None:
    """Why `member` cannot take over from this leader now, or None if it can."""
    link = next((p for p in view.peers if p.id == member), None)
    if link is None:
        return "not a peer of this leader"
    if link.last_ack_age_s is None or link.last_ack_age_s > fresh_s:
        return "its Raft link is not answering"
    if gossip is not None and gossip.get(member) is not GossipState.ALIVE:
        state = gossip.get(member)
        return f"gossip sees it {state.value if state else 'nowhere'}"
    if is_draining(flags, member):
        return "it is draining (hacluster undrain it first)"
    down = sorted(key.partition("/")[2] for key, up in health.items()
                  if not up and key.startswith(member + "/") and "@" not in key)
    if down:
        return f"its check(s) {', '.join(down)} are committed down"
    if not caught_up(member):
        return "its Raft log is behind"
    return None


def plan(node: str, members: list[str], vips: tuple[str, ...], view: ConsensusView,
         gossip: Mapping[str, GossipState] | None, health: Mapping[str, bool],
         flags: Mapping[str, str], fresh_s: float, caught_up: Callable[[str], bool],
         to: str | None) -> Plan:
    """The move this leader would make, or Refused (precondition, not_found) saying why
    not. Pure: everything it looks at is passed in. A move to this leader itself is the
    no-op plan (target == source, no VIPs): there is nothing to move, which is no error."""
    if view.role is not Role.LEADER:
        leader = f"the leader is {view.leader}" if view.leader else "there is no leader now"
        raise _refuse(f"{node} does not lead ({leader}): ask the leader")
    if not view.has_quorum or not view.lease_ok:
        raise _refuse(f"{node} leads without a quorum or a lease right now: a failover needs "
                      "a healthy majority (see `hacluster status`)")
    if to is not None:
        if to not in members:
            raise Refused(f"no member {to!r}; members: {', '.join(members)}", Refusal.NOT_FOUND)
        if to == node:
            return Plan(node, node, ())
        reason = why_not(to, view, gossip, health, flags, fresh_s, caught_up)
        if reason:
            raise _refuse(f"{to} cannot take over: {reason}")
        return Plan(node, to, vips)
    reasons = {}
    # The freshest Raft link first: that member heard from us last.
    for p in sorted(view.peers, key=lambda p: (p.last_ack_age_s is None, p.last_ack_age_s or 0, p.id)):
        reason = why_not(p.id, view, gossip, health, flags, fresh_s, caught_up)
        if reason is None:
            return Plan(node, p.id, vips)
        reasons[p.id] = reason
    detail = "; ".join(f"{m}: {r}" for m, r in sorted(reasons.items())) or "no other member"
    raise _refuse(f"no member can take over from {node} ({detail})")


class Failover:
    """Runs failovers on the leader's agent; one at a time. Talks to the HA loop only
    through its request channel (ha/requests.py)."""

    def __init__(self, config: Config, raft: Consensus, loop: Channel, events: EventLog,
                 gossip_states: Callable[[], Mapping[str, GossipState] | None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._config = config
        self._raft = raft
        self._loop = loop
        self._events = events
        self._gossip_states = gossip_states
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()

    def plan(self, to: str | None, check_log: bool = True) -> Plan:
        cfg = self._config
        state = self._raft.state
        return plan(cfg.node_id, [m.id for m in cfg.members], tuple(v.address for v in cfg.vips),
                    self._raft.view(), self._gossip_states(), dict(state.health), dict(state.flags),
                    cfg.timing.election_min, self._raft.caught_up if check_log else (lambda _m: True), to)

    def run(self, to: str | None, dry_run: bool, timeout: float) -> Outcome:
        if not 0 <= timeout <= MAX_TIMEOUT_S:
            raise Refused(f"timeout_s must be 0-{MAX_TIMEOUT_S:g}, got {timeout:g}")
        timeout = timeout or DEFAULT_TIMEOUT_S
        if not self._lock.acquire(blocking=False):
            raise Refused("a failover is already under way on this agent", Refusal.ABORTED)
        try:
            p = self.plan(to)
            if p.target == p.source:
                vips = ", ".join(v.address for v in self._config.vips) or "no VIPs"
                return Outcome(p, dry_run, f"{p.source} already leads: nothing to move "
                                           f"(leadership and {vips} stay on {p.source})")
            vips = ", ".join(p.vips) or "no VIPs"
            if dry_run:
                return Outcome(p, True, f"would move leadership and {vips} from {p.source} to "
                                        f"{p.target}")
            return self._execute(p, timeout)
        finally:
            self._lock.release()

    def _release(self, p: Plan) -> None:
        """Have the loop release every VIP, and confirm the kernel let them go."""
        report = self._loop.send(HoldNothing(True)).wait(RELEASE_WAIT_S)
        if report is None:
            raise Refused("the agent's loop did not release the VIPs in time", Refusal.INTERNAL)
        if report.vips_present:  # one more tick: a release may take a second try
            report = self._loop.send(HoldNothing(True)).wait(RELEASE_WAIT_S) or report
        if report.vips_present:
            # A transferred leader claims without probing: it must not find us holding.
            raise Refused(f"{', '.join(report.vips_present)} could not be released here (see the "
                          f"agent's log); no transfer, {p.source} keeps leading", Refusal.INTERNAL)

    def _execute(self, p: Plan, timeout: float) -> Outcome:
        raft, clock = self._raft, self._clock
        log.info("failover: moving leadership and VIPs from %s to %s", p.source, p.target)
        transfers_sent_until = None
        try:
            self._release(p)
            released_at = self._wall()
            start = clock()
            deadline = start + timeout
            denied: list[str] = []
            while clock() < deadline:
                if raft.view().role is not Role.LEADER:
                    handed = (clock() - start) * 1000
                    break
                try:  # still eligible? (it may have died, or been drained, meanwhile; a log
                    # that lags for a moment is what the retries are for)
                    self.plan(p.target, check_log=False)
                except Refused as e:
                    raise Refused(f"failover to {p.target} abandoned: {e}", Refusal.ABORTED) from None
                raft.transfer_leadership(p.target, lambda ok: None if ok else denied.append(
                    "pysyncobj denied the transfer (target log behind or not connected)"))
                transfers_sent_until = clock() + self._config.timing.election_max
                # the answer comes on pysyncobj's thread; the role change is what counts
                _sleep_until(lambda: raft.view().role is not Role.LEADER,
                             min(deadline, clock() + 0.3), clock, TRANSFER_RETRY_S)
            else:
                why = f" ({denied[-1]})" if denied else ""
                raise Refused(f"{p.target} did not take over within {timeout:g} s{why}; "
                              f"{p.source} keeps leading and claims its VIPs again after its "
                              "ARP probe", Refusal.ABORTED)
        finally:
            if transfers_sent_until is not None and raft.view().role is Role.LEADER:
                # A TimeoutNow sent late can still make the target win: hold nothing until
                # an election it started would be over.
                _sleep_until(lambda: raft.view().role is not Role.LEADER, transfers_sent_until,
                             clock, TRANSFER_RETRY_S)
            self._loop.send(HoldNothing(False)).wait(RELEASE_WAIT_S)
        return self._done(p, released_at, handed)

    def _done(self, p: Plan, released_at: float, handed: float) -> Outcome:
        log.info("failover: %s leads now (handed over in %.0f ms)", p.target, handed)
        vips = ", ".join(p.vips) or "no VIPs"
        self._events.add("failover", f"{p.source} handed leadership and {vips} to {p.target} "
                         f"in {handed:.0f} ms", source=p.source, target=p.target, handed_over_ms=handed)
        return Outcome(p, False, f"moved leadership and {vips} from {p.source} to {p.target}",
                       released_at * 1000, handed)


def _sleep_until(cond: Callable[[], bool], until: float, clock: Callable[[], float],
                 step: float) -> None:
    while clock() < until and not cond():
        time.sleep(step)
