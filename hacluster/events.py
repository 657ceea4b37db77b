"""The agent's event timeline: what `hacluster events` shows (and `status` summarizes).

Each agent keeps the last CAPACITY events it saw itself, numbered from 1 (`seq`), in
memory: leader changes, VIP claims and releases (with how long the claim took after this
node became leader), health verdicts and table generations as they were committed,
failovers with their measured switch, and admin actions with who asked. Readers ask for
the events after a `seq` they know, or wait for new ones (`--follow`). Nothing here
blocks the tick for long: `add` takes a lock for an append.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

CAPACITY = 1000
KINDS = ("leader", "vip", "health", "table", "failover", "admin", "agent", "members")


@dataclass(frozen=True)
class Event:
    seq: int
    at_unix_ms: float
    node: str
    kind: str  # one of KINDS
    text: str  # one line for people
    fields: dict[str, str] = field(default_factory=dict)  # for scripts (all values as text)


class EventLog:
    def __init__(self, node: str, capacity: int = CAPACITY, wall: Callable[[], float] = time.time):
        self.node = node
        self._wall = wall
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = 0
        self._cond = threading.Condition()

    def add(self, kind: str, text: str, **fields: object) -> Event:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        with self._cond:
            self._seq += 1
            ev = Event(self._seq, round(self._wall() * 1000, 1), self.node, kind, text,
                       {k: _text(v) for k, v in fields.items()})
            self._events.append(ev)
            self._cond.notify_all()
        return ev

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._seq

    def after(self, seq: int, limit: int = CAPACITY) -> list[Event]:
        """Events with seq > `seq`, oldest first, at most `limit` (the newest ones)."""
        with self._cond:
            out = [e for e in self._events if e.seq > seq]
        return out[-limit:] if limit else out

    def wait_after(self, seq: int, timeout: float) -> list[Event]:
        """Like after(), but waits up to `timeout` s for at least one."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seq, timeout)
        return self.after(seq)


def _text(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)
