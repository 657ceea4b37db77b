"""The one way into the HA loop from another thread: typed requests through a channel.

The loop owns its state; nothing else writes it. A gRPC thread running a failover, the
drained leader's handoff thread, or the signal handler sends a request; the loop takes every
pending request at the start of its next tick (and is woken for it), applies it, runs the
tick, and answers with what the kernel holds afterwards. A request is therefore seen by a
whole tick: no tick that began before it can act on the old intent.
"""

from __future__ import annotations

import os
import select
import threading
import weakref
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
    """Thread-safe: any thread sends, the loop takes. Also the loop's wake-up between ticks.

    The wake-up is a non-blocking pipe: writing one byte takes no lock, so a signal handler
    (which runs on the loop's own thread, maybe inside any lock) may send too, and ends the
    pause at once.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[Request, Reply]] = deque()  # append/popleft are atomic
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._woken = False  # a byte is (or is about to be) in the pipe: skip writing more
        weakref.finalize(self, _close, self._r, self._w)

    def send(self, request: Request) -> Reply:
        """Queue a request and wake the loop (safe from a signal handler)."""
        reply = Reply()
        self._pending.append((request, reply))
        self.wake()
        return reply

    def take(self) -> list[tuple[Request, Reply]]:
        """Every request sent so far, oldest first (the loop, at the start of a tick)."""
        out = []
        while self._pending:
            out.append(self._pending.popleft())
        return out

    def sleep(self, seconds: float) -> bool:
        """The loop's pause between ticks; a request or wake() ends it early (then False)."""
        try:
            ready = select.select([self._r], [], [], max(0.0, seconds))[0]
        except InterruptedError:  # a signal: its handler may have queued a Stop
            ready = [self._r]
        if not ready:
            return True
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        self._woken = False  # after draining: a wake() from now on writes again (at worst
        # one byte too many, one early tick: never a wake-up lost)
        return False

    def wake(self) -> None:
        """End the loop's pause now: something it decides on changed (any thread, or a
        signal handler)."""
        if self._woken:
            return
        self._woken = True
        try:
            os.write(self._w, b"w")
        except BlockingIOError:  # full: the loop wakes anyway
            pass


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
