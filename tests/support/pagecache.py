"""Which pages of a file the kernel still has to write back: a check that data is on disk
without strace (root only: /proc/kpageflags).

The file is mapped read-only in this process, each page faulted in, its page frame read from
/proc/self/pagemap and its flags from /proc/kpageflags: KPF_DIRTY is set while the page
cache holds a change that has not reached the disk, whether it came from write(), pwrite()
or a store into a shared mmap. fdatasync/fsync/msync clear it. On tmpfs nothing is ever
written back: `supported()` says whether the answer means anything for a directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import struct
import subprocess
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PAGE = os.sysconf("SC_PAGE_SIZE")
_KPF_DIRTY = 4
_PRESENT = 1 << 63
_PFN = (1 << 55) - 1


def supported(directory: Path) -> str | None:
    """None when dirty_pages() works for files in `directory`, else why not."""
    if os.geteuid() != 0 or not os.access("/proc/kpageflags", os.R_OK):
        return "needs root and /proc/kpageflags"
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(directory)], capture_output=True,
                        text=True).stdout.strip()
    if fs in ("tmpfs", "ramfs", ""):
        return f"{directory} is on {fs or 'an unknown filesystem'}: nothing is written back"
    return None


def dirty_pages(path: Path) -> list[int]:
    """Indexes of the pages of `path` whose changes are not on disk yet."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        n = (size + PAGE - 1) // PAGE
        if n == 0:
            return []
        addr = _libc.mmap(None, n * PAGE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            dirty = []
            with open("/proc/self/pagemap", "rb") as pagemap, open("/proc/kpageflags", "rb") as flags:
                for i in range(n):
                    ctypes.c_char.from_address(addr + i * PAGE).value  # noqa: B018 - fault it in
                    pagemap.seek((addr + i * PAGE) // PAGE * 8)
                    entry = struct.unpack("<Q", pagemap.read(8))[0]
                    if not entry & _PRESENT:
                        continue
                    flags.seek((entry & _PFN) * 8)
                    if struct.unpack("<Q", flags.read(8))[0] >> _KPF_DIRTY & 1:
                        dirty.append(i)
            return dirty
        finally:
            _libc.munmap(addr, n * PAGE)
    finally:
        os.close(fd)
