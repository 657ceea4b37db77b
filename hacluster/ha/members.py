"""Membership changes, run by the leader: add, remove, replace, promote, demote (issue 16).

The committed membership lives in the replicated state (state.py: members_seed, member_set,
member_del); the config file only seeds a new cluster. Voters also change in pysyncobj's
own configuration (consensus/members.py), one change at a time. The order of the steps:

* add a voter: the member record first (every member's roster then opens its Raft guard
  and gossip to the new address), then pysyncobj's entry (the leader starts replicating
  to it; the quorum counts it from that entry on). A refused entry takes the record back.
* add a non-voter: the record only (a read-only node dials the voters itself).
* remove: its backends are drained first (no new flow goes to it), then pysyncobj's
  entry (a voter), then the record (its verdicts go with it). The leader never removes
  itself: the CLI moves leadership first (hacluster failover), then asks the new leader.
* promote / demote: the record's voter flag and pysyncobj's entry; the member's agent
  restarts its Raft in the new role (daemon.py). A demotion waits until the member holds
  its new record (its match index) before Raft lets it go: out of pysyncobj's
  configuration nothing more reaches it.

Refused, with the reason and nothing changed: a change already in progress, no quorum (no
lease), an even voter count without allow_even, a removal that would leave fewer live
voters than a majority of those that remain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hacluster.config import Config
from hacluster.consensus.state import CommandError, member_record, no_clash
from hacluster.errors import Refusal, Refused
from hacluster.model import Role, draining_flag

log = logging.getLogger(__name__)

COMMIT_WAIT_S = 5.0
RECEIVED_POLL_S = 0.02
Progress = Callable[[str], None]


class MembershipChanges:
    def __init__(self, config: Config, raft: Any, drain: Callable[[str, bool], Any]):
        """drain(member, undo): AdminActions.drain's member form (commits the flag)."""
        self.config = config
        self.raft = raft
        self._drain = drain
        self._busy = threading.Lock()

    # ------------------------------------------------------------------ operations

    def add(self, node: str, address: str, raft_port: int, grpc_port: int, voter: bool = True,
            allow_even: bool = False, say: Progress | None = None) -> str:
        say = say or _quiet
        with self._one_change():
            members = self._preconditions()
            if node in members:
                raise Refused(f"{node} is already a member ({_describe(node, members[node])})",
                              Refusal.PRECONDITION)
            record = self._record(node, {"address": address, "raft_port": raft_port,
                                         "grpc_port": grpc_port, "voter": voter}, members)
            if voter:
                self._even_check(len(_voters(members)) + 1, allow_even, f"adding {node}")
            self._commit_set(node, record, say)
            if voter:
                ok, why = self._voters_change(True, node, record, say)
                if not ok:
                    self._commit_del(node, say)
                    raise Refused(f"Raft did not take {node} as a voter ({why}); its record was "
                                  "taken back: nothing changed", Refusal.ABORTED)
            return (f"{node} added as a {'voter' if voter else 'non-voter'} "
                    f"({address}, raft {raft_port}, grpc {grpc_port})")

    def remove(self, node: str, allow_even: bool = False, say: Progress | None = None) -> str:
        say = say or _quiet
        with self._one_change():
            members = self._preconditions()
            if node not in members:
                raise Refused(f"{node} is not a member (members: {', '.join(sorted(members))})",
                              Refusal.NOT_FOUND)
            if node == self.config.node_id:
                raise Refused(f"{node} leads the cluster and holds its VIPs: move leadership first "
                              f"(hacluster failover), then remove it from the new leader "
                              "(`hacluster members remove` does both)", Refusal.PRECONDITION)
            record = members[node]
            if record["voter"]:
                remaining = [n for n in _voters(members) if n != node]
                self._even_check(len(remaining), allow_even, f"removing {node}")
                self._quorum_after(remaining)
            say(f"draining {node}'s backends")
            self._drain(node, False)
            if record["voter"]:
                ok, why = self._voters_change(False, node, record, say)
                if not ok:
                    raise Refused(f"Raft did not remove voter {node} ({why}); it stays a member "
                                  f"(still drained: `hacluster undrain {node}`)", Refusal.ABORTED)
            self._commit_del(node, say)
            self._forget_drain(node)
            return f"{node} removed ({record['address']})"

    def replace(self, old: str, new: str, address: str, raft_port: int, grpc_port: int,
                allow_even: bool = False, say: Progress | None = None) -> str:
        """Add NEW (with OLD's role), then remove OLD: two changes, each committed alone."""
        say = say or _quiet
        members = self._preconditions()
        if old not in members:
            raise Refused(f"{old} is not a member", Refusal.NOT_FOUND)
        voter = members[old]["voter"]
        # the count is odd again once OLD has left: the even step in between is allowed
        first = self.add(new, address, raft_port, grpc_port, voter, allow_even=True, say=say)
        say(first)
        second = self.remove(old, allow_even=allow_even, say=say)
        return f"{first}; {second}"

    def set_voter(self, node: str, voter: bool, allow_even: bool = False,
                  say: Progress | None = None) -> str:
        say = say or _quiet
        with self._one_change():
            members = self._preconditions()
            if node not in members:
                raise Refused(f"{node} is not a member", Refusal.NOT_FOUND)
            record = members[node]
            if record["voter"] == voter:
                return f"{node} is already a {'voter' if voter else 'non-voter'}"
            if node == self.config.node_id:
                raise Refused(f"{node} leads: move leadership first (hacluster failover)",
                              Refusal.PRECONDITION)
            voters = _voters(members)
            after = voters + [node] if voter else [n for n in voters if n != node]
            self._even_check(len(after), allow_even, f"{'promoting' if voter else 'demoting'} {node}")
            if not voter:
                self._quorum_after(after)
            # The record first, both ways: a demoted member must still be a voter when the
            # record reaches it (once out of Raft's configuration nothing is replicated to it,
            # and it would never learn to restart as a non-voter).
            self._commit_set(node, {**record, "voter": voter}, say)
            if not voter:
                self._wait_received(node, record, say)
            ok, why = self._voters_change(voter, node, record, say)
            if not ok:
                self._commit_set(node, record, say)
                raise Refused(f"Raft did not {'promote' if voter else 'demote'} {node} ({why}): "
                              "nothing changed", Refusal.ABORTED)
            return f"{node} is now a {'voter' if voter else 'non-voter'} (its agent restarts its Raft)"

    # ------------------------------------------------------------------ checks

    def _one_change(self) -> Any:
        if not self._busy.acquire(blocking=False):
            raise Refused("a membership change is already in progress on this leader: wait for "
                          "it to finish (hacluster events)", Refusal.PRECONDITION)
        busy = self._busy

        class _Release:
            def __enter__(self) -> None:
                return None

            def __exit__(self, *_exc: object) -> None:
                busy.release()
        return _Release()

    def _preconditions(self) -> dict[str, dict[str, Any]]:
        view = self.raft.view()
        if view.role is not Role.LEADER:
            raise Refused(f"this member does not lead (leader: {view.leader or 'none'}): membership "
                          "changes are made by the leader", Refusal.PRECONDITION)
        if not (view.lease_ok and view.epoch_applied):
            raise Refused("no quorum: the leader has no lease (a majority of voters must answer); "
                          "hacluster status shows which members are unreachable", Refusal.PRECONDITION)
        state = self.raft.state
        if not state.members_generation:
            raise Refused("the membership is not committed yet (the leader seeds it from its "
                          "config within a second of its election): try again", Refusal.PRECONDITION)
        return {k: dict(v) for k, v in state.members.items()}

    def _record(self, node: str, record: dict[str, Any], members: dict[str, Any]) -> dict[str, Any]:
        try:
            checked = member_record(node, record)
            no_clash({**members, node: checked})
        except CommandError as e:
            raise Refused(str(e), Refusal.INVALID) from None
        return checked

    @staticmethod
    def _even_check(count: int, allow_even: bool, what: str) -> None:
        if count % 2 == 0 and not allow_even:
            raise Refused(f"{what} leaves {count} voters: {count} voters tolerate "
                          f"{(count - 1) // 2} failure(s), no more than {count - 1} do, and a 50/50 "
                          "split leaves no side with a quorum; add or "
                          "remove another voter, use a non-voter (--non-voter), or pass "
                          "--allow-even", Refusal.PRECONDITION)

    def _quorum_after(self, remaining: list[str]) -> None:
        """The voters that remain must include a live majority (the leader and the voters
        whose Raft links are up)."""
        view = self.raft.view()
        live = {self.config.node_id} | {p.id for p in view.peers if p.connected}
        alive = [n for n in remaining if n in live]
        if len(alive) <= len(remaining) // 2:
            down = sorted(set(remaining) - live)
            raise Refused(f"that would lose quorum: of the {len(remaining)} voters that would remain "
                          f"only {len(alive)} are reachable ({', '.join(down)} not); bring them back "
                          "first", Refusal.PRECONDITION)

    # ------------------------------------------------------------------ steps

    def _commit_set(self, node: str, record: dict[str, Any], say: Progress) -> None:
        result = self._commit({"type": "member_set", "node": node, "member": record,
                               "expect_members_generation": self.raft.state.members_generation})
        say(f"committed: {result.detail}")

    def _commit_del(self, node: str, say: Progress) -> None:
        result = self._commit({"type": "member_del", "node": node,
                               "expect_members_generation": self.raft.state.members_generation})
        say(f"committed: {result.detail}")

    def _forget_drain(self, node: str) -> None:
        if self.raft.state.flags.get(draining_flag(node)) is not None:
            try:
                self._drain(node, True)
            except Refused as e:  # the member is gone; a stale flag only shows in status
                log.warning("membership: the drain flag of removed %s stays: %s", node, e)

    def _wait_received(self, node: str, record: dict[str, Any], say: Progress) -> None:
        """A demoted voter must apply its new record before Raft lets it go: once out of
        pysyncobj's configuration nothing reaches it, and its agent would stay a voter no one
        talks to. The record is committed by a majority that need not include it (it may be
        restarting, or slow). Wait until it holds the record (its match index), then until it
        acks a later append_entries (which carries the commit index that covers the record);
        past COMMIT_WAIT_S take the record back."""
        index = self.raft.view().commit_index
        say(f"waiting for {node} to receive its new role (log index {index})")
        deadline = time.monotonic() + COMMIT_WAIT_S
        self._until(lambda: self.raft.caught_up(node, index), deadline, node, record, say)
        mark = self.raft.clock_now()
        self._until(lambda: self.raft.acked_since(node, mark), deadline, node, record, say)

    def _until(self, received: Callable[[], bool], deadline: float, node: str,
               record: dict[str, Any], say: Progress) -> None:
        while not received():
            if time.monotonic() >= deadline:
                self._commit_set(node, record, say)
                raise Refused(f"{node} did not receive its new role within {COMMIT_WAIT_S:g} s "
                              f"(is its agent running? hacluster status): its record was taken "
                              f"back, it stays a voter; try again once it has caught up, or "
                              f"remove it", Refusal.ABORTED)
            time.sleep(RECEIVED_POLL_S)

    def _voters_change(self, add: bool, node: str, record: dict[str, Any], say: Progress) -> tuple[bool, str]:
        endpoint = f"{record['address']}:{record['raft_port']}"
        say(f"Raft: {'adding' if add else 'removing'} voter {node} ({endpoint})")
        done = threading.Event()
        box: list[tuple[bool, str]] = []

        def finished(ok: bool, why: str) -> None:
            box.append((ok, why))
            done.set()

        self.raft.change_voters(add, node, endpoint, finished)
        if not done.wait(COMMIT_WAIT_S):
            return False, f"not confirmed within {COMMIT_WAIT_S:g} s (outcome unknown: see hacluster members)"
        return box[0]

    def _commit(self, command: dict[str, Any]) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def callback(result: Any, err: int) -> None:
            box.append((result, err))
            done.set()

        self.raft.submit(command, callback)
        if not done.wait(COMMIT_WAIT_S):
            raise Refused(f"not confirmed within {COMMIT_WAIT_S:g} s: the OUTCOME IS UNKNOWN "
                          "(check `hacluster members`)", Refusal.ABORTED)
        result, err = box[0]
        if result is None:
            raise Refused(f"not committed (pysyncobj reason {err})", Refusal.ABORTED)
        if not result.ok:
            raise Refused(f"refused by the cluster: {result.detail}", Refusal.PRECONDITION)
        return result


def _voters(members: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(n for n, m in members.items() if m["voter"])


def _describe(node: str, m: dict[str, Any]) -> str:
    return f"{'voter' if m['voter'] else 'non-voter'} at {m['address']}"


def _quiet(_msg: str) -> None:
    return None
