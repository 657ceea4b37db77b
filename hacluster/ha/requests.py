"""The one way into the HA loop from another thread: typed requests through a channel.

The loop owns its state; nothing else writes it. A gRPC thread running a failover, the
drained leader's handoff thread, or the signal handler sends a request; the loop takes every
pending request at the start of its next tick (and is woken for it), applies it, runs the
tick, and answers with what the kernel holds afterwards. A request is therefore seen by a
whole tick: no tick that began before it can act on the old intent.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class HoldNothing:
    """Release every VIP and claim none (on=True) until the same request with on=False:
    a failover is moving the VIPs and leadership away from this node."""

    on: bool


@dataclass(frozen=True)
class Stop:
    """End the loop (SIGTERM, SIGINT): the daemon then releases and hands leadership over."""


Request = HoldNothing | Stop


@dataclass(frozen=True)
class TickReport:
    """What a tick that applied a request left behind."""

    vips_present: tuple[str, ...]  # addresses the kernel still has here (unknown counts as held)
    sentence: str


class Reply:
    """The answer to one request: the report of the first tick that applied it."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._report: TickReport | None = None

    def wait(self, timeout: float) -> TickReport | None:
        """The report, or None if no tick applied the request within `timeout` s."""
        return self._report if self._done.wait(timeout) else None

    def deliver(self, report: TickReport) -> None:
        self._report = report
        self._done.set()


class Channel:
    """Thread-safe: any thread sends, the loop takes. Also the loop's wake-up between ticks."""

    def __init__(self) -> None:
        self._pending: deque[tuple[Request, Reply]] = deque()  # append/popleft are atomic
        self._wake = threading.Event()

    def send(self, request: Request, wake: bool = True) -> Reply:
        """Queue a request. wake=False from a signal handler: it runs on the loop's own
        thread, which may be inside the wake event's lock (a non-reentrant lock: setting it
        there could deadlock); the loop then sees the request within one tick."""
        reply = Reply()
        self._pending.append((request, reply))
        if wake:
            self._wake.set()
        return reply

    def take(self) -> list[tuple[Request, Reply]]:
        """Every request sent so far, oldest first (the loop, at the start of a tick)."""
        self._wake.clear()
        out = []
        while self._pending:
            out.append(self._pending.popleft())
        return out

    def sleep(self, seconds: float) -> None:
        """The loop's pause between ticks; a request ends it early."""
        self._wake.wait(seconds)
