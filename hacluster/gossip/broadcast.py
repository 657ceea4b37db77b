"""The queue of records waiting to be piggybacked (memberlist's TransmitLimitedQueue).

Invariants: at most one pending record per node (a newer claim about a node replaces the
older one, so stale claims are never spread); each record goes out at most
retransmit_mult * ceil(log10(n + 1)) times, which is enough for epidemic spread to reach
all n members with high probability; the least-sent records go first, newest first among
equals, so fresh news overtakes old news.

Not thread-safe: the membership engine calls it under its own lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hacluster.gossip.types import NodeRecord
from hacluster.model import NodeId


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    return retransmit_mult * math.ceil(math.log10(n + 1))


@dataclass
class _Pending:
    record: NodeRecord
    transmits: int
    seq: int  # queue order: higher is newer


class BroadcastQueue:
    def __init__(self, retransmit_mult: int) -> None:
        self._mult = retransmit_mult
        self._pending: dict[NodeId, _Pending] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def queue(self, record: NodeRecord) -> None:
        """Queue `record` for broadcast, replacing anything pending about the same node."""
        self._seq += 1
        self._pending[record.node] = _Pending(record, 0, self._seq)

    def take(self, limit: int, n: int) -> tuple[NodeRecord, ...]:
        """Up to `limit` records for one message in a cluster of `n` members; each counts
        as transmitted once and is dropped when it reaches its retransmit limit."""
        if limit <= 0 or not self._pending:
            return ()
        cap = max(1, retransmit_limit(self._mult, n))
        chosen = sorted(self._pending.values(), key=lambda p: (p.transmits, -p.seq))[:limit]
        for p in chosen:
            p.transmits += 1
            if p.transmits >= cap:
                del self._pending[p.record.node]
        return tuple(p.record for p in chosen)

    def pending(self) -> dict[NodeId, tuple[NodeRecord, int]]:
        """What is queued and how often each has gone out (for tests and debugging)."""
        return {node: (p.record, p.transmits) for node, p in self._pending.items()}
