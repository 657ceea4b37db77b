"""How late followers' heartbeat acks come, as the leader sees them: a periodic log line.

The leader's health verdicts (ha/verdicts.py) take a gossip SUSPECT member down once its Raft
acks have also stopped for `health.corroborate_ms`. Whether that window is safe depends on
how long a live but slow member (CPU-starved, swapping) can stay silent: this module
measures exactly that quantity, the silence the verdict would see just before an ack ends
it (now - the send time of the newest acked heartbeat), and says so in the log at most once
per REPORT_S per leader, only when some ack came after more than `floor` seconds, with the
longest its kernel left our traffic unacknowledged meanwhile (TCP: a starved server's
kernel still acks at once, a dead one's does not). A healthy cluster logs nothing;
bench/starvation.py reads these lines.

Pure bookkeeping on the caller's clock; RaftNode calls it on pysyncobj's tick thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("hacluster.raft")

REPORT_S = 5.0  # at most one line per this many seconds


@dataclass
class _Window:
    longest: float = 0.0
    late: int = 0  # acks that ended a silence longer than the floor


class AckLag:
    def __init__(self, floor: float, corroborate: float):
        self.floor = floor  # silences up to this long are normal (a few heartbeats)
        self.corroborate = corroborate  # for the line: how close the silence came to a verdict
        self._windows: dict[str, _Window] = {}
        self._tcp: dict[str, float] = {}
        self._since: float | None = None

    def ack(self, peer: str, silence: float, now: float) -> None:
        """An ack from `peer` ended `silence` seconds without one."""
        if self._since is None:
            self._since = now
        if silence > self.floor:
            w = self._windows.setdefault(peer, _Window())
            w.longest = max(w.longest, silence)
            w.late += 1
        if now - self._since >= REPORT_S:
            self.report(now)

    def tcp(self, peer: str, silence: float) -> None:
        """How long `peer`'s kernel has left our traffic unacknowledged, read just now."""
        w = self._tcp.get(peer)
        self._tcp[peer] = silence if w is None else max(w, silence)

    def report(self, now: float) -> None:
        for peer, w in sorted(self._windows.items()):
            tcp = self._tcp.get(peer)
            log.info("%s's heartbeat acks lagged: longest silence %.0f ms, %d ack(s) after more "
                     "than %.0f ms in the last %.1f s (health.corroborate_ms %.0f); its kernel's "
                     "TCP acks: %s", peer, w.longest * 1000, w.late, self.floor * 1000,
                     now - (self._since if self._since is not None else now),
                     self.corroborate * 1000,
                     "not read" if tcp is None else f"longest wait {tcp * 1000:.0f} ms")
        self._windows.clear()
        self._tcp.clear()
        self._since = now

    def reset(self, now: float) -> None:
        """Leadership changed: report what the ending one saw, start afresh."""
        if self._windows:
            self.report(now)
        self._since = None


def read_tcp_silence(raft: Any, now: float) -> dict[str, float | None]:
    """Leader (a RaftNode, on its tick thread): how long each peer's kernel has left our
    traffic unacknowledged, for the health verdicts (read here: pysyncobj's thread owns the
    sockets), and only for a peer whose Raft acks are late (the only case the verdicts look
    at it: no system call at all in a healthy cluster). Voters, and the non-voting members
    connected to us (a key for each: raftview tells connected ones by it); a voter's acks are
    its lease acks, a non-voter's the newest heartbeat it answered. A new dict each time:
    view() reads it from the agent's thread."""
    s = raft._sync
    if s is None or not s.is_leader():
        return {}
    out: dict[str, float | None] = {}
    for n in s.other_nodes():
        peer = raft._peer_of(n)
        late = now - raft._acks.get(peer, raft.leader_since) > raft._ack_lag.floor
        out[peer] = s.tcp_silence(n) if late else None
        if out[peer] is not None:
            raft._ack_lag.tcp(peer, out[peer])
    for peer, n in raft.observers().items():
        late = raft.observer_silence(peer, now) > raft._ack_lag.floor  # as a voter's
        out[peer] = s.tcp_silence(n) if late else None
    return out
