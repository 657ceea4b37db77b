"""What the HA loop tells the timeline: leader changes, VIP claims and releases, committed
health and table changes (the event log behind `hacluster events`), and how long each
failover took as seen by the new holder (the failover histogram of the metrics).

Observation only: nothing here decides or touches the host.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hacluster.events import EventLog
from hacluster.model import ConsensusView, NodeId, Role, Vip

log = logging.getLogger(__name__)


class Recorder:
    """Written on the loop thread only."""

    def __init__(self, node: NodeId, events: EventLog, failovers: Any = None, raft: Any = None):
        """failovers: a metrics.FailoverHistogram or None. raft: for `silent_before_leading`
        (how long no leader had been heard when this node won), or None."""
        self.node = node
        self.events = events
        self._failovers = failovers
        self._raft = raft
        self._last_role: Role | None = None
        self._last_leader: NodeId | None = None
        self._leader_at: float | None = None
        self._seen_other_leader = False  # only then is our own win a failover
        # the last other member seen leading: the likely holder of the VIPs before us
        self.former_leader: NodeId | None = None
        self._silent_before: float | None = None
        self._claims_timed: set[str] = set()  # VIPs whose first claim this leadership was timed
        self._seen_generation = -1
        self._seen_health: dict[str, bool] = {}
        self._seen_suspects: dict[str, int] = {}
        self._seen_table = 0

    def observe(self, now: float, view: ConsensusView, state: Any) -> None:
        """Leader changes, and committed health and table changes, into the event log."""
        self._leadership(now, view)
        if state.generation == self._seen_generation:
            return
        self._seen_generation = state.generation
        self._health(dict(state.health))
        self._suspects(dict(state.suspects))
        if state.table_generation != self._seen_table:
            self._seen_table = state.table_generation
            self.events.add("table", f"balancing table generation {state.table_generation} committed",
                            generation=state.table_generation)

    def _leadership(self, now: float, view: ConsensusView) -> None:
        me = self.node
        if view.role is not self._last_role:
            if view.role is Role.LEADER:
                self._leader_at = now
                self._claims_timed.clear()
                self._silent_before = (getattr(self._raft, "silent_before_leading", None)
                                       if self._seen_other_leader else None)
                self.events.add("leader", f"{me} leads (term {view.term}"
                                + (", by transfer)" if view.won_by_transfer else ")"),
                                term=view.term, by_transfer=view.won_by_transfer)
            elif self._last_role is Role.LEADER:
                self.events.add("leader", f"{me} no longer leads (term {view.term})", term=view.term)
            self._last_role = view.role
        if view.leader not in (None, me):
            self._seen_other_leader = True
            self.former_leader = view.leader
        if view.leader != self._last_leader and view.leader not in (None, me):
            self.events.add("leader", f"{view.leader} leads (term {view.term}), as {me} sees it",
                            term=view.term, leader=view.leader)
        self._last_leader = view.leader

    def _health(self, health: Mapping[str, bool]) -> None:
        for key in sorted(set(health) | set(self._seen_health)):
            now, before = health.get(key), self._seen_health.get(key)
            if now is not before and now is not None:
                node, _, check = key.partition("/")
                self.events.add("health", f"{key} committed {'up' if now else 'DOWN'}", node=node,
                                check=check, healthy=now)
        self._seen_health = dict(health)

    def _suspects(self, suspects: Mapping[str, int]) -> None:
        for node in sorted(set(suspects) - set(self._seen_suspects)):
            self.events.add("health", f"{node} suspect by election (term {suspects[node]}): its "
                            "backends are out until gossip sees it alive again", node=node,
                            term=suspects[node])
        for node in sorted(set(self._seen_suspects) - set(suspects)):
            self.events.add("health", f"{node} is back: no longer suspect by election", node=node)
        self._seen_suspects = dict(suspects)

    def claimed(self, vip: Vip, now: float, view: ConsensusView, by_transfer: bool) -> None:
        log.info("claimed VIP %s (term %d%s)", vip, view.term,
                 ", by transfer, no probe" if by_transfer else "")
        after = (now - self._leader_at) * 1000 if self._leader_at is not None else None
        self.events.add("vip", f"claimed {vip.address}" + (f" {after:.0f} ms after becoming leader"
                                                           if after is not None else "")
                        + (" (by transfer, no probe)" if by_transfer else ""),
                        vip=vip.address, after_leader_ms=after if after is not None else "", term=view.term,
                        by_transfer=by_transfer)
        if self._failovers is not None and after is not None and vip.address not in self._claims_timed:
            # the first claim of each VIP in this leadership: a failover's end, as seen here
            self._claims_timed.add(vip.address)
            self._failovers.observe_claim(after / 1000, self._silent_before, view.won_by_transfer)

    def released(self, vip: Vip) -> None:
        log.info("released VIP %s", vip)
        self.events.add("vip", f"released {vip.address}", vip=vip.address)
