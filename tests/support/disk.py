"""A consensus.disk.Disk that records what it does, in order, and can be told to fail.

    disk = RecordingDisk()                    # one journal
    disk = RecordingDisk(shared, "n2", lock)  # several nodes, one timeline

Each system call is recorded as an Op(op, node, name, data) before it runs (`name` is the
file's name, `data` what a write wrote); `fail[op] = errno` makes that call raise instead.
Tests then assert on the order: a write, then its flush, then the ack that relied on it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import NamedTuple

from hacluster.consensus.disk import Disk


class Op(NamedTuple):
    op: str
    node: str
    name: str
    data: bytes = b""


class RecordingDisk(Disk):
    def __init__(self, ops: list[Op] | None = None, node: str = "", lock: threading.Lock | None = None):
        super().__init__()
        self.ops: list[Op] = [] if ops is None else ops
        self.node = node
        self.lock = lock or threading.Lock()
        self.names: dict[int, str] = {}
        self.fail: dict[str, int] = {}
        self.free = 1 << 30
        self.flush_delay: dict[str, float] = {}  # file name -> s each flush of it takes on top

    def pairs(self) -> list[tuple[str, str]]:
        return [(o.op, o.name) for o in self.ops]

    def record(self, op: str, name: str = "", data: bytes = b"") -> None:
        with self.lock:
            self.ops.append(Op(op, self.node, name, data))

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise OSError(self.fail[op], f"injected {op}")

    def open(self, path: Path, truncate: bool = False) -> int:
        self._maybe_fail("open")
        fd = super().open(path, truncate)
        self.names[fd] = Path(path).name
        return fd

    def write(self, fd: int, data: bytes, offset: int) -> None:
        self._maybe_fail("write")
        self.record("write", self.names[fd], bytes(data))
        super().write(fd, data, offset)

    def allocate(self, fd: int, offset: int, length: int) -> None:
        self._maybe_fail("allocate")
        self.record("allocate", self.names[fd])
        super().allocate(fd, offset, length)

    def flush(self, fd: int) -> None:
        self._maybe_fail("flush")
        self.record("flush", self.names[fd])
        delay = self.flush_delay.get(self.names[fd])
        if delay:  # a slow or busy disk; its end is recorded too ("flushed")
            time.sleep(delay)
        super().flush(fd)
        if delay:
            self.record("flushed", self.names[fd])

    def dup(self, fd: int) -> int:
        new = super().dup(fd)
        self.names[new] = self.names[fd]
        return new

    def flush_path(self, path: Path) -> None:
        self.record("flush_path", Path(path).name)
        super().flush_path(path)

    def replace(self, src: Path, dst: Path) -> None:
        self.record("replace", f"{Path(src).name}>{Path(dst).name}")
        super().replace(src, dst)

    def free_bytes(self, path: Path) -> int:
        return self.free
