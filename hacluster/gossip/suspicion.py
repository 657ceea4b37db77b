"""Lifeguard suspicion timeouts that shrink with independent confirmations (memberlist's
suspicion.go).

A suspect member is declared dead when its timeout runs out. The timeout starts at `max`
and falls towards `min` as other members independently report the same suspicion, on a log
scale: the first confirmations count most. With no one to confirm (tiny clusters, k = 0)
the timeout is `min` at once. Unlike memberlist there is no timer here: the engine compares
`deadline()` with its clock in `expire_suspicions()`, which keeps the engine deterministic
under a fake clock.
"""

from __future__ import annotations

import math

from hacluster.model import NodeId


def suspicion_bounds(live: int, mult: int, max_mult: int, probe_interval: float) -> tuple[float, float]:
    """(min, max) timeout in seconds for a cluster with `live` members not dead or left.

    min grows with log10 of the cluster size because a suspicion needs about that many
    gossip rounds to reach everyone, and the suspect must hear of it in time to refute.
    """
    node_scale = max(1.0, math.log10(max(1, live)))
    low = mult * node_scale * probe_interval
    return low, max_mult * low


def expected_confirmations(live: int, mult: int) -> int:
    """k: how many independent confirmations take the timeout down to its minimum."""
    return max(0, min(mult - 2, live - 2))


def timeout_after(confirmations: int, k: int, low: float, high: float) -> float:
    """The suspicion timeout once `confirmations` members (besides the first) agree."""
    if k < 1:
        return low
    frac = math.log(confirmations + 1) / math.log(k + 1)
    return max(low, high - (high - low) * frac)


class Suspicion:
    """One member's suspicion: when it started and who has independently reported it."""

    def __init__(self, started: float, origin: NodeId, k: int, low: float, high: float) -> None:
        self.started = started
        self.k = k
        self.low = low
        self.high = high
        # The first accuser is not a confirmation; it is what is being confirmed.
        self._reporters: set[NodeId] = {origin}

    @property
    def confirmations(self) -> int:
        return len(self._reporters) - 1

    def confirm(self, origin: NodeId) -> bool:
        """Count `origin` once. True when it is new and still shortens the timeout (the
        caller then re-gossips it, so the confirmation reaches the others too)."""
        if self.confirmations >= self.k or origin in self._reporters:
            return False
        self._reporters.add(origin)
        return True

    def timeout(self) -> float:
        return timeout_after(self.confirmations, self.k, self.low, self.high)

    def deadline(self) -> float:
        return self.started + self.timeout()
