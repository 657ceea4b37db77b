"""Applies committed tables to the data plane off the agent's tick thread.

`nft -f` is a subprocess (milliseconds to tens of milliseconds); the tick loop renews the
VIP every 10 ms and must never wait for it. The agent hands over the latest committed
table with want(); this thread applies the newest one it has, skipping generations that
were superseded meanwhile (each table is complete, so only the last one matters), and
retries a failed apply after a pause. A table that fails validation (validate.py) is
refused once, with an ERROR, and never retried: the last good generation stays in force
until a newer one arrives.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from hacluster.dataplane.table import Backend, BackendState, Service, Table
from hacluster.dataplane.validate import table_errors

log = logging.getLogger("hacluster.dataplane")


# How much lower than the agent's own a background thread's CPU priority is (nice steps).
BACKGROUND_NICE = 10


def background_priority() -> None:
    """The calling thread, and every process it starts from now on, yield the CPU to the
    agent's Raft tick thread and loop: nice +BACKGROUND_NICE (Linux keeps nice per thread,
    and a child process or thread inherits its creator's). For threads whose work can wait
    a little and that start nothing long-lived: applying a table (nft, conntrack), the Raft
    guard's checks. (Not the roster: it starts conntrackd pairs, which must keep pace.)
    CI: at a membership change, five agents of a 2-CPU lab each apply a table (`nft -f`,
    ~50 ms of CPU) while the new leader's tick thread must answer within its lease. Raising
    one's own nice needs no privilege; best effort (stays as is where it is refused)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
    except OSError:
        pass


RETRY_S = 1.0
VERIFY_S = 5.0  # how often the kernel's generation is compared with what we applied


class Dataplane(Protocol):
    """What the worker drives: the nftables applier, the userspace proxy, or a test fake."""

    def apply(self, table: Table) -> None: ...

    def applied_generation(self) -> int | None: ...


class DataplaneWorker:
    def __init__(self, dataplane: Dataplane, name: str = "nftables", timings: Any = None,
                 verify_s: float | None = None):
        """timings: a metrics.Timings (apply durations), or None. verify_s: how often the
        kernel's generation is read back; longer when kernel_changed() says when to (the
        agent's nftables change notifications: hostops/nftwatch.py); default VERIFY_S."""
        self.dataplane = dataplane
        self.name = name
        self.timings = timings
        self.verify_s = VERIFY_S if verify_s is None else verify_s
        self._kernel_changed = False
        self.last_error = ""
        self._want: Table | None = None
        self._applied: int | None = None  # what we applied last (cheap to read every tick)
        self._refused: int | None = None  # a generation that failed validation: not retried
        self._good: Table | None = None  # the last table applied
        self._drains = DrainTimer(time.monotonic)
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def want(self, table: Table) -> None:
        with self._cond:
            if self._want is None or table.generation > self._want.generation:
                self._want = table
                self._cond.notify()

    def kernel_changed(self) -> None:
        """The host's nftables ruleset changed (someone's, or ours): read it back now."""
        with self._cond:
            self._kernel_changed = True
            self._cond.notify()

    def wanted_generation(self) -> int | None:
        with self._cond:
            return None if self._want is None else self._want.generation

    def applied_generation(self) -> int | None:
        """The generation this worker applied last (no subprocess: read every tick)."""
        return self._applied

    def backend_counters(self) -> dict[str, tuple[int, int]]:
        """'<service>/<backend id>' -> (packets, bytes), if the data plane counts."""
        counters = getattr(self.dataplane, "backend_counters", None)
        return counters() if counters is not None else {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dataplane", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop applying, and take our rules out: a stopped agent holds no VIP, and a
        table left behind would only surprise whoever comes next (the proxy closes its
        listeners; nftables loses `table inet hacluster`, and the kernel the conntrack
        entries of the flows it balanced with SNAT: see NftApplier.remove)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for name in ("stop", "remove"):
            fn = getattr(self.dataplane, name, None)
            if fn is not None:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - best effort on the way out
                    log.warning("%s: %s failed: %s", self.name, name, e)

    def _flush_due(self) -> None:
        flush = getattr(self.dataplane, "flush_backend", None)
        for svc, b in self._drains.due():
            if flush is None:
                continue
            ok, why = flush(b.address, b.port or None, svc.protocol)
            log.info("%s: %s/%s %s for %d s: established flows %s", self.name, svc.name, b.id,
                     b.state.value, svc.drain_timeout_s if b.state is BackendState.DRAINING else 0,
                     "cut" if ok else f"not cut ({why})")

    def _forget_stale(self, before: Table | None, now: Table) -> None:
        """Backends that left the table or went down: their dead flows' entries go
        (NftApplier.forget_stale), so that a reused source port or a retried SYN is
        balanced by the new table rather than sent where the old entry points."""
        forget = getattr(self.dataplane, "forget_stale", None)
        if forget is None or before is None:
            return
        for svc, b in sorted(out_of_service(before, now)):
            ok, why = forget(b[0], b[1] or None, svc)
            if not ok:
                log.warning("%s: the dead flows to %s:%s stay tracked: %s", self.name, b[0], b[1], why)

    def _verify(self) -> None:
        """Reconcile (STYLE §4): someone flushed our table, or a reboot of nftables lost it?
        Then forget what we applied, and the loop applies the wanted table again."""
        try:
            actual = self.dataplane.applied_generation()
        except Exception as e:  # noqa: BLE001
            log.warning("%s: cannot read the applied generation: %s", self.name, e)
            return
        if actual != self._applied:
            log.warning("%s: found generation %s in the data plane, expected %s: re-applying",
                        self.name, actual, self._applied)
            self._applied = None

    def _next(self) -> Table | None:
        """The table to apply now: the wanted one, or the last good one while the wanted
        one is refused (so a flushed ruleset is repaired with it); None: nothing to do."""
        table = self._want
        if table is not None and table.generation == self._refused:
            table = self._good
        return None if table is None or table.generation == self._applied else table

    def _run(self) -> None:
        background_priority()  # nft and conntrack, started from here, wait for Raft's thread
        while True:
            with self._cond:
                while not self._stop and (table := self._next()) is None:
                    self._flush_due()
                    # (a change told while we applied is not waited for: it is already here)
                    timed_out = not self._kernel_changed and \
                        not self._cond.wait(min(self.verify_s, self._drains.next_in()))
                    changed, self._kernel_changed = self._kernel_changed, False
                    if (timed_out or changed) and self._want is not None:
                        self._verify()
                if self._stop:
                    return
            assert table is not None
            if self._refuse(table):
                continue
            started = time.monotonic()
            try:
                self.dataplane.apply(table)
                if self.timings is not None:
                    self.timings.observe_nft_apply(time.monotonic() - started, ok=True)
                self._applied = table.generation
                before, self._good = self._good, table
                self._drains.update(table)
                self._forget_stale(before, table)
                refused = self._want is not None and self._want.generation == self._refused
                if self.last_error and not refused:  # a refusal stands until a newer table
                    log.warning("%s: applying works again (generation %d)", self.name,
                                table.generation)
                    self.last_error = ""
                log.info("%s: table generation %d applied", self.name, table.generation)
            except Exception as e:  # noqa: BLE001 - any failure: report, retry later
                if self.timings is not None:
                    self.timings.observe_nft_apply(time.monotonic() - started, ok=False)
                if str(e) != self.last_error:
                    log.error("%s: table generation %d not applied: %s", self.name,
                              table.generation, e)
                self.last_error = str(e)
                with self._cond:
                    self._cond.wait(RETRY_S)

    def _refuse(self, table: Table) -> bool:
        """Refuse a table that is not fit to render (names, addresses, ports): Raft
        carried it, so it is the cluster's, but not one the renderer may turn into rules."""
        errors = table_errors(table)
        if not errors:
            return False
        shown = "; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")
        self.last_error = (f"table generation {table.generation} refused, generation "
                           f"{self._applied} stays in force: {shown}")
        log.error("%s: %s", self.name, self.last_error)
        self._refused = table.generation
        return True


def out_of_service(before: Table, now: Table) -> set[tuple[str, tuple[str, int]]]:
    """(protocol, (address, port)) of the backends serving or draining in `before` that
    are gone from `now` or down there (no service keeps them in use)."""
    def flows(table: Table, states: tuple[BackendState, ...]) -> set[tuple[str, tuple[str, int]]]:
        return {(svc.protocol.value, (b.address, b.port)) for svc in table.services
                for b in svc.backends if b.state in states}
    live = (BackendState.ACTIVE, BackendState.DRAINING, BackendState.DISABLED)
    return flows(before, live) - flows(now, live)


class DrainTimer:
    """When to cut the established flows of draining backends (after the service's
    drain_timeout_s) and of disabled ones (at once). Each backend is cut once per spell."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._since: dict[tuple[str, str], tuple[float, Service, Backend, bool]] = {}

    def update(self, table: Table) -> None:
        now = self.clock()
        current = {}
        for svc in table.services:
            for b in svc.backends:
                if b.state in (BackendState.DRAINING, BackendState.DISABLED):
                    key = (svc.name, b.id)
                    old = self._since.get(key)
                    same = old is not None and old[2].state is b.state
                    current[key] = (old[0], svc, b, old[3]) if same and old else (now, svc, b, False)
        self._since = current

    def _deadline(self, since: float, svc: Service, b: Backend) -> float:
        return since + (svc.drain_timeout_s if b.state is BackendState.DRAINING else 0)

    def due(self) -> list[tuple[Service, Backend]]:
        now = self.clock()
        out = []
        for key, (since, svc, b, done) in self._since.items():
            if not done and now >= self._deadline(since, svc, b):
                self._since[key] = (since, svc, b, True)
                out.append((svc, b))
        return out

    def next_in(self) -> float:
        now = self.clock()
        waits = [self._deadline(since, svc, b) - now
                 for since, svc, b, done in self._since.values() if not done]
        return max(0.0, min(waits)) if waits else float("inf")
