"""The leader's health verdicts: gossiped view -> committed changes, with hysteresis (§5).

Pure: no clock, no I/O; the agent passes `now` and the members' gossip view. Health never
goes into the Raft log directly: the leader proposes a change only after its own view has
held it for `settle` seconds, and only when it differs from what is committed. Rise/fall
counts on the checking node already filter single failures; the settle time filters what
gossip itself may flap on (a record arriving out of order, a member flickering suspect).

What a member's state means for its checks' verdicts:
- DEAD or LEFT in gossip: every check is down (the server is gone or said goodbye).
- SUSPECT: no opinion. Suspicion is not a verdict; Lifeguard exists because overloaded
  members get suspected falsely, and pulling their backends on a suspicion is the flapping
  that Consul users complain about. The dead verdict follows within the suspicion timeout.
- ALIVE: the check's own state; UNKNOWN (not yet `rise`/`fall` results) is no opinion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hacluster.gossip.types import GossipState, NodeMeta
from hacluster.model import CheckState, NodeId


def health_key(node: NodeId, check: str) -> str:
    return f"{node}/{check}"


@dataclass(frozen=True)
class Observed:
    """One member as the leader's gossip sees it."""

    node: NodeId
    state: GossipState
    meta: NodeMeta | None


def desired(obs: Observed, check: str) -> bool | None:
    """The verdict the gossiped view supports for one check, or None for no opinion."""
    if obs.state in (GossipState.DEAD, GossipState.LEFT):
        return False
    if obs.state is not GossipState.ALIVE or obs.meta is None:
        return None
    report = next((c for c in obs.meta.checks if c.name == check), None)
    if report is None or report.state is CheckState.UNKNOWN:
        return None
    return report.state is CheckState.PASSING


class VerdictTracker:
    """Remembers, per health key, since when the view has disagreed with the committed value."""

    def __init__(self, checks: Iterable[str], settle: float):
        self.checks = tuple(checks)
        self.settle = settle
        self._pending: dict[str, tuple[bool, float]] = {}

    def changes(self, now: float, members: Iterable[Observed],
                committed: Mapping[str, bool]) -> dict[str, bool]:
        """The changes to commit now (empty when nothing has settled)."""
        out: dict[str, bool] = {}
        seen: set[str] = set()
        for obs in members:
            for check in self.checks:
                key = health_key(obs.node, check)
                seen.add(key)
                want = desired(obs, check)
                if want is None or committed.get(key) is want:
                    self._pending.pop(key, None)
                    continue
                value, since = self._pending.get(key, (want, now))
                if value is not want:  # flipped while pending: start over
                    value, since = want, now
                self._pending[key] = (value, since)
                if now - since >= self.settle:
                    out[key] = want
        for key in set(self._pending) - seen:
            del self._pending[key]
        return out

    def reset(self) -> None:
        """Forget pending changes (on losing leadership: a new term starts from scratch)."""
        self._pending.clear()
