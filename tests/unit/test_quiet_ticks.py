"""Quiet wake-ups of pysyncobj's tick thread (consensus/quiet.py, issue 17).

After a full tick, a wake-up that only carried a heartbeat, an ack or an hc_ping polls again
without the tick's housekeeping, until the next thing due; anything else makes it full. The
rules with a fake seam first, then a real 3-member cluster on 127.0.0.1: at idle most
wake-ups are quiet on every member, yet commands commit, the lease holds, and the
followers still elect a new leader when the old one stops.
"""

from __future__ import annotations

from typing import Any

from hacluster.consensus.pysyncobj_compat import Node
from hacluster.consensus.quiet import QUIET_MAX_S
from hacluster.model import Role
from tests.support.wait import wait_until
from tests.unit.test_raft_persistence import FAST, commit
from tests.unit.test_raft_persistence import cluster as cluster  # noqa: PLC0414 (the fixture)
from tests.unit.test_raft_terms import FakeSeam, _node

LEADER_ADDR = "10.0.0.12:7100"
HEARTBEAT = {"type": "append_entries", "term": 1, "commit_index": 10, "prevLogIdx": 10,
             "prevLogTerm": 1}


def _after_full_tick(monkeypatch: Any, election_in: float = 1.0) -> tuple[Any, Any, FakeSeam]:
    """A follower right after a full tick: its poll is due in min(election_in, ping)."""
    seam = FakeSeam(term=1)
    seam.leader = LEADER_ADDR
    node, clock = _node(monkeypatch, seam)
    node._last_ping = clock.now
    node._election_due = clock.now + election_in
    node.poll_wait(0.01)
    node.after_tick()
    return node, clock, seam


def _hear(node: Any, message: dict[str, Any]) -> None:
    node.on_message(Node(LEADER_ADDR), dict(message), lambda: None)


def test_a_heartbeat_after_a_full_tick_is_a_quiet_wake_up_until_the_next_duty(monkeypatch):
    node, clock, _ = _after_full_tick(monkeypatch, election_in=0.2)
    _hear(node, HEARTBEAT)
    assert abs(node.quiet_wait() - 0.2) < 1e-9  # the election gate's deadline, not MAX_POLL_S
    clock.advance(0.15)
    _hear(node, {"type": "hc_ping"})
    assert abs(node.quiet_wait() - 0.05) < 1e-9
    clock.advance(0.051)
    assert node.quiet_wait() is None  # due: the full tick runs the gate
    assert node.quiet_ticks == 2


def test_quiet_wake_ups_end_after_quiet_max_even_with_nothing_due(monkeypatch):
    node, clock, _ = _after_full_tick(monkeypatch, election_in=5.0)
    node._last_ping = clock.now + 5.0  # no ping due either
    node.poll_wait(0.01)
    assert abs(node.quiet_wait() - QUIET_MAX_S) < 1e-9
    clock.advance(QUIET_MAX_S)
    assert node.quiet_wait() is None


def test_any_other_message_a_command_or_a_call_makes_the_next_wake_up_full(monkeypatch):
    for stir in (lambda n: _hear(n, {"type": "request_vote", "term": 2, "last_log_index": 10,
                                     "last_log_term": 1}),
                 lambda n: _hear(n, {"type": "hc_prevote", "round": 1, "term": 2}),
                 lambda n: _hear(n, {"type": "timeout_now", "term": 1}),
                 lambda n: n.stir(),  # a command submitted, a connection opened or lost
                 lambda n: n.call_soon(lambda: None)):
        node, _, _ = _after_full_tick(monkeypatch)
        assert node.quiet_wait() is not None
        stir(node)
        assert node.quiet_wait() is None
        node.poll_wait(0.01)  # the full tick (it runs the calls)
        node._tick_calls.clear()
        node.after_tick()
        assert node.quiet_wait() is not None  # quiet again after it


def test_a_changed_log_role_or_leader_makes_the_next_wake_up_full(monkeypatch):
    node, _, seam = _after_full_tick(monkeypatch)
    seam.mark = (1, 0, None, 11)  # a heartbeat carried a new commit index
    assert node.quiet_wait() is None
    node, _, seam = _after_full_tick(monkeypatch)
    seam.mark = None  # entries not yet committed or applied
    assert node.quiet_wait() is None
    seam.mark = (1, 0, None, 10)
    node.after_tick()  # a full tick that left entries in flight takes no mark
    seam.mark = None
    node.after_tick()
    seam.mark = (1, 0, None, 10)
    assert node.quiet_wait() is None


def test_pending_journal_work_makes_the_next_wake_up_full(monkeypatch):
    node, _, _ = _after_full_tick(monkeypatch)
    node._disk._held.append((Node(LEADER_ADDR), {"type": "next_node_idx"}, 1))
    assert node.quiet_wait() is None


# ------------------------------------------------------------------ real pysyncobj


def test_an_idle_cluster_wakes_quietly_and_still_commits_holds_its_lease_and_fails_over(cluster):  # noqa: F811
    c = cluster(3)
    for node_id in ("n1", "n2", "n3"):
        c.start(node_id)
    leader = c.leader()
    commit(leader, {"type": "set_flag", "name": "maintenance", "value": "n2",
                    "expect_generation": leader.state.generation})
    before = {i: n.quiet_ticks for i, n in c.nodes.items()}
    # every member's tick thread wakes quietly for heartbeats and acks
    wait_until(lambda: all(n.quiet_ticks - before[i] >= 20 for i, n in c.nodes.items()), 20,
               "20 quiet wake-ups on every member", FAST)
    assert leader.view().role is Role.LEADER and leader.lease_ok_now()
    # a command, submitted on a follower (forwarded) and on the leader, commits at once
    follower = c.nodes[c.follower(leader)]
    for node in (follower, leader):
        want = leader.state.generation + 1
        commit(node, {"type": "set_flag", "name": "maintenance", "value": None,
                      "expect_generation": want - 1})
        wait_until(lambda w=want: all(n.state.generation == w for n in c.nodes.values()), 10,
                   "every member applied it", FAST)
    # quiet followers still notice the leader's silence and elect another
    old = next(i for i, n in c.nodes.items() if n is leader)
    c.stop(old)
    new = c.leader()
    assert new is not leader and new.view().role is Role.LEADER
