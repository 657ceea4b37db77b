"""Lifeguard local health: how much to distrust our own view (memberlist's awareness.go).

A node that is slow itself (CPU starvation, a saturated NIC) sees everyone else as slow and
would accuse healthy members. The score rises when our probes fail or the members we ask
for help do not even answer, and falls on each successful direct probe; probe timeouts and
intervals are multiplied by (score + 1), so a sick node backs off instead of spreading
false suspicions.

Not thread-safe: the membership engine calls it under its own lock.
"""

from __future__ import annotations


class Awareness:
    """A score in [0, max_score]; 0 means healthy."""

    def __init__(self, max_score: int) -> None:
        if max_score < 0:
            raise ValueError(f"awareness max must be >= 0, got {max_score}")
        self._max = max_score
        self._score = 0

    @property
    def score(self) -> int:
        return self._score

    def apply(self, delta: int) -> int:
        """Add `delta` (may be negative), clamped to the bounds; return the new score."""
        self._score = min(self._max, max(0, self._score + delta))
        return self._score

    def scale(self, seconds: float) -> float:
        """A timeout or interval stretched by our own ill health."""
        return seconds * (self._score + 1)
