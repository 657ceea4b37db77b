"""The background threads of `Membership`: one loop per driven step, with real time.

`Runner` is a mixin of `Membership`. Each step gets its own daemon thread, so a probe
waiting out its timeouts never delays gossip or suspicion expiry; a step that raises is
counted and logged, and its loop goes on. Tests mostly skip this and drive the steps
directly under a fake clock.

Probes, gossip, push-pull and reconnect run on their periods. The two others sleep until
there is work (issue 17: an idle agent must not wake for nothing): the expiry thread until
the earliest suspicion's deadline, woken when a suspicion starts or is confirmed (its
deadline can only move then); the urgent thread until request_probe() or stop().
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hacluster.model import NodeId

if TYPE_CHECKING:
    from hacluster.gossip.membership import GossipTiming

log = logging.getLogger("hacluster.gossip")

# Without a suspicion the expiry thread still looks this often, in case a wake-up was
# missed; with one, it wakes at its deadline (Membership.next_expiry_in).
EXPIRY_IDLE_S = 5.0
STOP_WAIT = 2.0  # stop() waits this long for threads stuck in a transport call


class Runner:
    """start()/stop() for `Membership`, which sets these attributes and has the steps."""

    _id: NodeId
    _timing: GossipTiming
    _lock: threading.Lock
    _rng: random.Random
    _stats: dict[str, int]
    _stop_event: threading.Event
    _threads: list[threading.Thread]
    _joined: bool

    # The driven steps, implemented by Membership.
    probe_once: Callable[[], None]
    gossip_once: Callable[[], None]
    push_pull_once: Callable[[], None]
    reconnect_once: Callable[[], None]
    expire_suspicions: Callable[[], None]
    next_expiry_in: Callable[[float], float]
    probe_urgent: Callable[[], None]
    _urgent_wake: threading.Event
    _expiry_wake: threading.Event
    join: Callable[[], bool]
    probe_delay: Callable[[], float]

    def start(self) -> None:
        """Run the steps on daemon threads with real time: one per step, so a probe waiting
        out its timeouts never delays gossip or suspicion expiry."""
        t = self._timing
        loops: list[tuple[str, Callable[[], None], Callable[[], float]]] = [
            ("probe", self.probe_once, self.probe_delay),
            ("gossip", self.gossip_once, lambda: t.gossip_interval),
            ("push-pull", self._join_then_push_pull, self._push_pull_delay),
            ("reconnect", self.reconnect_once, lambda: t.reconnect_interval),
        ]
        with self._lock:
            if self._threads:
                return
            self._stop_event = stop = threading.Event()
            self._threads = [threading.Thread(target=self._run, args=(name, step, delay, stop),
                                              name=f"gossip-{name}-{self._id}", daemon=True)
                             for name, step, delay in loops]
            # suspicions expire at their deadlines, not on a period
            self._threads.append(threading.Thread(target=self._run_expiry, args=(stop,),
                                                  name=f"gossip-expire-{self._id}", daemon=True))
            # out-of-turn probes (urgent.py): woken by request_probe(), not on a period
            self._threads.append(threading.Thread(target=self._run_woken, args=("urgent", stop),
                                                  name=f"gossip-urgent-{self._id}", daemon=True))
            threads = list(self._threads)
        for thread in threads:
            thread.start()

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
            self._stop_event.set()
        self._expiry_wake.set()  # the event-driven threads: wake them to see the stop
        self._urgent_wake.set()
        deadline = time.monotonic() + STOP_WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.warning("gossip threads still in a transport call after stop: %s", ", ".join(stuck))

    def _join_then_push_pull(self) -> None:
        # The first turn of the push-pull thread joins: a failed join is not fatal, since
        # members that come up later push-pull with us or find us through reconnect.
        if not self._joined:
            self.join()
        else:
            self.push_pull_once()

    def _run(self, name: str, step: Callable[[], None], delay: Callable[[], float],
             stop: threading.Event) -> None:
        while not stop.wait(delay()):
            try:
                step()
            except Exception:
                with self._lock:
                    self._stats["step_errors"] += 1
                log.exception("gossip %s step failed", name)

    def _run_expiry(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._expiry_wake.clear()  # before the look: a suspicion started during it wakes us
            try:
                self.expire_suspicions()
            except Exception:
                with self._lock:
                    self._stats["step_errors"] += 1
                log.exception("gossip expire step failed")
            self._expiry_wake.wait(self.next_expiry_in(EXPIRY_IDLE_S))

    def _run_woken(self, name: str, stop: threading.Event) -> None:
        while not stop.is_set():
            self._urgent_wake.wait()
            self._urgent_wake.clear()
            if stop.is_set():
                return
            try:
                self.probe_urgent()
            except Exception:
                with self._lock:
                    self._stats["step_errors"] += 1
                log.exception("gossip %s step failed", name)

    def _push_pull_delay(self) -> float:
        if not self._joined:
            return 0.0  # join at once
        with self._lock:
            return self._timing.push_pull_interval * self._rng.uniform(0.75, 1.25)
