"""Voters change through pysyncobj's membership entries (issue 16), on the tick thread.

pysyncobj (dynamicMembershipChange) takes one change at a time and applies it to its
configuration as soon as the entry is appended, on every member (Raft's single-server
change, thesis §4.1): the quorum a leader needs follows the newest configuration, and
a second change is refused until the first is committed. RaftNode.change_voters is this
function; ha/members.py orders the steps around it (the replicated member record first,
so that every member's Raft guard and gossip admit a new voter before it is dialled).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hacluster import clock

if TYPE_CHECKING:
    from hacluster.config import Config
    from hacluster.consensus.raft import RaftNode

log = logging.getLogger("hacluster.raft")

# pysyncobj's FAIL_REASON, in words
CHANGE_FAIL = {1: "pysyncobj's queue is full", 2: "no leader", 3: "discarded (leadership changed)",
               4: "this member no longer leads", 5: "leadership changed",
               6: "refused: another membership change is not committed yet", 7: "outcome unknown"}


def change_voters(raft: RaftNode, add: bool, member: str, address: str,
                  done: Callable[[bool, str], None]) -> None:
    """Leader: add or remove `address` (the member's Raft endpoint) as a voter; done(ok, why)
    on the tick thread once the entry is committed or refused."""
    def callback(_result: Any, err: int) -> None:
        done(err == 0, "committed" if err == 0 else CHANGE_FAIL.get(err, f"pysyncobj error {err}"))

    def run() -> None:
        s = raft._sync
        if s is None or not s.is_leader():
            done(False, "this member no longer leads")
            return
        try:
            (s.add_voter if add else s.remove_voter)(address, callback)
        except Exception as e:  # noqa: BLE001 - pysyncobj refuses with a bare Exception
            done(False, str(e))

    log.info("membership: %s voter %s (%s)", "adding" if add else "removing", member, address)
    raft.call_soon(run)


class MemberView:
    """RaftNode's view of the committed membership (a mixin: RaftNode sets the fields)."""

    config: Config
    _sync: Any
    _addr_of: tuple[Any, dict[str, str]]
    _answered: dict[str, float]

    @property
    def _by_addr(self) -> dict[str, str]:
        """Raft endpoint -> member id, of the committed membership (config.members, which the
        roster replaces whole when it changes: rebuilt only then)."""
        members = self.config.members
        if self._addr_of[0] is not members:
            self._addr_of = (members, {m.raft_endpoint: m.id for m in members})
            self._observer_of = {}  # _peer_of's too: who is a non-voter may have changed
        return self._addr_of[1]

    _observer_of: dict[Any, str]  # read-only node -> non-voting member id (set by _by_addr)

    def _peer_of(self, node: Any) -> str:
        """The member id of a pysyncobj node, "" if none. A voter by its address; a read-only
        node (which pysyncobj numbers "0", "1", ... as they connect) by the IP it connects
        from, when exactly one non-voting member has that address (tick thread)."""
        by_addr = self._by_addr  # first: it forgets _observer_of when the membership changed
        address = getattr(node, "address", None)
        if address is not None:
            return by_addr.get(address, "")
        peer = self._observer_of.get(node)
        if peer is None and self._sync is not None:
            source = self._sync.source_of(node) or ""
            source = source.removeprefix("::ffff:")  # a v4 peer on a dual-stack listener
            found = [m.id for m in self.config.members if not m.voter and m.address == source]
            peer = found[0] if len(found) == 1 else ""
            if len(self._observer_of) > 64:  # nodes of connections long closed
                live = self._sync.readonly_nodes()
                self._observer_of = {n: p for n, p in self._observer_of.items() if n in live}
            self._observer_of[node] = peer
        return peer

    def observers(self) -> dict[str, Any]:
        """Leader, tick thread: the connected read-only nodes by member id."""
        s = self._sync
        if s is None:
            return {}
        return {p: n for n in s.readonly_nodes() if (p := self._peer_of(n))}

    _built_readonly: bool | None = None  # the role our SyncObj was built with (start())

    @property
    def readonly(self) -> bool:
        """A non-voting member: pysyncobj's read-only node (it never votes, elects or leads).
        Once started, the role the SyncObj was built with: a committed demotion changes the
        config at once, but this SyncObj stays a voter until the agent restarts it (CI: a
        demoted voter, taken for read-only by the gate, elected itself on pysyncobj's timer)."""
        if self._built_readonly is not None:
            return self._built_readonly
        me = self.config.member(self.config.node_id)
        return me is not None and not me.voter

    @property
    def _n(self) -> int:
        """The voters in Raft's current configuration: pysyncobj's, which follows membership
        entries as they are appended (Raft's single-server change), us included."""
        s = self._sync
        if s is None:
            return len(self.config.voters)
        return len(s.other_nodes()) + (0 if self.readonly else 1)

    def _voter(self, peer: str) -> bool:
        m = self.config.member(peer) if peer else None
        return m is not None and m.voter

    def caught_up(self, member: str, index: int | None = None) -> bool:
        """Leader only: the member has every entry of our log (pysyncobj grants a leadership
        transfer only then), or every entry up to `index`."""
        s = self._sync
        m = self.config.member(member)
        if s is None or m is None or not s.is_leader():
            return False
        try:  # pysyncobj's thread owns these: copy, and take a concurrent change as "not yet"
            match = s.match_index()
            last, _ = s.last_log()
        except RuntimeError:
            return False
        return (match.get(m.raft_endpoint) or 0) >= (last if index is None else index)

    @staticmethod
    def clock_now() -> float:
        """The clock of acked_since's marks (hacluster.clock.now)."""
        return clock.now()

    def acked_since(self, member: str, since: float) -> bool:
        """Leader only: `member` acked an append_entries we sent after `since` (clock_now()),
        so it has heard the commit index we had then."""
        return self._answered.get(member, 0.0) > since
