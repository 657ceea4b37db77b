"""pysyncobj's Raft journal, on disk for real (DESIGN.md §4; issue 15, findings 3 and 4).

pysyncobj 0.3.17's FileJournal writes the log into a sparse mmap that it never flushes and
stores the term and vote with a rename that it never fsyncs: a power cut can lose a change
the cluster acknowledged, or a vote (two leaders in one term); a full disk kills the process
with SIGBUS at the first write into a page the filesystem cannot back. DurableJournal takes
its place (pysyncobj_compat hands it to SyncObj) and keeps these promises:

* **Nothing is promised before it is on disk.** sync() writes what is pending and flushes it
  with one fdatasync for every entry added since the last one (group commit). raft.py calls
  it before every message that promises entries or a term (`promises`: a follower's
  next_node_idx ack, a vote, a vote request) and on the leader once per tick, before
  pysyncobj counts the leader's own copy towards a commit (diskguard.py). A command is
  thus acknowledged only once a majority holds it on disk.
* **Term and vote are durable before they are acted on.** setCurrentTerm() writes the meta
  (same pickled format as pysyncobj's) into the next meta file, whose space was reserved
  ahead (so that a vote can be stored on a full disk), flushes it, renames it into place
  and fsyncs the directory before it returns; pysyncobj sends the vote right after.
* **A full disk is an error, never a signal.** Records go in with pwrite() into space
  reserved ahead with posix_fallocate (RESERVE bytes past the end). When the disk refuses,
  the entries stay in memory only, `durable` turns False and `full` says why; raft.py then
  withholds every promise and a leader steps down. check() (once a second) notices a disk
  with less than MIN_FREE bytes left before any write fails, and writes what is pending
  once there is room again.
* **A compaction is never half done on disk.** deleteEntriesTo() fsyncs the dump it relies
  on, writes the kept entries to a new file and renames it over the old one; if that fails,
  the journal stays whole (a later compaction tries again). At start, a journal that begins
  before the dump's last two entries (a compaction cut by a crash) is cut to them, so that
  pysyncobj keeps the entries after them instead of clearing the log.

The file formats are pysyncobj's own (its journal records and its `.meta` pickle), so that a
data dir carries over from, and back to, pysyncobj's FileJournal. Threading: pysyncobj's
tick thread calls every method; other threads only read `problem`, `full`, `durable` and
`write_errors` (one field each).
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

from hacluster.consensus.disk import Disk
from hacluster.consensus.journalformat import (
    APP,
    END,
    END_AT,
    FIRST,
    Entry,
    dump_anchor,
    header,
    parse,
    record,
)
from hacluster.consensus.pysyncobj_compat import Journal

log = logging.getLogger("hacluster.journal")

SLOW_FLUSH_S = 0.1  # an fdatasync this long is worth a line: acks wait for it
SLOW_FLUSH_EVERY_S = 10.0  # at most one such line per this long

# Space reserved past the end of the log, so that the next entries are written into blocks
# the filesystem already gave us; regrown when less than LOW_WATER is left. A leader whose
# disk fills keeps writing into it while it hands over (a few thousand entries).
RESERVE = 1 << 20
LOW_WATER = RESERVE // 2
# Less free space than this on the data dir's filesystem is "full": what is left belongs to
# the meta file, the dump and a compaction, not to new entries.
MIN_FREE = 1 << 20
CHECK_S = 1.0  # how often check() looks at the free space and retries what failed
# The next meta file is prepared ahead with this much space (pysyncobj's pickle of term, vote
# and commit index is ~100 bytes): a vote can be stored on a full disk.
META_SPACE = 4096
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DurableJournal(Journal):
    """pysyncobj's Journal interface over a file that is flushed before anything is promised.

    `path`: the journal (its meta is `path` + ".meta", as pysyncobj names it); `dump`:
    pysyncobj's fullDumpFile, flushed before a compaction or a snapshot relies on it."""

    def __init__(self, path: Path, dump: Path | None = None, disk: Disk | None = None):
        self._path = Path(path)
        self.directory = self._path.parent
        self._dump = dump
        self._meta_path = Path(f"{path}.meta")
        self.slow_flushes = 0  # fdatasyncs over SLOW_FLUSH_S (_note_flush)
        self._slow_said = float("-inf")
        self._meta_next = Path(f"{path}.meta.tmp")  # written, flushed, renamed over the meta
        self._disk = disk or Disk()
        self._entries: list[Entry] = []
        self._ends: list[int] = []  # offset after each entry's record
        self._written = 0  # entries [0, _written) are in the file (maybe not flushed)
        self._on_disk_end = FIRST  # the end the file's header says
        self._seq = 0  # counts the writes into the file (a promise needs a flush covering it)
        self._flushed_seq = 0  # the writes a finished flush covered
        self._file_gen = 0  # counts the files (a flush of an older file no longer counts)
        self.durable_index = 0  # the log index of the newest entry a finished flush covered
        self._broken = ""  # why the file can no longer be trusted (a flush failed): rewrite it
        self._dump_dirty = False  # the dump must be flushed before the journal relies on it
        self._allocated = 0
        self._checked = 0.0
        self.full = ""  # why the disk counts as full; "" while it has room
        self.error = ""  # the last failure, for the status problem
        self.write_errors = 0  # failed allocations, writes and flushes since start
        self._meta: dict[str, Any] = self._load_meta()
        self._stored = self._term_vote()  # the term and vote the meta file holds
        self._meta_lazy = False  # the commit index changed since the meta was stored
        self._fd = self._open()
        self._prepare_meta()

    # ------------------------------------------------------------ pysyncobj's interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        command = command if isinstance(command, bytes) else bytes(command, "utf-8")
        self._entries.append((command, idx, term))
        self._ends.append(self._end() + len(command) + 24)
        self._write_pending()

    def clear(self) -> None:
        # pysyncobj clears the log only to load a dump it has just renamed into place (a
        # snapshot from the leader): that dump must be on disk before the journal drops
        # what it replaces.
        self._dump_dirty = True
        self._entries, self._ends, self._written = [], [], 0
        self.durable_index = 0
        if not self._flush_dump():
            self._broken = self.error  # the file keeps the old log until check() rewrites it
        self._write_pending()

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802,N803 (pysyncobj API)
        # Nothing is written here: pysyncobj adds the leader's entries right after (often
        # the very same ones again: it resends after a late ack), and a header moved back
        # on disk in between could lose entries this member already acknowledged. The next
        # add() or sync() writes the header.
        del self._entries[entryFrom:]
        del self._ends[entryFrom:]
        self._written = min(self._written, entryFrom)
        self.durable_index = min(self.durable_index, self.last_index)

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802,N803 (pysyncobj API)
        """Log compaction, right after pysyncobj renamed a new dump into place."""
        self._dump_dirty = True
        if self._rewrite(self._entries[entryTo:]):
            return
        log.error("Raft journal: log compaction not written (%s); the journal stays whole and a "
                  "later compaction tries again", self.error)

    def __getitem__(self, item: int | slice) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.sync()
        if self._meta_lazy:
            self._store_meta()
        self._disk.close(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802,N803
        # No flush here: a follower's commit index acknowledges nothing (the leader's commit
        # rests on the acks, each sent after its flush), and the leader's own entries were
        # flushed by raft.py before pysyncobj could count them (diskguard.py).
        if self._meta.get("raftCommitIndex") != raftCommitIndex:  # pysyncobj sets it per message
            self._meta["raftCommitIndex"] = raftCommitIndex
            self._meta_lazy = True

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return self._meta.get("raftCommitIndex", 1)

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802,N803
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._store_meta()  # on failure, `durable` is False: may_send withholds the vote

    def getCurrentTerm(self) -> int:  # noqa: N802
        return self._meta.get("currentTerm", 0)

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:  # noqa: N802
        """Nothing: the commit index, which no promise needs, rides with the next term and
        vote and the clean stop (_destroy). Stored on its own it cost three flushes on the
        tick thread every second while commands flowed (100-300 ms each on a busy disk in
        the lab: the leader sent no heartbeat meanwhile). After a crash a member starts from
        an older commit index and applies the rest with its first heartbeat."""

    # ------------------------------------------------------------ durability

    @property
    def durable(self) -> bool:
        """Every entry, and the term and vote, are on disk (nothing promised can be lost)."""
        return (not self._broken and self._written == len(self._entries) and self._synced
                and not self._dump_dirty and self._stored == self._term_vote())

    @property
    def problem(self) -> str:
        """What is wrong with the data disk, for `hacluster status`; "" when nothing."""
        # Not `durable`: between an add() and its flush the journal is never durable, and
        # that is no problem. A write that failed (entries left in memory) is.
        in_memory = self._broken or self._written < len(self._entries)
        if self.full:
            writes = ("new entries are in memory only" if in_memory
                      else "entries go into the space reserved ahead")
            return (f"Raft data disk full ({self.directory}): {self.full}; {writes}; this node "
                    "steps down and stands for election last until space is freed")
        if self._broken or (self.error and not self.durable):
            return f"Raft journal not on disk ({self.directory}): {self.error}"
        return ""

    def _note_flush(self, took: float, what: str = "journal") -> None:
        """A slow flush holds this member's acks and votes (they wait for it) and, on the
        tick thread, its heartbeats; a leader's lease counts both: say so (once per
        SLOW_FLUSH_EVERY_S at most)."""
        if took < SLOW_FLUSH_S:
            return
        self.slow_flushes += 1
        now = time.monotonic()
        if now - self._slow_said >= SLOW_FLUSH_EVERY_S:
            self._slow_said = now
            log.warning("Raft %s flush took %.0f ms (%d over %.0f ms so far): this member's "
                        "acks waited for the data disk, and a leader's lease (timing.lease_ms) "
                        "counts them", what, took * 1000, self.slow_flushes, SLOW_FLUSH_S * 1000)

    def sync(self) -> bool:
        """Write and flush everything pending (one fdatasync for all of it); True when
        `durable`. Cheap when nothing changed since the last call."""
        if self._broken:
            return False  # check() rewrites the whole file, once a second at most
        self._write_pending()
        if self._written < len(self._entries) or not self._flush_dump():
            return False
        if not self._synced:
            started, seq, index = time.monotonic(), self._seq, self.last_index
            try:
                self._disk.flush(self._fd)
            except OSError as e:
                self.flushed(self._file_gen, seq, index, 0.0, e)
                return False
            self.flushed(self._file_gen, seq, index, time.monotonic() - started, None)
        if self._stored != self._term_vote() and not self.full:  # while full: check() retries
            self._store_meta()
        return self.durable

    @property
    def _synced(self) -> bool:
        """Everything written is flushed."""
        return self._flushed_seq >= self._seq

    @property
    def seq(self) -> int:
        """The writes so far: a promise made now needs a flush that covers them."""
        return self._seq

    def start_flush(self) -> tuple[int, int, int, int] | None:
        """Write what is pending, then hand out (a duplicate of the file's descriptor, the
        file's generation, the writes and the last log index it covers) for a flush on
        another thread, which closes the descriptor and reports to flushed(). None:
        nothing to flush, or the file cannot be trusted (sync() and check() deal with it)."""
        if self._broken:
            return None
        self._write_pending()
        if self._written < len(self._entries) or self._synced:
            return None
        return self._disk.dup(self._fd), self._file_gen, self._seq, self.last_index

    @property
    def writable(self) -> bool:
        """Every entry is in the file and the file can be trusted (flushed or not)."""
        return not self._broken and self._written == len(self._entries)

    @property
    def last_index(self) -> int:
        """The log index of the newest entry in the file (0: none)."""
        return self._entries[self._written - 1][1] if self._written else 0

    def flushed(self, gen: int, seq: int, index: int, took: float, error: OSError | None) -> None:
        """A flush of file generation `gen` covering `seq` writes (log index `index`)
        ended (tick thread)."""
        if gen != self._file_gen:
            return  # that file was replaced (the new one was flushed before the rename)
        if error is not None:
            # After a failed fdatasync the kernel may have dropped the pages it could not
            # write: only a new file written from memory can be trusted again.
            self._failed("flush the journal (fdatasync)", error)
            self._broken = self.error
            return
        self._note_flush(took)
        self._flushed_seq = max(self._flushed_seq, seq)
        self.durable_index = max(self.durable_index, index)

    def durable_upto(self, seq: int) -> bool:
        """What was promised after `seq` writes is on disk (entries, dump, term and vote)."""
        return (not self._broken and self._flushed_seq >= seq and self._written == len(self._entries)
                and not self._dump_dirty and self._stored == self._term_vote())

    @staticmethod
    def promises(message: dict[str, Any]) -> bool:
        """The message promises what this member holds: an ack of entries, a vote, a vote
        request (Raft's rule: persist, then answer)."""
        kind = message.get("type")
        return kind in ("request_vote", "response_vote") or (kind == "next_node_idx"
                                                              and bool(message.get("success")))

    @property
    def dirty(self) -> bool:
        """sync() has something to write or flush."""
        return (not self._synced or self._written < len(self._entries) or self._dump_dirty
                or self._stored != self._term_vote())

    def may_send(self, message: dict[str, Any]) -> bool:
        """False for a message that promises what is not on disk, after trying to flush it."""
        return not self.promises(message) or self.sync()

    def check(self, now: float) -> None:
        """Once every CHECK_S (the tick thread calls it each tick): count the disk as full
        when little is left on it, and when there is room again, write what is pending."""
        if now - self._checked < CHECK_S:
            return
        self._checked = now
        try:
            free = self._disk.free_bytes(self.directory)
        except OSError:
            free = MIN_FREE
        if free < MIN_FREE:
            self._set_full(f"{free // 1024} KiB free, the journal needs {MIN_FREE // 1024} KiB")
            return
        if not self.full and (self.durable or not self.error):
            if self.durable:
                self.error = ""  # a failure since put right (a vote stored at the next try)
            return  # (not durable and no error: a flush runs, as it should)
        if self._broken and not self._rewrite(self._entries):
            return
        try:
            self._reserve(self._end(), force=True)
        except OSError as e:
            self._failed("reserve journal space (posix_fallocate)", e)
            return
        if self._stored != self._term_vote() and not self._store_meta():
            return
        if self.sync():
            if self.full or self.error:
                log.warning("Raft journal: the data disk (%s) has room again; every entry is "
                            "on disk", self.directory)
            self.full = self.error = ""

    # ------------------------------------------------------------ files

    def _end(self) -> int:
        return self._ends[-1] if self._ends else FIRST

    def _term_vote(self) -> tuple[Any, Any]:
        return self._meta.get("currentTerm", 0), self._meta.get("votedForNodeId")

    def _open(self) -> int:
        fresh = not self._path.exists()
        fd = self._disk.open(self._path)
        data = b"" if fresh else self._disk.read(fd)
        if not data.strip(b"\0"):  # new, or created by a start that did not get further
            self._disk.write(fd, header(FIRST), 0)
            self._reserve_on(fd, FIRST)
            self._disk.flush(fd)
            self._disk.flush_path(self.directory)
            return fd
        if not data.startswith(APP):
            self._disk.close(fd)
            raise ValueError(f"{self._path} is not a pysyncobj journal (move it away to start "
                             "this member from its peers' copy)")
        self._on_disk_end = END.unpack_from(data, END_AT)[0]
        self._entries, off = parse(data, self._on_disk_end)
        if off != self._on_disk_end:
            log.warning("Raft journal %s: records end at byte %d, its header says %d (a write "
                        "cut by a crash before it was acknowledged): the rest is ignored",
                        self._path, off, self._on_disk_end)
        self._ends = []
        for command, _idx, _term in self._entries:
            self._ends.append(self._end() + len(command) + 24)
        self._written = len(self._entries)
        self._fd = fd
        self._align_with_dump()
        self._reserve_on(self._fd, self._end())  # also fills the holes a sparse (mmap) journal has
        self._write_pending()  # a header cut by a crash points to the last whole record
        self._seq += 1  # flushed once at start, whatever was written
        self.sync()
        return self._fd

    def _align_with_dump(self) -> None:
        """Start the log at the dump's last two entries when it holds them further on (a
        compaction that a crash cut between the dump and the journal): pysyncobj would
        otherwise clear the log, entries after the dump included."""
        anchor = dump_anchor(self._dump)
        if anchor is None or self._entries[:2] == list(anchor):
            return
        for i in range(1, len(self._entries) - 1):
            if (self._entries[i], self._entries[i + 1]) == anchor:
                log.warning("Raft journal %s: starts %d entries before the dump (a compaction "
                            "cut short): cut to the dump", self._path, i)
                if not self._rewrite(self._entries[i:]):
                    self._entries = self._entries[i:]  # in memory; check() writes it
                    self._broken = self.error
                return

    def _reserve_on(self, fd: int, end: int) -> None:
        """At start: reserve [0, end + RESERVE); on a full disk, start anyway (full)."""
        try:
            self._disk.allocate(fd, 0, end + RESERVE)
            self._allocated = end + RESERVE
        except OSError as e:
            if e.errno not in _FULL:
                raise
            self._failed("reserve journal space (posix_fallocate)", e)

    def _reserve(self, end: int, force: bool = False) -> None:
        """Make sure blocks up to `end` exist; grow the reservation when it runs low.
        Raises OSError when `end` itself cannot be had."""
        if end + LOW_WATER <= self._allocated or (self.full and not force and end <= self._allocated):
            return
        if self.full and not force:  # check() retries once a second, not every write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        try:
            self._disk.allocate(self._fd, self._allocated, end + RESERVE - self._allocated)
            self._allocated = end + RESERVE
        except OSError as e:
            if e.errno not in _FULL or end > self._allocated:
                raise
            self._failed("grow the journal's reserved space (posix_fallocate)", e)

    def _write_pending(self) -> None:
        """pwrite the entries not yet in the file, then the header's end (not flushed)."""
        end = self._end()
        if self._broken or (self._written == len(self._entries) and self._on_disk_end == end):
            return
        start = self._ends[self._written - 1] if self._written else FIRST
        data = b"".join(record(*e) for e in self._entries[self._written:])
        try:
            self._reserve(end)
            if data:
                self._disk.write(self._fd, data, start)
            self._disk.write(self._fd, END.pack(end), END_AT)
        except OSError as e:
            if not self.full or e.errno not in _FULL:  # while full: counted once, not per entry
                self._failed("write the journal", e)
            return
        self._written, self._on_disk_end = len(self._entries), end
        self._seq += 1

    def _rewrite(self, entries: list[Entry]) -> bool:
        """Replace the file by one holding `entries`: the dump flushed first (the new file
        may rely on it), the new file written and flushed before the rename."""
        if not self._flush_dump():
            return False
        tmp = self._path.with_name(self._path.name + ".tmp")
        records = b"".join(record(*e) for e in entries)
        end = FIRST + len(records)
        try:
            fd = self._disk.open(tmp, truncate=True)
        except OSError as e:
            self._failed("write a new journal file", e)
            return False
        try:
            try:
                self._disk.allocate(fd, 0, end + RESERVE)
                allocated = end + RESERVE
            except OSError as e:
                if e.errno not in _FULL:
                    raise
                self._disk.allocate(fd, 0, end)
                allocated = end
            self._disk.write(fd, header(end) + records, 0)
            self._disk.flush(fd)
            self._disk.replace(tmp, self._path)
        except OSError as e:
            self._disk.close(fd)
            tmp.unlink(missing_ok=True)  # give its blocks back
            self._failed("write a new journal file", e)
            return False
        # The new file is in place: from here on it is the journal, whatever happens next.
        self._disk.close(self._fd)
        self._fd, self._allocated = fd, allocated
        self._entries = list(entries)
        self._ends = []
        for command, _idx, _term in self._entries:
            self._ends.append(self._end() + len(command) + 24)
        self._written, self._on_disk_end, self._broken = len(entries), end, ""
        self._file_gen += 1
        self._seq += 1
        self._flushed_seq = self._seq
        self.durable_index = self.last_index
        try:
            self._disk.flush_path(self.directory)
        except OSError as e:  # the rename may not be durable yet: check() writes it again
            self._failed("flush the data directory", e)
            self._broken = self.error
            return False
        return True

    def _flush_dump(self) -> bool:
        if not self._dump_dirty:
            return True
        try:
            if self._dump is not None and self._dump.exists():
                self._disk.flush_path(self._dump)
            self._disk.flush_path(self.directory)
        except OSError as e:
            self._failed("flush the full dump", e)
            return False
        self._dump_dirty = False
        return True

    def _load_meta(self) -> dict[str, Any]:
        try:
            data = self._meta_path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            meta = pickle.loads(data)
            assert isinstance(meta, dict)
            return meta
        except Exception:  # noqa: BLE001 - whatever the file holds, say so and start from 0
            log.error("Raft journal: %s is unreadable: starting with term 0 and no vote",
                      self._meta_path)
            return {}

    def _prepare_meta(self) -> None:
        """Reserve the space of the next meta file, so that storing a vote needs no new
        block: the rename of each meta file frees the previous one's for the next."""
        try:
            fd = self._disk.open(self._meta_next)
            try:
                self._disk.allocate(fd, 0, META_SPACE)
            finally:
                self._disk.close(fd)
        except OSError as e:
            if e.errno not in _FULL:
                self._failed("prepare the next meta file", e)
            # on a full disk: the next store tries to allocate it again

    def _store_meta(self) -> bool:
        """Term, vote and commit index in pysyncobj's format: written into the prepared
        file, flushed, renamed over the meta file, and the rename flushed (the directory)
        before this returns True."""
        data = pickle.dumps(self._meta, protocol=2)
        term_vote = self._term_vote()
        started = time.monotonic()
        try:
            fd = self._disk.open(self._meta_next)
            try:
                self._disk.write(fd, data, 0)
                self._disk.truncate(fd, len(data))  # within its first block: frees nothing
                self._disk.flush(fd)
            finally:
                self._disk.close(fd)
            self._disk.replace(self._meta_next, self._meta_path)
            self._disk.flush_path(self.directory)
        except OSError as e:
            self._failed("store the term and vote", e)
            return False
        self._stored, self._meta_lazy = term_vote, False
        self._prepare_meta()
        self._note_flush(time.monotonic() - started, "meta")
        return True

    def _set_full(self, why: str) -> None:
        if not self.full:
            log.error("Raft journal: the data disk (%s) is full: %s", self.directory, why)
        self.full = why

    def _failed(self, what: str, e: OSError) -> None:
        self.write_errors += 1
        error = f"could not {what}: {e.strerror or e}"
        if e.errno in _FULL:
            self._set_full(error)
        if error != self.error:  # once per distinct error, not once per attempt
            log.error("Raft journal %s: %s", self._path, error)
        self.error = error
