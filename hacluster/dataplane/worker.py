"""Applies committed tables to the data plane off the agent's tick thread.

`nft -f` is a subprocess (milliseconds to tens of milliseconds); the tick loop renews the
VIP every 10 ms and must never wait for it. The agent hands over the latest committed
table with want(); this thread applies the newest one it has, skipping generations that
were superseded meanwhile (each table is complete, so only the last one matters), and
retries a failed apply after a pause.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from hacluster.dataplane.table import Table

log = logging.getLogger("hacluster.dataplane")

RETRY_S = 1.0


class Dataplane(Protocol):
    """What the worker drives: the nftables applier, the userspace proxy, or a test fake."""

    def apply(self, table: Table) -> None: ...

    def applied_generation(self) -> int | None: ...


class DataplaneWorker:
    def __init__(self, dataplane: Dataplane, name: str = "nftables"):
        self.dataplane = dataplane
        self.name = name
        self.last_error = ""
        self._want: Table | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def want(self, table: Table) -> None:
        with self._cond:
            if self._want is None or table.generation > self._want.generation:
                self._want = table
                self._cond.notify()

    def wanted_generation(self) -> int | None:
        with self._cond:
            return None if self._want is None else self._want.generation

    def applied_generation(self) -> int | None:
        return self.dataplane.applied_generation()

    def backend_counters(self) -> dict[str, tuple[int, int]]:
        """'<service>/<backend id>' -> (packets, bytes), if the data plane counts."""
        counters = getattr(self.dataplane, "backend_counters", None)
        return counters() if counters is not None else {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dataplane", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (self._want is None or
                                          self._want.generation == self.applied_generation()):
                    self._cond.wait()
                if self._stop:
                    return
                table = self._want
            assert table is not None
            try:
                self.dataplane.apply(table)
                if self.last_error:
                    log.warning("%s: applying works again (generation %d)", self.name,
                                table.generation)
                self.last_error = ""
                log.info("%s: table generation %d applied", self.name, table.generation)
            except Exception as e:  # noqa: BLE001 - any failure: report, retry later
                if str(e) != self.last_error:
                    log.error("%s: table generation %d not applied: %s", self.name,
                              table.generation, e)
                self.last_error = str(e)
                with self._cond:
                    self._cond.wait(RETRY_S)
