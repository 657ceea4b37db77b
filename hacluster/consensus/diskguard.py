"""What Raft does about its data disk (issue 15, findings 3 and 4): raft.RaftNode's rules,
kept beside journal.py so that raft.py only calls them.

* Promises wait for the disk: a follower's ack, a vote or a vote request goes out only once
  what it promises is flushed. The answers pysyncobj sends while it handles an incoming
  message (`peer` is set meanwhile) are held when the journal has something to flush, and
  sent by the next before_tick after one fdatasync for all of them: pysyncobj sends one
  append_entries per command, and the acks of all that arrived together share one flush
  (the next tick starts as soon as pysyncobj has handled what its sockets had). When the
  disk cannot take them, they are dropped (Raft treats them as lost and resends).
* The fdatasync runs on a thread of its own (one at a time, started by `after_tick` once
  pysyncobj has written the tick's entries), not on the tick thread: while the disk is slow
  a member goes on receiving and sending heartbeats and answering their receipt (raft.py),
  which is what the leader's lease counts. A held promise goes out once a flush covering
  what it promises has ended. The leader's own copy: pysyncobj's commit loop counts it
  unconditionally, so `before_tick` (right before that loop) waits for the leader's flush
  only when the followers' acks would let an entry past what the leader has on disk
  commit (Raft thesis §10.2.1: the leader writes in parallel with its followers).
  CI: five agents on one disk saw flushes of 100-300 ms on the tick thread lapse the lease.
* A leader steps down (`SyncObjSeam.resign`: same term, its vote kept) when its disk fills
  (it could go on writing into the space reserved ahead, but a member with room should
  lead) and whenever its log cannot be written. A node whose disk is full stands for
  election DISK_FULL_HOLDBACK election timeouts later than the others: with a member that
  has room, that member wins; with every disk full, a full one still leads (the VIPs stay
  up on the committed table; it writes into its reserved space). Once the journal has room
  again (journal.check, once a second), the node is an ordinary member again. While the
  disk is full pysyncobj starts no log compaction: its dump could not be written, and it
  would try at every tick.

Every method runs on pysyncobj's tick thread, but _flush (the flush thread); `problem` and
`write_errors` are read from any thread (one field each).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any

from hacluster.consensus.disk import Disk
from hacluster.consensus.journal import DurableJournal
from hacluster.consensus.pysyncobj_compat import SyncObjSeam

log = logging.getLogger("hacluster.raft")

DISK_FULL_HOLDBACK = 3  # maximum election timeouts a node with a full disk waits longer


class DiskGuard:
    def __init__(self, disk: Disk | None = None):
        """disk: the journal's system calls (tests record or fail them)."""
        self._disk = disk or Disk()
        self.journal: DurableJournal | None = None
        self._holdback_s = 0.0
        self._was_full = False
        self.peer: Any = None  # the member whose message pysyncobj is handling right now
        # (member, promise, the journal's writes it promises) awaiting a flush
        self._held: list[tuple[Any, dict[str, Any], int]] = []
        self._seam: SyncObjSeam[Any] | None = None
        self._thread: threading.Thread | None = None  # the flush thread, until its result is in
        self._done: collections.deque[tuple[int, int, int, float, OSError | None]] = collections.deque()
        self._releasing = False  # before_tick sends promises already on disk

    def open(self, data_dir: Path, election_max: float) -> DurableJournal:
        """The journal pysyncobj is to use, opened (raft.RaftNode.start)."""
        self.journal = DurableJournal(data_dir / "raft.journal", data_dir / "raft.dump", self._disk)
        self._holdback_s = DISK_FULL_HOLDBACK * election_max
        return self.journal

    @property
    def problem(self) -> str:
        return self.journal.problem if self.journal is not None else ""

    @property
    def write_errors(self) -> int:
        return self.journal.write_errors if self.journal is not None else 0

    def before_tick(self, seam: SyncObjSeam[Any] | None, now: float, quorum_others: int = 0) -> None:
        """quorum_others: the acks from other voters a commit needs (0: this node alone)."""
        j = self.journal
        if j is None or seam is None:
            return
        self._seam = seam
        j.check(now)
        self._collect(j)
        if seam.is_leader():
            self._own_copy(j, seam, quorum_others)
        if self._held:
            if seam.is_leader():  # one flush on this thread for every promise held
                self._release(seam, lambda seq: j.sync(), False)
            else:
                self._flush_async(j)
                self._release(seam, j.durable_upto, self._thread is not None)
        became_full = bool(j.full) and not self._was_full
        if bool(j.full) != self._was_full:  # no dump can be written meanwhile: no compaction
            seam.hold_compaction(bool(j.full))
        self._was_full = bool(j.full)
        if seam.is_leader() and (became_full or not j.writable):
            log.error("Raft data disk: %s. Stepping down from leadership (term %d) so that a "
                      "member with room on its disk leads; free space in %s", j.problem,
                      seam.term, j.directory)
            seam.resign()

    def after_tick(self) -> None:
        j = self.journal
        if j is None:
            return
        self._flush_async(j)

    def idle(self) -> bool:
        """Nothing to write, flush or send for the journal (a quiet wake-up's condition)."""
        j = self.journal
        return not (self._held or self._thread is not None or self._done or (j is not None and j.dirty))

    def may_send(self, message: dict[str, Any]) -> bool:
        """True: send it now; False: held for before_tick's flush, or dropped."""
        j = self.journal
        if j is None or self._releasing or not j.promises(message):
            return True
        if self.peer is not None and (self._held or j.dirty):
            self._held.append((self.peer, message, j.seq))
            return False
        return j.durable or j.sync()  # durable: nothing for sync() to do (an idle ack)

    def _release(self, seam: SyncObjSeam[Any], on_disk: Any, wait: bool) -> None:
        """Send the held promises `on_disk(seq)` says are on disk; keep the others while
        `wait` (a flush runs), drop them otherwise (the disk failed them; Raft resends)."""
        keep = []
        self._releasing = True
        try:
            for node, message, seq in self._held:
                if on_disk(seq):
                    seam.send(node, message)
                elif wait:
                    keep.append((node, message, seq))
        finally:
            self._releasing = False
        self._held = keep

    def _collect(self, j: DurableJournal) -> None:
        while self._done:  # a flush thread ended
            self._thread = None
            j.flushed(*self._done.popleft())

    def _own_copy(self, j: DurableJournal, seam: SyncObjSeam[Any], quorum_others: int) -> None:
        """Before pysyncobj's commit loop counts the leader's copy: when the followers'
        acks would commit an entry past what this leader has on disk, its flush ends first."""
        if j.writable and j.durable_index >= j.last_index:
            return  # every entry on disk (an idle leader's every tick): nothing to compare
        if quorum_others <= 0:
            bound = float("inf")
        else:
            acked = sorted(seam.match_index().values(), reverse=True)
            bound = acked[quorum_others - 1] if len(acked) >= quorum_others else 0
        if bound <= j.durable_index:
            return
        if self._thread is not None:
            self._thread.join()
            self._collect(j)
        if bound > j.durable_index:
            j.sync()  # written since that flush began: one more, here

    def _flush_async(self, j: DurableJournal) -> None:
        if self._thread is not None:
            return
        job = j.start_flush()
        if job is not None:
            self._thread = threading.Thread(target=self._flush, args=job, name="raft-flush", daemon=True)
            self._thread.start()

    def _flush(self, fd: int, gen: int, seq: int, index: int) -> None:
        """The flush thread: one fdatasync, its result for the tick thread, which it wakes."""
        started, error = time.monotonic(), None
        try:
            self._disk.flush(fd)
        except OSError as e:
            error = e
        took = time.monotonic() - started
        try:
            self._disk.close(fd)
        except OSError:
            pass
        self._done.append((gen, seq, index, took, error))
        if self._seam is not None:
            self._seam.wake()

    def holdback(self) -> float:
        """How much later than usual this node may stand for election."""
        return self._holdback_s if self.journal is not None and self.journal.full else 0.0
