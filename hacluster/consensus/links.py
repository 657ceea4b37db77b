"""What RaftNode sends on its links besides pysyncobj's own traffic (a mixin of RaftNode).

* `_ping_idle_links`: hc_ping on the links Raft leaves idle, so that the first election round
  after a crash is not lost to a link pysyncobj's connectionTimeout closed while idle. A
  non-voter pings every OBSERVER_PING_S, not every PING_PERIOD_S: it casts no vote, its
  links only need to outlive connectionTimeout, and at 25 servers the 22 non-voters' pings
  (4 a second each to each follower) doubled the follower voters' CPU.
* `_broadcast`: one of our own messages (pre-vote) to every voter.
* `_paced`: the leader's heartbeats to a non-voting member go out every OBSERVER_PERIOD_S,
  not every heartbeat (issue 17). A non-voter never votes or stands, so pysyncobj's 20
  heartbeats a second to each buy it nothing but CPU: at 25 servers with 3 voters the
  leader sent 480 a second and each non-voter answered 20. Only an empty heartbeat whose
  commit index the member already has is held back: new entries, a snapshot and every new
  commit index go at once, so a non-voter applies what is committed as soon as before.
  The leader still judges a non-voter's silence (ha/leader.py): `observer_silence()` takes
  off the extra gap the pacing allows, so the thresholds mean what they mean for a voter.
"""

from __future__ import annotations

from typing import Any

OBSERVER_PERIOD_S = 0.25  # the longest a non-voter goes without a heartbeat from the leader
PING_PERIOD_S = 0.25  # s between hc_ping on a voter's idle links; well under connectionTimeout
OBSERVER_PING_S = 1.0  # a non-voter's; under connectionTimeout (2 s) still
_FORGET_AFTER = 256  # remembered read-only nodes (connections long closed) before a reset


class Links:
    """RaftNode's sends; RaftNode provides _sync and config."""

    _sync: Any
    config: Any
    readonly: bool
    leader_since: float
    _answered: dict[str, float]
    _paced_at: dict[Any, tuple[float, Any]]  # read-only node -> (sent at, commit index sent)

    def _ping_idle_links(self) -> None:
        """hc_ping only the links that Raft leaves idle: a leader's carry its heartbeats both
        ways, so a leader pings no one and a follower only the other followers."""
        s = self._sync
        if s is None or s.is_leader():
            return
        leader = s.leader_address()
        for node in s.other_nodes():
            if getattr(node, "address", None) != leader:
                s.send(node, {"type": "hc_ping"})

    def _ping_period(self) -> float:
        return OBSERVER_PING_S if self.readonly else PING_PERIOD_S

    def _broadcast(self, message: dict[str, Any]) -> None:
        s = self._sync
        if s is None:
            return
        for node in s.other_nodes():
            s.send(node, dict(message))

    def _paced(self, node: Any, message: dict[str, Any], now: float) -> bool:
        """True: hold this message back (an empty heartbeat to a read-only node, with a
        commit index it has had from us, within OBSERVER_PERIOD_S of the last one)."""
        if node is None or getattr(node, "address", None) is not None \
                or message.get("type") != "append_entries" or message.get("entries") != [] \
                or "transmission" in message or "serialized" in message:
            return False
        commit = message.get("commit_index")
        last = self._paced_at.get(node)
        if last is not None and last[1] == commit and now - last[0] < OBSERVER_PERIOD_S:
            return True
        if len(self._paced_at) >= _FORGET_AFTER:
            self._paced_at = {}
        self._paced_at[node] = (now, commit)
        return False

    def observer_silence(self, member: str, now: float) -> float:
        """Leader: how long non-voter `member` has not answered since we lead, as a voter's
        silence would be: less the gap that pacing allows."""
        age = now - max(self._answered.get(member, 0.0), self.leader_since)
        return max(0.0, age - max(0.0, OBSERVER_PERIOD_S - self.config.timing.heartbeat))
