"""Membership through Raft (issue 16): the replicated records, the leader's rules for a
change, and every member following the committed membership (roster.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hacluster import roster
from hacluster.consensus.state import ReplicatedState, encode
from hacluster.errors import Refusal, Refused
from hacluster.events import EventLog
from hacluster.ha.members import MembershipChanges
from hacluster.model import Member, Role
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view
from tests.support.wait import wait_until


def rec(i: int, voter: bool = True) -> dict:
    return {"address": f"10.0.0.1{i}", "raft_port": 7100, "grpc_port": 7101, "voter": voter}


def seeded(n: int = 3) -> ReplicatedState:
    s = ReplicatedState()
    r = s.apply(encode({"type": "members_seed", "members": {f"n{i}": rec(i) for i in range(1, n + 1)}}))
    assert r.ok, r.detail
    return s


# ------------------------------------------------------------------ the state machine

def test_seed_is_taken_once_and_then_only_changes_count():
    s = seeded()
    assert set(s.members) == {"n1", "n2", "n3"} and s.members_generation == 1
    again = s.apply(encode({"type": "members_seed", "members": {"x": rec(9)}}))
    assert again.ok and "already" in again.detail and set(s.members) == {"n1", "n2", "n3"}


@pytest.mark.parametrize("cmd, why", [
    ({"type": "member_set", "node": "n4", "member": rec(4), "expect_members_generation": 0}, "stale"),
    ({"type": "member_set", "node": "n4", "member": {**rec(4), "address": "10.0.0.11"},
      "expect_members_generation": 1}, "already used by member n1"),
    ({"type": "member_set", "node": "n4", "member": {**rec(4), "address": "nope"},
      "expect_members_generation": 1}, "IP address"),
    ({"type": "member_set", "node": "bad id!", "member": rec(4), "expect_members_generation": 1},
     "member id"),
    ({"type": "member_del", "node": "n9", "expect_members_generation": 1}, "not a member"),
])
def test_a_refused_change_changes_nothing(cmd, why):
    s = seeded()
    before = (dict(s.members), s.members_generation, s.generation)
    r = s.apply(encode(cmd))
    assert not r.ok and why in r.detail
    assert (dict(s.members), s.members_generation, s.generation) == before


def test_the_last_voter_cannot_leave_or_be_demoted():
    s = ReplicatedState()
    s.apply(encode({"type": "members_seed", "members": {"n1": rec(1), "n2": rec(2, voter=False)}}))
    assert not s.apply(encode({"type": "member_del", "node": "n1", "expect_members_generation": 1})).ok
    r = s.apply(encode({"type": "member_set", "node": "n1", "member": rec(1, voter=False),
                        "expect_members_generation": 1}))
    assert not r.ok and "at least one voter" in r.detail


def test_removing_a_member_forgets_its_verdicts_and_suspicion():
    s = seeded()
    s.health = {"n3/web": False, "n1/web": True}
    s.suspects = {"n3": 4}
    assert s.apply(encode({"type": "member_del", "node": "n3", "expect_members_generation": 1})).ok
    assert s.health == {"n1/web": True} and s.suspects == {} and set(s.members) == {"n1", "n2"}


def test_an_old_dump_without_members_loads_empty():
    s = ReplicatedState()
    s.__setstate__({"epoch_term": 3, "flags": {}})
    assert s.members == {} and s.members_generation == 0


# ------------------------------------------------------------------ the leader's rules

class VoterRaft(FakeRaft):
    """FakeRaft with pysyncobj's voter change: answers `ok` at once and records the call."""

    def __init__(self, ok: bool = True, **kw):
        super().__init__(**kw)
        self.ok = ok
        self.voter_changes: list[tuple[bool, str, str]] = []

    def change_voters(self, add, member, address, done):
        # the record is committed first: a new voter is already known when Raft dials it
        self.voter_changes.append((add, member, address, member in self.state.members))
        done(self.ok, "committed" if self.ok else "refused: another membership change is not committed yet")


def changes(n: int = 3, ok: bool = True, peers=("n2", "n3"), connected=True, me: str = "n1"):
    raft = VoterRaft(ok=ok, current=leader_view(peers=peers, connected=connected), state=seeded(n))
    drains: list[tuple[str, bool]] = []
    c = config(node_id=me, members=[{"id": f"n{i}", **{k: v for k, v in rec(i).items() if k != "voter"}}
                                    for i in range(1, n + 1)])
    return MembershipChanges(c, raft, drain=lambda node, undo: drains.append((node, undo))), raft, drains


def test_adding_a_voter_commits_the_record_then_the_raft_entry():
    m, raft, _ = changes()
    out = m.add("n4", "10.0.0.14", 7100, 7101, allow_even=True)
    assert "n4 added as a voter" in out
    assert raft.voter_changes == [(True, "n4", "10.0.0.14:7100", True)]
    assert raft.state.members["n4"]["voter"] is True


def test_a_non_voter_is_only_a_record():
    m, raft, _ = changes()
    m.add("n4", "10.0.0.14", 7100, 7101, voter=False)
    assert raft.voter_changes == [] and raft.state.members["n4"]["voter"] is False


def test_an_even_voter_count_is_refused_without_allow_even():
    m, raft, _ = changes()
    with pytest.raises(Refused) as e:
        m.add("n4", "10.0.0.14", 7100, 7101)
    assert e.value.kind is Refusal.PRECONDITION
    assert "4 voters" in str(e.value) and "--allow-even" in str(e.value)
    assert "n4" not in raft.state.members and raft.voter_changes == []


def test_a_refused_raft_entry_takes_the_record_back():
    m, raft, _ = changes(ok=False)
    with pytest.raises(Refused) as e:
        m.add("n4", "10.0.0.14", 7100, 7101, allow_even=True)
    assert "nothing changed" in str(e.value) and "n4" not in raft.state.members


def test_no_lease_no_change():
    m, raft, _ = changes()
    raft.current = replace(raft.current, lease_ok=False)
    with pytest.raises(Refused, match="no quorum"):
        m.add("n4", "10.0.0.14", 7100, 7101, voter=False)


def test_only_the_leader_changes_membership():
    m, raft, _ = changes()
    raft.current = view(role=Role.FOLLOWER, leader="n2")
    with pytest.raises(Refused, match="leader: n2"):
        m.remove("n3")


def test_remove_drains_first_then_leaves_raft_then_the_record():
    m, raft, drains = changes(n=5, peers=("n2", "n3", "n4", "n5"))
    m.remove("n5", allow_even=True)
    assert drains[0] == ("n5", False)
    assert raft.voter_changes == [(False, "n5", "10.0.0.15:7100", True)]
    assert "n5" not in raft.state.members


def test_a_removal_that_would_lose_quorum_is_refused():
    # 5 voters, n4 and n5 unreachable: removing n3 leaves n1, n2 of 4 voters alive
    m, raft, drains = changes(n=5, peers=("n2", "n3", "n4", "n5"))
    raft.current = replace(raft.current, peers=tuple(
        replace(p, connected=p.id in ("n2", "n3")) for p in raft.current.peers))
    with pytest.raises(Refused, match="lose quorum"):
        m.remove("n3", allow_even=True)
    assert drains == [] and "n3" in raft.state.members


def test_the_leader_does_not_remove_itself():
    m, _, _ = changes()
    with pytest.raises(Refused, match="move leadership first"):
        m.remove("n1")


def test_one_change_at_a_time():
    m, raft, _ = changes()
    assert m._busy.acquire()
    try:
        with pytest.raises(Refused, match="already in progress"):
            m.add("n4", "10.0.0.14", 7100, 7101, voter=False)
    finally:
        m._busy.release()


def test_replace_adds_the_new_one_in_the_old_ones_role_then_removes_the_old():
    m, raft, drains = changes()
    m.replace("n3", "n3b", "10.0.0.23", 7100, 7101)
    assert set(raft.state.members) == {"n1", "n2", "n3b"} and raft.state.members["n3b"]["voter"]
    assert [c[:2] for c in raft.voter_changes] == [(True, "n3b"), (False, "n3")]


def test_demote_commits_the_record_while_the_member_still_gets_entries():
    m, raft, _ = changes(n=5, peers=("n2", "n3", "n4", "n5"))
    m.set_voter("n5", False, allow_even=True)
    assert raft.voter_changes[0][:2] == (False, "n5") and raft.state.members["n5"]["voter"] is False
    record_first = raft.submitted.index(next(c for c in raft.submitted if c["type"] == "member_set"))
    assert record_first == 0


def test_a_demoted_member_that_has_not_received_its_record_stays_a_voter(monkeypatch):
    # CI: a voter restarting (just promoted) was demoted; the majority committed its record
    # without it, Raft dropped it, and its agent stayed a voter that nothing reached
    monkeypatch.setattr("hacluster.ha.members.COMMIT_WAIT_S", 0.2)
    m, raft, _ = changes(n=5, peers=("n2", "n3", "n4", "n5"))
    raft.caught_up_members = {"n2", "n3", "n4"}
    with pytest.raises(Refused) as e:
        m.set_voter("n5", False, allow_even=True)
    assert e.value.kind is Refusal.ABORTED and "did not receive its new role" in str(e.value)
    assert raft.voter_changes == [] and raft.state.members["n5"]["voter"] is True
    raft.caught_up_members = None
    assert "now a non-voter" in m.set_voter("n5", False, allow_even=True)


# ------------------------------------------------------------------ every member follows

def follower(tmp_path, me="n1"):
    c = config(node_id=me, data_dir=str(tmp_path))
    raft = FakeRaft(state=seeded())
    seen: list[tuple[Member, ...]] = []
    said: list[str] = []
    r = roster.Roster(c, raft, EventLog(me), [seen.append], on_self_change=said.append)
    return r, c, raft, seen, said


def test_a_committed_change_reaches_config_file_and_parts(tmp_path):
    r, c, raft, seen, said = follower(tmp_path)
    r.check()
    assert seen == [] and (tmp_path / roster.FILE).exists()  # same as the file: nothing to tell
    raft.submit({"type": "member_set", "node": "n4", "member": rec(4, voter=False),
                 "expect_members_generation": 1})
    r.check()
    assert [m.id for m in c.members] == ["n1", "n2", "n3", "n4"] and not c.member("n4").voter
    assert seen and seen[-1] == c.members and said == []
    saved = json.loads((tmp_path / roster.FILE).read_text())
    assert saved["generation"] == 2 and saved["members"]["n4"]["voter"] is False
    # a restart starts from the saved membership, not the file's
    c2 = config(node_id="n1", data_dir=str(tmp_path))
    assert "membership from" in roster.load(c2) and c2.member("n4") is not None


def test_removed_or_promoted_says_so(tmp_path):
    r, c, raft, seen, said = follower(tmp_path, me="n3")
    r.check()
    raft.submit({"type": "member_set", "node": "n3", "member": rec(3, voter=False),
                 "expect_members_generation": 1})
    r.check()
    assert said == ["this server is now a non-voter"]
    raft.submit({"type": "member_del", "node": "n3", "expect_members_generation": 2})
    r.check()
    assert said[-1] == "this server was removed from the cluster"
    with pytest.raises(ValueError, match="was removed"):
        roster.load(config(node_id="n3", data_dir=str(tmp_path)))


def test_a_new_server_catching_up_passes_over_the_memberships_before_its_own(tmp_path):
    # CI: n4, just added, applied the seed's membership (n1..n3) first and stopped itself
    c = config(node_id="n4", data_dir=str(tmp_path), members=[
        {"id": f"n{i}", "address": f"10.0.0.{10 + i}", "raft_port": 7100, "grpc_port": 7101}
        for i in (1, 2, 3, 4)])
    raft = FakeRaft(state=seeded())
    seen: list[tuple[Member, ...]] = []
    said: list[str] = []
    r = roster.Roster(c, raft, EventLog("n4"), [seen.append], on_self_change=said.append)
    r.check()  # generation 1 lists n1..n3: history, not a removal
    assert said == [] and seen == [] and not (tmp_path / roster.FILE).exists()
    assert c.member("n4") is not None
    raft.submit({"type": "member_set", "node": "n4", "member": rec(4),
                 "expect_members_generation": 1})
    r.check()
    assert said == [] and [m.id for m in c.members] == ["n1", "n2", "n3", "n4"]
    raft.submit({"type": "member_del", "node": "n4", "expect_members_generation": 2})
    r.check()  # once in, out is a removal
    assert said == ["this server was removed from the cluster"]


def test_the_leader_seeds_the_membership_from_its_config(tmp_path):
    c = config(data_dir=str(tmp_path))
    raft = FakeRaft(current=leader_view())
    r = roster.Roster(c, raft, EventLog("n1"))
    r.check(now=100.0)
    assert set(raft.state.members) == {"n1", "n2", "n3"}
    follower_raft = FakeRaft()
    roster.Roster(c, follower_raft, EventLog("n1")).check(now=100.0)
    assert follower_raft.state.members == {}  # a follower never seeds


def test_a_broken_membership_file_stops_the_start_with_a_reason(tmp_path):
    (tmp_path / roster.FILE).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        roster.load(config(data_dir=str(tmp_path)))


class WatchedRaft(FakeRaft):
    """FakeRaft that calls its on_change watchers after every commit, as RaftNode does."""

    def on_change(self, callback) -> None:
        self.watchers = getattr(self, "watchers", []) + [callback]

    def submit(self, command, callback=None) -> None:
        super().submit(command, callback)
        for watcher in getattr(self, "watchers", []):
            watcher()


def test_the_roster_follows_a_commit_at_once_not_at_its_next_look(tmp_path, monkeypatch):
    # issue 17: the roster sleeps until Raft says something changed; its safety look is far
    # beyond this test's deadline, so only the wake-up can make it follow in time
    monkeypatch.setattr(roster, "POLL_S", 60.0)
    c = config(node_id="n1", data_dir=str(tmp_path))
    raft = WatchedRaft(state=seeded())
    seen: list[tuple[Member, ...]] = []
    r = roster.Roster(c, raft, EventLog("n1"), [seen.append])
    r.start()
    try:
        wait_until(lambda: (tmp_path / roster.FILE).exists(), 5, "the first look")
        raft.submit({"type": "member_set", "node": "n4", "member": rec(4, voter=False),
                     "expect_members_generation": 1})
        wait_until(lambda: c.member("n4") is not None, 2, "n4 known without waiting for POLL_S")
        assert seen and seen[-1] == c.members
    finally:
        r.stop()
    assert not r._thread.is_alive()  # stop() wakes it: no waiting out POLL_S either
