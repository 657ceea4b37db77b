"""DurableJournal on its own: pysyncobj's file formats, flushed before anything is promised,
a full or failing disk as a state (never a signal), a crash's leftovers read back sanely.

Files under tmp_path; the system calls go through consensus.disk.Disk, which tests/support/disk.py's
RecordingDisk records (the order of writes and flushes) and fails (ENOSPC, EIO) without a
full filesystem. The
tests with a really full filesystem and a real cluster are in test_raft_durability.py and
tests/lab/test_disk_full.py.
"""

from __future__ import annotations

import errno
import gzip
import pickle
import struct
from pathlib import Path

import pytest

from hacluster.consensus import journal as jmod
from hacluster.consensus.disk import Disk
from hacluster.consensus.journal import FIRST, DurableJournal
from tests.support.disk import RecordingDisk


def entries(n: int, start: int = 1, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(f"command {i}".encode(), i, term) for i in range(start, start + n)]


@pytest.fixture
def disk() -> RecordingDisk:
    return RecordingDisk()


def open_journal(tmp_path: Path, disk: Disk | None = None) -> DurableJournal:
    return DurableJournal(tmp_path / "raft.journal", tmp_path / "raft.dump", disk or RecordingDisk())


# ---------------------------------------------------------------- pysyncobj's formats


def test_pysyncobj_reads_what_the_journal_writes_and_the_other_way_round(tmp_path):
    from pysyncobj.journal import FileJournal

    j = open_journal(tmp_path)
    for e in entries(50):
        j.add(*e)
    j.setCurrentTerm(3, "10.0.0.12:7100")
    j.setRaftCommitIndex(40)
    j._destroy()
    theirs = FileJournal(str(tmp_path / "raft.journal"))
    assert [theirs[i] for i in range(len(theirs))] == entries(50)
    assert (theirs.getCurrentTerm(), theirs.getVotedForNodeId(), theirs.getRaftCommitIndex()) == \
        (3, "10.0.0.12:7100", 40)
    theirs.add(b"from pysyncobj", 51, 2)  # into its sparse mmap, as before the fix
    theirs.setCurrentTerm(4, None)
    theirs._destroy()

    again = open_journal(tmp_path)
    assert again[:] == [*entries(50), (b"from pysyncobj", 51, 2)]
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (4, None)
    assert again.durable and not again.problem


def test_a_new_journal_is_on_disk_with_its_directory_before_it_is_used(tmp_path, disk):
    open_journal(tmp_path, disk)
    assert disk.pairs() == [("write", "raft.journal"), ("allocate", "raft.journal"),
                            ("flush", "raft.journal"), ("flush_path", tmp_path.name),
                            ("allocate", "raft.journal.meta.tmp")]  # the next meta's space


# ---------------------------------------------------------------- flushed before promised


def test_entries_are_written_at_once_and_flushed_together_by_sync(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    disk.ops.clear()
    for e in entries(5):
        j.add(*e)
    assert not j.durable and j.problem == ""  # written, not flushed yet: the normal state
    assert ("flush", "raft.journal") not in disk.pairs()
    assert j.sync() and j.durable
    assert disk.pairs().count(("flush", "raft.journal")) == 1  # one fdatasync for the five
    n = len(disk.ops)
    assert j.sync() and len(disk.ops) == n  # nothing new: no system call


def test_the_commit_index_rides_with_the_term_and_the_clean_stop_never_alone(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    j.add(*entries(1)[0])
    assert j.sync()
    disk.ops.clear()
    j.setRaftCommitIndex(1)  # a follower learns it with every heartbeat: no system call
    j.onOneSecondTimer()  # nor a second later: three flushes on the tick thread
    assert disk.ops == []
    j.setCurrentTerm(2, None)
    assert pickle.loads((tmp_path / "raft.journal.meta").read_bytes())["raftCommitIndex"] == 1
    j.setRaftCommitIndex(2)
    j._destroy()
    assert pickle.loads((tmp_path / "raft.journal.meta").read_bytes())["raftCommitIndex"] == 2


def test_term_and_vote_are_flushed_renamed_and_the_rename_flushed_before_returning(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    disk.ops.clear()
    j.setCurrentTerm(7, "n2")
    assert disk.pairs() == [("write", "raft.journal.meta.tmp"), ("flush", "raft.journal.meta.tmp"),
                            ("replace", "raft.journal.meta.tmp>raft.journal.meta"),
                            ("flush_path", tmp_path.name),
                            ("allocate", "raft.journal.meta.tmp")]  # the next one's space
    assert pickle.loads((tmp_path / "raft.journal.meta").read_bytes())["votedForNodeId"] == "n2"


@pytest.mark.parametrize(("message", "promise"), [
    ({"type": "next_node_idx", "success": True}, True),
    ({"type": "response_vote", "term": 2}, True),
    ({"type": "request_vote", "term": 2}, True),
    ({"type": "next_node_idx", "success": False, "reset": True}, False),
    ({"type": "append_entries", "term": 2}, False),
])
def test_a_message_that_promises_waits_for_the_disk(tmp_path, disk, message, promise):
    j = open_journal(tmp_path, disk)
    j.add(*entries(1)[0])
    assert j.may_send(message)
    assert j.durable is promise  # a promise flushed the entry first; the others left it
    disk.fail["flush"] = errno.EIO
    j.add(*entries(1, start=2)[0])
    assert j.may_send(message) is not promise


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_fills_the_reserve_then_keeps_entries_in_memory_until_room_returns(
        tmp_path, disk, monkeypatch):
    monkeypatch.setattr(jmod, "RESERVE", 4096)
    monkeypatch.setattr(jmod, "LOW_WATER", 2048)
    j = open_journal(tmp_path, disk)
    disk.fail["allocate"] = errno.ENOSPC
    big = b"x" * 1000  # a record of 1024 bytes: the reservation holds four
    for i in range(1, 4):  # the third goes past the low water: the reservation cannot grow
        j.add(big, i, 1)
    assert "injected allocate" in j.full and j.write_errors == 1
    j.add(big, 4, 1)  # still fits: written, and no new attempt to allocate
    assert j.sync() and j.durable and j.write_errors == 1
    assert "space reserved ahead" in j.problem
    for i in range(5, 8):  # past the reservation: memory only, no promise possible
        j.add(big, i, 1)
    assert not j.sync() and not j.durable
    assert not j.may_send({"type": "next_node_idx", "success": True})
    assert "in memory only" in j.problem and len(j) == 7
    j.check(100.0)  # the disk still refuses
    assert not j.durable
    del disk.fail["allocate"]
    j.check(100.5)  # at most once a second
    assert not j.durable
    j.check(101.0)
    assert j.durable and not j.full and not j.problem
    j._destroy()
    assert open_journal(tmp_path)[:] == [(big, i, 1) for i in range(1, 8)]


def test_little_free_space_counts_as_full_before_any_write_fails(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    disk.free = 100 * 1024
    j.check(10.0)
    assert j.full == "100 KiB free, the journal needs 1024 KiB" and j.durable
    disk.free = 1 << 30
    j.check(11.0)
    assert not j.full and not j.problem


def test_a_failed_flush_is_never_retried_on_the_same_file(tmp_path, disk):
    """After a failed fdatasync the kernel may have dropped the pages it could not write, and
    a second fdatasync may then succeed: only a new file written from memory is trusted."""
    j = open_journal(tmp_path, disk)
    for e in entries(3):
        j.add(*e)
    disk.fail["flush"] = errno.EIO
    assert not j.sync() and "fdatasync" in j.problem and j.write_errors == 1
    del disk.fail["flush"]
    assert not j.sync()  # not the same file again
    disk.ops.clear()
    j.check(50.0)
    assert ("replace", "raft.journal.tmp>raft.journal") in disk.pairs()
    assert j.durable and not j.problem
    j._destroy()
    assert open_journal(tmp_path)[:] == entries(3)


def test_a_vote_that_cannot_be_stored_is_not_sent(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    disk.fail["open"] = errno.ENOSPC
    j.setCurrentTerm(5, "n3")
    assert j.getCurrentTerm() == 5  # pysyncobj's view: it will not vote twice in term 5
    assert not j.may_send({"type": "response_vote", "term": 5})
    del disk.fail["open"]
    assert not j.may_send({"type": "response_vote", "term": 5})  # while full: not per message
    j.check(10.0)  # once a second, it tries again
    assert j.may_send({"type": "response_vote", "term": 5})  # stored now, then sent
    assert pickle.loads((tmp_path / "raft.journal.meta").read_bytes())["votedForNodeId"] == "n3"


def test_a_vote_is_stored_on_a_full_disk_into_the_space_prepared_for_it(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    disk.fail["allocate"] = errno.ENOSPC  # nothing new can be had from now on
    j.setCurrentTerm(6, "n2")
    assert j.may_send({"type": "response_vote", "term": 6}) and j.write_errors == 0
    meta = pickle.loads((tmp_path / "raft.journal.meta").read_bytes())
    assert (meta["currentTerm"], meta["votedForNodeId"]) == (6, "n2")


# ---------------------------------------------------------------- compaction and crashes


def _dump(path: Path, before_last: tuple[bytes, int, int], last: tuple[bytes, int, int]) -> None:
    with gzip.open(path, "wb") as f:
        pickle.dump(({"state": 1}, last, before_last, set()), f)


def test_a_compaction_flushes_the_dump_then_renames_a_new_journal_in(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    for e in entries(10):
        j.add(*e)
    assert j.sync()
    _dump(tmp_path / "raft.dump", entries(1, 7)[0], entries(1, 8)[0])
    disk.ops.clear()
    j.deleteEntriesTo(6)  # keep from index 7 on
    ops = disk.pairs()
    flushed = ops.index(("flush", "raft.journal.tmp"))
    assert ops.index(("flush_path", "raft.dump")) < flushed \
        < ops.index(("replace", "raft.journal.tmp>raft.journal")) \
        < ops.index(("flush_path", tmp_path.name), flushed)
    assert j[:] == entries(4, 7) and j.durable
    j._destroy()
    assert open_journal(tmp_path)[:] == entries(4, 7)


def test_a_compaction_that_cannot_be_written_keeps_the_journal_whole(tmp_path, disk):
    j = open_journal(tmp_path, disk)
    for e in entries(10):
        j.add(*e)
    disk.fail["open"] = errno.ENOSPC
    j.deleteEntriesTo(6)
    assert j[:] == entries(10) and j.write_errors == 1
    assert not (tmp_path / "raft.journal.tmp").exists()


def test_a_journal_older_than_its_dump_starts_at_the_dump(tmp_path):
    """A crash between pysyncobj's dump and the compaction of the journal: pysyncobj would
    clear the log (entries after the dump included); the journal starts at the dump instead."""
    j = open_journal(tmp_path)
    for e in entries(10):
        j.add(*e)
    j._destroy()
    _dump(tmp_path / "raft.dump", entries(1, 5)[0], entries(1, 6)[0])
    assert open_journal(tmp_path)[:] == entries(6, 5)


def test_a_record_cut_by_a_crash_is_dropped_with_everything_after_it(tmp_path, caplog):
    j = open_journal(tmp_path)
    for e in entries(4):
        j.add(*e)
    j._destroy()
    path = tmp_path / "raft.journal"
    data = bytearray(path.read_bytes())
    end = struct.unpack_from("<I", data, 36)[0]
    data[end - 3] ^= 0xFF  # the last record's trailing size: as if its last block never landed
    path.write_bytes(bytes(data))
    j = open_journal(tmp_path)
    assert j[:] == entries(3) and "cut by a crash" in caplog.text
    j.add(b"next", 4, 2)
    j._destroy()
    assert open_journal(tmp_path)[:] == [*entries(3), (b"next", 4, 2)]


def test_a_file_that_is_not_a_journal_is_refused_not_overwritten(tmp_path):
    (tmp_path / "raft.journal").write_bytes(b"something else entirely")
    with pytest.raises(ValueError, match="not a pysyncobj journal"):
        open_journal(tmp_path)
    assert (tmp_path / "raft.journal").read_bytes() == b"something else entirely"


def test_the_file_is_allocated_for_real_no_holes(tmp_path):
    j = open_journal(tmp_path)
    for e in entries(20):
        j.add(*e)
    j.sync()
    st = (tmp_path / "raft.journal").stat()
    assert st.st_size >= FIRST + jmod.RESERVE and st.st_blocks * 512 >= st.st_size


def test_a_slow_flush_is_counted_and_said_once_in_a_while(tmp_path, monkeypatch, caplog):
    # a follower's acks wait for its flush, and the leader's lease counts them: a membership
    # change in a loaded lab lost the new leader its lease with two followers' acks 200 ms late
    clock = [100.0]

    class SlowDisk(RecordingDisk):
        takes = 0.0

        def flush(self, fd: int) -> None:
            super().flush(fd)
            clock[0] += self.takes

    disk = SlowDisk()
    j = open_journal(tmp_path, disk)
    monkeypatch.setattr(jmod.time, "monotonic", lambda: clock[0])
    for n, takes in enumerate((0.01, 0.25, 0.3, 0.01), start=1):
        disk.takes = takes
        j.add(*entries(1, start=n)[0])
        caplog.clear()
        assert j.sync()
        said = [r.getMessage() for r in caplog.records if "flush took" in r.getMessage()]
        assert said == (["Raft journal flush took 250 ms (1 over 100 ms so far): this member's acks "
                         "waited for the data disk, and a leader's lease (timing.lease_ms) counts them"]
                        if n == 2 else [])  # the 300 ms one: counted, not said again within 10 s
    assert j.slow_flushes == 2
