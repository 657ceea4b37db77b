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
  `corroborate` seconds (no heartbeat ack) *and* its kernel has not acknowledged our Raft
  traffic for as long (TCP; unknown counts as silent): then the server, not just its
  processes, is gone, and its checks are down at once, without waiting out the suspicion
  timeout nor the settle time (the corroboration window is the filter). The leader has
  gossip probe a member whose acks stop out of turn (health.silence_probe_ms,
  gossip/urgent.py), so for a powered-off server the suspicion is there by the time the
  window ends. Suspicion alone is not a verdict; Lifeguard exists because overloaded
  members get suspected falsely, and pulling their backends on a suspicion is the
  flapping that Consul users complain about. A CPU-starved server's Raft acks come late,
  at 10 % of a CPU up to ~0.6 s apart (bench/starvation.py), more than `corroborate`;
  but its kernel acks our segments within ~0.1 s (delayed ACKs), so it is never down by
  this rule.
- ALIVE: the check's own state; UNKNOWN (not yet `rise`/`fall` results) is no opinion.
  "Up" needs the member to have been alive for `rejoin` seconds: a member back from
  DEAD (a healed partition, a thawed process) first refutes with the check results it had
  before, and a member flapping alive/dead must not flap its backends with it.

Suspect by election (consensus/state.py): a leader elected because its predecessor went
silent has, in its epoch entry, committed that predecessor's checks down and recorded it as
a suspect. Gossip may still call the dead server ALIVE for a while after the election (its
probes take their time), so the ordinary "up" rule would undo the suspicion at once. A
suspect's checks therefore never go up while it is one, and it is back (the next health
command lists it as `rejoined`, then the ordinary rules apply) only when gossip has seen it
ALIVE for `rejoin` seconds counted from no earlier than when this leader first saw the
suspicion, and Raft hears it (a dead server never acks the new leader). A wrongly suspected
member (the old leader lost its leadership but lives: a loop stall, a partition of its
Raft port) is out of service for that long: `rejoin` plus a verdict round.

Keys that no longer exist (a member or a check removed from the config) are forgotten
(committed as null) without waiting.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
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
    tcp_silent: float | None = None  # seconds its kernel left our Raft traffic unacked (None: unknown)


@dataclass(frozen=True)
class Policy:
    rejoin: float = 0.0  # "up" needs the member alive this long
    raft_fresh: float = 0.35  # Raft heard it within this: it is alive (the election max)
    corroborate: float = 0.5  # suspect + Raft and the kernel's TCP acks silent this long: down


def kernel_acks(obs: Observed, within: float) -> bool:
    """Its kernel acknowledged our Raft traffic within `within` seconds: the machine is up,
    only its processes are slow (CPU starvation, swapping). Unknown counts as no."""
    return obs.tcp_silent is not None and obs.tcp_silent < within


def silenced(obs: Observed, policy: Policy) -> bool:
    """Raft and the member's kernel silent for `corroborate`."""
    return obs.raft_silent is not None and obs.raft_silent >= policy.corroborate \
        and not kernel_acks(obs, policy.corroborate)


def corroborated(obs: Observed, policy: Policy) -> bool:
    """SUSPECT in gossip, and Raft and the member's kernel silent for `corroborate`: gone
    (powered off or cut off), not merely slow. Its backends go down; the leader also has
    gossip declare it DEAD at once (gossip/urgent.py)."""
    return obs.state is GossipState.SUSPECT and silenced(obs, policy)


def desired(obs: Observed, check: str, policy: Policy = Policy()) -> bool | None:  # noqa: B008
    """The verdict the view supports for one check, or None for no opinion."""
    silent = obs.raft_silent
    if obs.state is GossipState.LEFT:
        return False
    if obs.state is GossipState.DEAD:
        return None if silent is not None and silent < policy.raft_fresh else False
    if obs.state is GossipState.SUSPECT:
        return False if corroborated(obs, policy) else None
    if obs.meta is None:
        return None
    report = next((c for c in obs.meta.checks if c.name == check), None)
    if report is None or report.state is CheckState.UNKNOWN:
        return None
    if report.state is CheckState.PASSING:
        return True if obs.state_age >= policy.rejoin else None
    return False


def back_from_suspicion(obs: Observed, suspected_for: float, policy: Policy = Policy()) -> bool:  # noqa: B008
    """A member suspected by election is back: ALIVE in gossip for `rejoin`, counted from no
    earlier than the suspicion (`suspected_for` seconds ago), and heard by Raft."""
    return (obs.state is GossipState.ALIVE and min(obs.state_age, suspected_for) >= policy.rejoin
            and obs.raft_silent is not None and obs.raft_silent < policy.raft_fresh)


class VerdictTracker:
    """Remembers, per health key, since when the view has disagreed with the committed value."""

    def __init__(self, checks: Iterable[str], settle: float, policy: Policy = Policy()):  # noqa: B008
        self.checks = tuple(checks)
        self.settle = settle
        self.policy = policy
        self.contradicted: frozenset[NodeId] = frozenset()  # dead in gossip, alive in Raft
        self.rejoined: frozenset[NodeId] = frozenset()  # suspects by election that are back
        self._pending: dict[str, tuple[bool, float]] = {}
        self._suspected_since: dict[NodeId, float] = {}  # when this leader first saw each

    def changes(self, now: float, members: Iterable[Observed], committed: Mapping[str, bool],
                suspects: Collection[NodeId] = ()) -> dict[str, bool | None]:
        """The changes to commit now: True/False verdicts that settled, None to forget.
        Also sets `rejoined`: the `suspects` (by election) to clear now."""
        out: dict[str, bool | None] = {}
        known: set[str] = set()
        contradicted = set()
        members = list(members)
        self.rejoined = self.back(now, members, suspects)
        suspected = set(suspects) - self.rejoined
        for obs in members:
            if obs.state is GossipState.DEAD and obs.raft_silent is not None \
                    and obs.raft_silent < self.policy.raft_fresh:
                contradicted.add(obs.node)
            reported = {c.name for c in obs.meta.checks} if obs.meta else set()
            for check in sorted(set(self.checks) | reported):
                key = health_key(obs.node, check)
                known.add(key)
                want = desired(obs, check, self.policy)
                if want is True and obs.node in suspected:
                    want = None  # not up while suspected by election, whatever gossip says
                # SUSPECT (or DEAD) + Raft and kernel silence is already filtered over
                # corroborate: no settle on top (the leader has gossip declare a corroborated
                # suspect DEAD at once: that must not delay its backends by the settle time)
                settle = 0.0 if want is False and (obs.state is GossipState.SUSPECT or silenced(
                    obs, self.policy)) else self.settle
                verdict = self._settled(key, want, now, committed, settle)
                if verdict is not None:
                    out[key] = verdict
        for key in set(self._pending) - known:
            del self._pending[key]
        for key in committed:
            if key not in known:
                out[key] = None
        self.contradicted = frozenset(contradicted)
        return out

    def _settled(self, key: str, want: bool | None, now: float, committed: Mapping[str, bool],
                 settle: float) -> bool | None:
        if want is None or committed.get(key) is want:
            self._pending.pop(key, None)
            return None
        value, since = self._pending.get(key, (want, now))
        if value is not want:  # flipped while pending: start over
            value, since = want, now
        self._pending[key] = (value, since)
        return want if now - since >= settle else None

    def back(self, now: float, members: Iterable[Observed],
             suspects: Collection[NodeId]) -> frozenset[NodeId]:
        """The suspects by election that are back (back_from_suspicion), or that are no
        member any more (removed from the config: nothing will ever clear them otherwise)."""
        for node in suspects:
            self._suspected_since.setdefault(node, now)
        for node in set(self._suspected_since) - set(suspects):
            del self._suspected_since[node]
        seen = {obs.node: obs for obs in members}
        return frozenset(
            node for node in suspects
            if node not in seen or back_from_suspicion(
                seen[node], now - self._suspected_since[node], self.policy))

    def reset(self) -> None:
        """Forget pending changes (on losing leadership: a new term starts from scratch)."""
        self._pending.clear()
        self._suspected_since.clear()
