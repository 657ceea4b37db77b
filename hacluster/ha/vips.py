"""The VIP executor: carries out decide()'s actions through HostOps, behind the lease fence.

It decides nothing. What it adds to each action is the part only execution can know:
whether the address is still answered by someone (the ARP probe), whether the lease still
holds at the very moment of the system call, and whether that call worked. It also keeps
the VipBook, what the loop remembers between ticks and hands to the next snapshot.

Written and called on the loop thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hacluster.config import Config
from hacluster.consensus.protocol import Consensus
from hacluster.ha.decide import Act, Action, waiting_words
from hacluster.ha.record import Recorder
from hacluster.hostops.base import HostOps, HostOpsError
from hacluster.hostops.connsync import Commit, ConnSync, NoSync
from hacluster.model import Vip

log = logging.getLogger(__name__)


@dataclass
class VipBook:
    """What the loop remembers about its VIPs from one tick to the next."""

    claimed_at: dict[str, float] = field(default_factory=dict)  # vip -> when we claimed it
    announces: dict[str, int] = field(default_factory=dict)  # vip -> GARPs sent of its burst
    released_in_term: dict[str, int] = field(default_factory=dict)  # vip -> term we let it go
    epoch_asked: tuple[int, float] = (0, 0.0)  # (term, when) of our last epoch proposal
    renewed_at: dict[str, float] = field(default_factory=dict)  # vip -> last claim or renewal

    def forget(self, address: str) -> None:
        self.claimed_at.pop(address, None)
        self.announces.pop(address, None)
        self.renewed_at.pop(address, None)


@dataclass
class TickNotes:
    """What execution ran into during one tick, for its sentence."""

    notes: list[str] = field(default_factory=list)
    error: str = ""
    waiting: dict[str, str] = field(default_factory=dict)  # vip -> why its claim waits

    def fail(self, message: str) -> None:
        if message != self.error:
            log.warning("%s", message)
        self.error = message


class VipExecutor:
    def __init__(self, config: Config, hostops: HostOps, raft: Consensus, clock: Callable[[], float],
                 recorder: Recorder, sync: ConnSync | None = None):
        """sync: the connection-state sync (conntrackd) whose flows a claim commits first."""
        self._config = config
        self._sync: ConnSync = sync or NoSync()
        self._holding = False  # we held a VIP at the end of the last tick
        self._committed = False  # the synced flows were committed for the claim under way
        self._pending: Commit | None = None  # a commit begun while the old holder still answered
        self._host = hostops
        self._raft = raft
        self._clock = clock
        self._recorder = recorder
        self.book = VipBook()
        self.kernel_has: set[str] = set()  # VIPs the kernel had at the tick's start, less releases
        self._releasing = False

    # ------------------------------------------------------------------ reading the host

    def present(self, vip: Vip, notes: TickNotes) -> bool:
        try:
            return self._host.vip_present(vip)
        except HostOpsError as e:
            notes.fail(str(e))
            return False

    def still_here(self) -> tuple[str, ...]:
        """The configured VIPs the kernel still has here (empty: all released). A VIP whose
        presence cannot be read counts as present: never assume it is gone."""
        out = []
        for v in self._config.vips:
            try:
                if self._host.vip_present(v):
                    out.append(v.address)
            except HostOpsError:
                out.append(v.address)
        return tuple(out)

    # ------------------------------------------------------------------ acting

    def execute(self, actions: tuple[Action, ...], releasing: bool, notes: TickNotes) -> None:
        self._releasing = releasing
        told = False
        for a in actions:
            if a.act is Act.REANNOUNCE and not told:
                log.info("%s: re-announcing held VIPs", a.why)
                told = True
            try:
                self._act(a, notes)
            except HostOpsError as e:
                notes.fail(f"{a.act.value} {a.vip.address if a.vip else ''}: {e}")
        holding = bool(self.book.claimed_at)
        if holding and not self._holding:
            self._sync.claimed()  # our entries go to the others from now on
        elif self._holding and not holding:
            self._sync.released()
        self._holding = holding
        if not holding:
            self._committed = False

    def _act(self, a: Action, notes: TickNotes) -> None:
        book = self.book
        if a.act is Act.REGISTER_EPOCH:
            if a.why:
                log.warning("%s", a.why)
            book.epoch_asked = (a.term, self._clock())
            self._raft.register_epoch(a.term)
            return
        vip = a.vip
        assert vip is not None
        if a.act is Act.CLAIM:
            self._claim(vip, a.skip_probe, notes)
        elif a.act is Act.RENEW:
            if self._fenced_claim(vip):
                book.claimed_at.setdefault(vip.address, self._clock())
            else:
                book.claimed_at.pop(vip.address, None)
                book.renewed_at.pop(vip.address, None)
        elif a.act is Act.ANNOUNCE:
            # Only an address this tick's claim or renewal secured, and only while the lease
            # still holds: announcing an address we no longer hold would pull clients to us.
            if vip.address not in book.claimed_at or not self._lease_holds():
                return
            self._host.announce(vip)
            book.announces[vip.address] = book.announces.get(vip.address, 0) + 1
        elif a.act is Act.REANNOUNCE:
            book.claimed_at[vip.address] = self._clock()
            book.announces[vip.address] = 0
        elif a.act is Act.RELEASE:
            book.released_in_term[vip.address] = self._raft.view().term
            book.forget(vip.address)
            self._host.release_vip(vip)
            self.kernel_has.discard(vip.address)
            self._recorder.released(vip)
        elif a.act is Act.FORGET:
            book.forget(vip.address)

    def _claim(self, vip: Vip, skip_probe: bool, notes: TickNotes) -> None:
        # The first VIP of a claim: the flows conntrackd synced from the old holder go into
        # the kernel before any address pulls their packets here (else the backends answer
        # them with RST). Begun before the probe, so the two overlap; bounded either way.
        # While the old holder's kernel still answers (it keeps syncing its flows meanwhile),
        # a finished commit is begun again at the next try: the one the claim waits for is
        # at most a tick old, and there is never more than one.
        commit = None
        if not self._holding and not self._committed:
            if self._pending is None or self._pending.done():
                if self._pending is not None:
                    self._pending.wait()
                self._pending = self._sync.begin_commit()
            commit = self._pending
        if not skip_probe and self._host.probe(vip, self._config.timing.probe):
            # Someone still answers for it: a frozen or killed holder whose kernel keeps the
            # address until its lifetime ends. Claiming now would make two holders (I1).
            words = waiting_words(self._recorder.former_leader, self._config.timing.vip_lifetime)
            if words not in notes.notes:
                notes.notes.append(words)
            notes.waiting[vip.address] = words
            return
        if commit is not None:
            self._pending, self._committed = None, True
            if not commit.wait():
                notes.notes.append("connection sync: claiming without the synced flows")
        # The probe waited: the lease may have ended meanwhile.
        if not self._fenced_claim(vip):
            return
        view = self._raft.view()
        now = self._clock()
        self.book.claimed_at[vip.address] = now
        self._host.announce(vip)
        self.book.announces[vip.address] = 1
        self._recorder.claimed(vip, now, view, skip_probe)

    def _lease_holds(self) -> bool:
        return not self._releasing and self._raft.lease_ok_now()

    def _lease_deadline(self) -> float:
        """Until when a claim may be sent (on hacluster.clock), or -inf if it may not at all."""
        return float("-inf") if self._releasing else self._raft.lease_deadline()

    def _fenced_claim(self, vip: Vip) -> bool:
        """Add/renew vip only if the lease holds right now, and undo it if it ended meanwhile.

        The decision was taken earlier in the tick; a process paused in between (SIGSTOP, a
        VM stall, swap, a GIL wait) would otherwise wake up and renew a VIP that a new
        leader claimed after the old address expired (the kernel re-creates it). The lease
        is therefore checked inside hostops right before the netlink send (a window of a
        few bytecodes), and once more after it: a renewal that raced the end of the lease
        is undone at once.
        """
        if not self._host.claim_vip(vip, self._config.timing.vip_lifetime, self._lease_deadline):
            return False
        if not self._lease_holds():
            self._host.release_vip(vip)
            log.warning("lease ended during the renewal of %s: released it again", vip)
            return False
        self.book.renewed_at[vip.address] = self._clock()
        return True
