"""The system calls of the Raft journal (journal.py), named once.

Tests subclass Disk to record the order of writes and flushes or to make them fail
(tests/support/disk.py); the benchmark counts the flushes (bench/commit_latency.py).
"""

from __future__ import annotations

import os
from pathlib import Path


class Disk:
    """The journal's system calls, named once: tests subclass it to record the order of
    writes and flushes or to fail them. fsync=False flushes nothing (the benchmark's
    baseline, pysyncobj's own behaviour); the agent always flushes."""

    def __init__(self, fsync: bool = True):
        self.fsync = fsync

    def open(self, path: Path, truncate: bool = False) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        return os.open(path, flags, 0o600)

    def read(self, fd: int) -> bytes:
        return os.pread(fd, os.fstat(fd).st_size, 0)

    def write(self, fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n

    def allocate(self, fd: int, offset: int, length: int) -> None:
        os.posix_fallocate(fd, offset, length)

    def truncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def flush(self, fd: int) -> None:
        if self.fsync:
            os.fdatasync(fd)

    def dup(self, fd: int) -> int:
        """Another descriptor of the same open file (a flush on another thread closes it)."""
        return os.dup(fd)

    def flush_path(self, path: Path) -> None:
        """fsync a file or a directory (a rename is durable once its directory is)."""
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def free_bytes(self, path: Path) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def close(self, fd: int) -> None:
        os.close(fd)
