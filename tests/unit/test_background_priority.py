"""Background threads (the data plane's worker, the Raft guard's checks) and what they start
yield the CPU to Raft's tick thread: nice +10 for them, none for the rest of the agent."""

from __future__ import annotations

import os
import subprocess
import threading

from hacluster.dataplane.table import Table
from hacluster.dataplane.worker import BACKGROUND_NICE, DataplaneWorker, background_priority
from tests.support.wait import wait_until


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_a_background_thread_and_its_children_are_niced_the_others_not():
    seen: dict[str, int] = {}
    base = _nice(threading.get_native_id())

    def work() -> None:
        background_priority()
        seen["thread"] = _nice(threading.get_native_id())
        child = subprocess.run(["sh", "-c", "cut -d' ' -f19 /proc/self/stat"], capture_output=True,
                               text=True, check=True, timeout=10)
        seen["child"] = int(child.stdout)
    t = threading.Thread(target=work)
    t.start()
    t.join(10)
    want = min(19, base + BACKGROUND_NICE)
    assert seen == {"thread": want, "child": want}
    assert _nice(threading.get_native_id()) == base  # this thread, like Raft's, keeps its own


class _Plane:
    def __init__(self) -> None:
        self.nice: int | None = None
        self.kernel: int | None = None

    def apply(self, table: Table) -> None:
        self.nice = _nice(threading.get_native_id())  # where nft would be started from
        self.kernel = table.generation

    def applied_generation(self) -> int | None:
        return self.kernel


def test_tables_are_applied_from_a_background_thread():
    plane = _Plane()
    w = DataplaneWorker(plane, "fake")
    w.start()
    try:
        w.want(Table(1, ()))
        wait_until(lambda: plane.nice is not None, 5, "the table applied")
    finally:
        w.stop()
    assert plane.nice == min(19, _nice(threading.get_native_id()) + BACKGROUND_NICE)
