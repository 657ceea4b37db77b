"""What Raft does about its data disk (issue 15, findings 3 and 4): raft.RaftNode's rules,
kept beside journal.py so that raft.py only calls them.

* Promises wait for the disk: a follower's ack, a vote or a vote request goes out only once
  what it promises is flushed. The answers pysyncobj sends while it handles an incoming
  message (`peer` is set meanwhile) are held when the journal has something to flush, and
  sent by the next before_tick after one fdatasync for all of them: pysyncobj sends one
  append_entries per command, and the acks of all that arrived together share one flush
  (the next tick starts as soon as pysyncobj has handled what its sockets had). When the
  disk cannot take them, they are dropped (Raft treats them as lost and resends).
* The leader flushes its new entries once per tick (`after_tick`, right after pysyncobj sent
  them, while the followers flush theirs), and `before_tick` checks that they are on disk
  before pysyncobj counts the leader's own copy towards a commit, in the same tick.
* A leader steps down (`SyncObjSeam.resign`: same term, its vote kept) when its disk fills
  (it could go on writing into the space reserved ahead, but a member with room should
  lead) and whenever its log is not all on disk. A node whose disk is full stands for
  election DISK_FULL_HOLDBACK election timeouts later than the others: with a member that
  has room, that member wins; with every disk full, a full one still leads (the VIPs stay
  up on the committed table; it writes into its reserved space). Once the journal has room
  again (journal.check, once a second), the node is an ordinary member again. While the
  disk is full pysyncobj starts no log compaction: its dump could not be written, and it
  would try at every tick.

Every method runs on pysyncobj's tick thread; `problem` and `write_errors` are read from
any thread (one field each).
"""

from __future__ import annotations

import logging
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
        self._held: list[tuple[Any, dict[str, Any]]] = []  # (member, promise) awaiting a flush

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

    def before_tick(self, seam: SyncObjSeam[Any] | None, now: float) -> None:
        j = self.journal
        if j is None or seam is None:
            return
        j.check(now)
        if self._held:  # one flush for every promise held since the last tick
            held, self._held = self._held, []
            if j.sync():
                for node, message in held:
                    seam.send(node, message)
        became_full = bool(j.full) and not self._was_full
        if bool(j.full) != self._was_full:  # no dump can be written meanwhile: no compaction
            seam.hold_compaction(bool(j.full))
        self._was_full = bool(j.full)
        if seam.is_leader() and (became_full or not j.sync()):
            log.error("Raft data disk: %s. Stepping down from leadership (term %d) so that a "
                      "member with room on its disk leads; free space in %s", j.problem,
                      seam.term, j.directory)
            seam.resign()

    def after_tick(self) -> None:
        if self.journal is not None:
            self.journal.sync()

    def may_send(self, message: dict[str, Any]) -> bool:
        """True: send it now; False: held for before_tick's flush, or dropped."""
        j = self.journal
        if j is None or not j.promises(message):
            return True
        if self.peer is not None and (self._held or j.dirty):
            self._held.append((self.peer, message))
            return False
        return j.sync()

    def holdback(self) -> float:
        """How much later than usual this node may stand for election."""
        return self._holdback_s if self.journal is not None and self.journal.full else 0.0
