"""Feeds this node's own news into gossip: check results, load, draining flag, version.

Check state changes are pushed at once (HealthRunner's on_change, then one gossip round
right away). Every other change is not news: a new meta bumps meta_seq, and every member
is then due our record from us (gossip sends it to all of them, a few per round), which at
25 servers made gossip bytes grow with N (bench/scale.py). So the load is read on a slow
timer, rounded, and only a move of LOAD_STEP points goes out; a check's latency rides along
with real news; both go out anyway every REFRESH_MAX_S.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hacluster.gossip.types import NodeMeta
from hacluster.gossip.wire import MAX_TEXT
from hacluster.model import CheckReport, Load

log = logging.getLogger("hacluster.gossip")

LOAD_REFRESH_S = 5.0
LOAD_STEP = 25  # percentage points of CPU or memory: a smaller move is not news (display only)
REFRESH_MAX_S = 60.0  # latencies and small load moves are published at least this often


class HealthFeed:
    def __init__(self, membership: Any, reports: Callable[[], tuple[CheckReport, ...]],
                 load: Callable[[], Load], draining: Callable[[], bool], version: str,
                 load_refresh: float = LOAD_REFRESH_S, clock: Callable[[], float] = time.monotonic):
        self._membership = membership
        self._clock = clock
        self._sent: NodeMeta | None = None  # what we last handed to the engine
        self._sent_at = 0.0
        self._reports = reports
        self._load = load
        self._draining = draining
        self._version = version
        self._refresh = load_refresh
        self._last_load = Load()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, load: Load | None = None) -> NodeMeta:
        """Hand the current meta to the membership engine when it holds news (a check's
        state or error, draining, version, a load move of LOAD_STEP), or REFRESH_MAX_S
        after the last time; returns what the engine holds from us."""
        with self._lock:
            now = self._clock()
            due = self._sent is None or now - self._sent_at >= REFRESH_MAX_S
            if load is not None:
                rounded = Load(round(load.cpu_percent), round(load.mem_percent))
                last = self._last_load
                if due or max(abs(rounded.cpu_percent - last.cpu_percent),
                              abs(rounded.mem_percent - last.mem_percent)) >= LOAD_STEP:
                    self._last_load = rounded
            meta = NodeMeta(checks=tuple(_as_on_the_wire(c) for c in self._reports()),
                            load=self._last_load,
                            draining=self._draining(), version=self._version)
            if not due and self._sent is not None and _news(meta) == _news(self._sent):
                return self._sent
            self._membership.set_meta(meta)
            self._sent, self._sent_at = meta, now
            return meta

    def checks_changed(self, _reports: tuple[CheckReport, ...] = ()) -> None:
        """HealthRunner's on_change: publish from our own thread, not the runner's."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="health-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        woke = False  # the first round publishes everything, with the load
        while not self._stop.is_set():
            try:
                self.publish(None if woke else self._load())
                if woke:
                    # A check changed state: send it now rather than at the next gossip
                    # round or probe; the balancing view waits on this news.
                    self._membership.gossip_once()
            except Exception:  # the feed must keep going; the next round retries
                log.exception("publishing this node's health to gossip failed")
            woke = self._wake.wait(self._refresh)
            self._wake.clear()


def _as_on_the_wire(c: CheckReport) -> CheckReport:
    """The report as peers will receive it (texts cut to wire.MAX_TEXT).

    Our own record must equal the copy that comes back to us through gossip: a node that
    sees "its own" record differ from what it holds takes it for a stale record of an
    earlier run and refutes it, again and again.
    """
    n = MAX_TEXT
    if len(c.target) <= n and len(c.error) <= n and len(c.output) <= n:
        return c
    return replace(c, target=c.target[:n], error=c.error[:n], output=c.output[:n])


def _news(meta: NodeMeta) -> NodeMeta:
    """The meta without what is no news on its own (each check's last latency)."""
    return replace(meta, checks=tuple(replace(c, latency_ms=None) for c in meta.checks))
