"""pysyncobj's journal file format, and what its full dump says about the log (journal.py).

The records are pysyncobj/journal.py's own, so that a data dir carries over from, and back
to, pysyncobj's FileJournal: a header (app name 24 B, app version 8 B, format version 4 B,
offset after the last record 4 B), then records: size, (index, term, command), size.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import struct
import time
from pathlib import Path

from hacluster.consensus.pysyncobj_compat import SUPPORTED_VERSION

log = logging.getLogger("hacluster.journal")

HEADER = struct.Struct("<24s8sII")
END = struct.Struct("<I")
END_AT = 36  # where the header keeps the offset after the last record
FIRST = HEADER.size  # the first record's offset
_SIZE = struct.Struct("<I")
_IDX_TERM = struct.Struct("<QQ")
APP = b"PYSYNCOBJ"
_FORMAT = 1

Entry = tuple[bytes, int, int]  # (command, index, term), as pysyncobj reads them


def record(command: bytes, idx: int, term: int) -> bytes:
    body = _IDX_TERM.pack(idx, term) + command
    size = _SIZE.pack(len(body))
    return size + body + size


def header(end: int) -> bytes:
    return HEADER.pack(APP, SUPPORTED_VERSION.encode(), _FORMAT, end)


def parse(data: bytes, end: int) -> tuple[list[Entry], int]:
    """The whole records from FIRST on, up to `end` at most, with consecutive indexes; and
    the offset where they end (before `end` when a record is cut or out of order)."""
    entries: list[Entry] = []
    off = FIRST
    while off < end:
        size = _SIZE.unpack_from(data, off)[0] if off + 4 <= len(data) else 0
        tail = off + 4 + size
        if size < _IDX_TERM.size or tail + 4 > len(data) or _SIZE.unpack_from(data, tail)[0] != size:
            break
        idx, term = _IDX_TERM.unpack_from(data, off + 4)
        if entries and idx != entries[-1][1] + 1:
            break
        entries.append((data[off + 4 + _IDX_TERM.size:tail], idx, term))
        off = tail + 4
    return entries, off


def dump_anchor(dump: Path | None) -> tuple[Entry, Entry] | None:
    """The last two entries pysyncobj's full dump was taken at, None without a dump.

    Its format (pysyncobj/serializer.py, syncobj.__tryLogCompaction): a gzip'd pickle of
    (state, last applied entry, the entry before it, cluster)."""
    if dump is None or not dump.exists():
        return None
    started = time.monotonic()
    try:
        with gzip.open(dump) as f:
            data = pickle.load(f)
        anchor = (tuple(data[2]), tuple(data[1]))
    except Exception:  # noqa: BLE001 - pysyncobj reports a bad dump itself when it loads it
        return None
    log.debug("Raft journal: dump anchor read in %.1f ms", (time.monotonic() - started) * 1000)
    return anchor  # type: ignore[return-value]
