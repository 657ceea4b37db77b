"""nftables change notifications (hostops/nftwatch.py) and the data plane worker that reads
the kernel back when told instead of every VERIFY_S (issue 17). The kernel's netlink group
is replaced by a datagram socket pair: a datagram is a change."""

from __future__ import annotations

import errno
import socket
import threading

import pytest

from hacluster.dataplane.table import Table
from hacluster.dataplane.worker import DataplaneWorker
from hacluster.hostops.nftwatch import NftWatch
from tests.support.wait import wait_until


class Kernel:
    """The far end of a fake subscription: send() is a ruleset change."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def subscribe(self) -> socket.socket:
        return self.ours

    def change(self, n: int = 1) -> None:
        for _ in range(n):
            self.theirs.send(b"NFT_MSG_NEWTABLE")


def test_a_change_calls_every_listener_once_per_burst_and_stop_ends_the_thread():
    kernel = Kernel()
    calls: list[str] = []
    told = threading.Event()
    w = NftWatch(kernel.subscribe)
    assert w.working
    w.start([lambda: calls.append("a"), lambda: (calls.append("b"), told.set())])
    try:
        kernel.change(3)
        wait_until(told.is_set, 5, "the listeners told")
        assert calls[:2] == ["a", "b"] and len(calls) <= 6  # a burst: at most one call each per read
    finally:
        w.stop()
    assert not w._thread.is_alive()


def test_lost_messages_count_as_a_change():
    kernel = Kernel()

    class Overflowed:  # the kernel dropped messages: recv says ENOBUFS once
        def __init__(self) -> None:
            self.failed = False

        def fileno(self) -> int:
            return kernel.ours.fileno()

        def setblocking(self, flag: bool) -> None:
            kernel.ours.setblocking(flag)

        def recv(self, n: int) -> bytes:
            if not self.failed:
                self.failed = True
                raise OSError(errno.ENOBUFS, "No buffer space available")
            return kernel.ours.recv(n)

        def close(self) -> None:
            kernel.ours.close()

    told = threading.Event()
    w = NftWatch(Overflowed)
    w.start([told.set])
    try:
        kernel.change()
        wait_until(told.is_set, 5, "told after an overflow")
    finally:
        w.stop()


def test_without_permission_it_says_so_and_starts_nothing(caplog: pytest.LogCaptureFixture):
    def refused() -> socket.socket:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    with caplog.at_level("INFO", "hacluster.hostops.nftwatch"):
        w = NftWatch(refused)
    assert not w.working and "unavailable" in caplog.text
    w.start([lambda: None])
    assert w._thread is None
    w.stop()


def test_nothing_to_tell_no_thread():
    w = NftWatch(Kernel().subscribe)
    w.start([])
    assert w._thread is None and not w.working
    w.stop()


class FakePlane:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.kernel: int | None = None
        self.reads = 0

    def apply(self, table: Table) -> None:
        self.applied.append(table.generation)
        self.kernel = table.generation

    def applied_generation(self) -> int | None:
        self.reads += 1
        return self.kernel


def test_the_worker_reads_the_kernel_back_when_told_not_on_a_period():
    plane = FakePlane()
    w = DataplaneWorker(plane, "nftables", verify_s=60.0)  # the safety look: beyond this test
    w.start()
    try:
        w.want(Table(1, ()))
        wait_until(lambda: w.applied_generation() == 1, 5, "generation 1 applied")
        plane.kernel = None  # `nft flush ruleset`: the kernel lost our table...
        w.kernel_changed()  # ...and said so
        wait_until(lambda: plane.applied == [1, 1], 5, "generation 1 applied again")
        reads = plane.reads
        w.kernel_changed()  # a change elsewhere in the ruleset: one read, nothing to apply
        wait_until(lambda: plane.reads > reads, 5, "the kernel read back")
        assert plane.applied == [1, 1]
    finally:
        w.stop()


def test_a_change_before_any_table_is_wanted_does_not_hold_the_worker():
    # lab: the guard's table, applied at start, was told before the first table was wanted;
    # the worker spun on the flag holding its lock, and the agent loop hung in want()
    plane = FakePlane()
    w = DataplaneWorker(plane, "nftables", verify_s=60.0)
    w.start()
    try:
        w.kernel_changed()
        wait_until(lambda: not w._kernel_changed, 5, "the change taken (nothing to read back yet)")
        threading.Thread(target=w.want, args=(Table(1, ()),), daemon=True).start()
        wait_until(lambda: plane.applied == [1], 5, "generation 1 applied")
        assert plane.reads <= 1  # the one read back of our own apply's change, at most
    finally:
        w.stop()
