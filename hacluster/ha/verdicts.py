"""The leader's health verdicts: gossiped view -> committed changes, with hysteresis (§5).

Pure: no clock, no I/O; the agent passes `now`, the members' gossip view and what Raft
says about each peer. Health never goes into the Raft log directly: the leader proposes a
change only after its own view has held it for `settle` seconds, and only when it differs
from what is committed. Rise/fall counts on the checking node already filter single
failures; the settle time filters what gossip itself may flicker on.

What a member's state means for its checks' verdicts:
- LEFT in gossip: every check is down (it said goodbye: a clean stop, a rolling upgrade).
- DEAD in gossip: every check is down, unless Raft still hears the member (its heartbeat
  acks arrive): then gossip alone is cut off (a firewall that only opens the Raft port, a
  stuck gRPC connection) and the leader keeps the committed value and says so loudly.
- SUSPECT: no opinion, unless the leader's Raft has not heard the member either for
  `corroborate` seconds (no heartbeat ack): then two independent channels agree and its
  checks are down at once, without waiting out the suspicion timeout (a powered-off
  server: ~1.3 s instead of ~3 s). Suspicion alone is not a verdict; Lifeguard exists
  because overloaded members get suspected falsely, and pulling their backends on a
  suspicion is the flapping that Consul users complain about. A CPU-starved server still
  acks Raft heartbeats, late but well within a second.
- ALIVE: the check's own state; UNKNOWN (not yet `rise`/`fall` results) is no opinion.
  "Up" needs the member to have been alive for `rejoin` seconds: a member back from
  DEAD (a healed partition, a thawed process) first refutes with the check results it had
  before, and a member flapping alive/dead must not flap its backends with it.

Keys that no longer exist (a member or a check removed from the config) are forgotten
(committed as null) without waiting.
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
    """One member as the leader sees it."""

    node: NodeId
    state: GossipState
    meta: NodeMeta | None
    state_age: float = float("inf")  # seconds in its current gossip state
    raft_silent: float | None = None  # seconds since Raft last heard it (None: unknown)


@dataclass(frozen=True)
class Policy:
    rejoin: float = 0.0  # "up" needs the member alive this long
    raft_fresh: float = 0.35  # Raft heard it within this: it is alive (the election max)
    corroborate: float = 1.0  # suspect + Raft silent this long: down


def desired(obs: Observed, check: str, policy: Policy = Policy()) -> bool | None:  # noqa: B008
    """The verdict the view supports for one check, or None for no opinion."""
    silent = obs.raft_silent
    if obs.state is GossipState.LEFT:
        return False
    if obs.state is GossipState.DEAD:
        return None if silent is not None and silent < policy.raft_fresh else False
    if obs.state is GossipState.SUSPECT:
        return False if silent is not None and silent >= policy.corroborate else None
    if obs.meta is None:
        return None
    report = next((c for c in obs.meta.checks if c.name == check), None)
    if report is None or report.state is CheckState.UNKNOWN:
        return None
    if report.state is CheckState.PASSING:
        return True if obs.state_age >= policy.rejoin else None
    return False


class VerdictTracker:
    """Remembers, per health key, since when the view has disagreed with the committed value."""

    def __init__(self, checks: Iterable[str], settle: float, policy: Policy = Policy()):  # noqa: B008
        self.checks = tuple(checks)
        self.settle = settle
        self.policy = policy
        self.contradicted: frozenset[NodeId] = frozenset()  # dead in gossip, alive in Raft
        self._pending: dict[str, tuple[bool, float]] = {}

    def changes(self, now: float, members: Iterable[Observed],
                committed: Mapping[str, bool]) -> dict[str, bool | None]:
        """The changes to commit now: True/False verdicts that settled, None to forget."""
        out: dict[str, bool | None] = {}
        known: set[str] = set()
        contradicted = set()
        for obs in members:
            if obs.state is GossipState.DEAD and obs.raft_silent is not None \
                    and obs.raft_silent < self.policy.raft_fresh:
                contradicted.add(obs.node)
            reported = {c.name for c in obs.meta.checks} if obs.meta else set()
            for check in sorted(set(self.checks) | reported):
                key = health_key(obs.node, check)
                known.add(key)
                verdict = self._settled(key, desired(obs, check, self.policy), now, committed)
                if verdict is not None:
                    out[key] = verdict
        for key in set(self._pending) - known:
            del self._pending[key]
        for key in committed:
            if key not in known:
                out[key] = None
        self.contradicted = frozenset(contradicted)
        return out

    def _settled(self, key: str, want: bool | None, now: float,
                 committed: Mapping[str, bool]) -> bool | None:
        if want is None or committed.get(key) is want:
            self._pending.pop(key, None)
            return None
        value, since = self._pending.get(key, (want, now))
        if value is not want:  # flipped while pending: start over
            value, since = want, now
        self._pending[key] = (value, since)
        return want if now - since >= self.settle else None

    def reset(self) -> None:
        """Forget pending changes (on losing leadership: a new term starts from scratch)."""
        self._pending.clear()
