"""A member whose data disk fills (issue 15, finding 4), on a real 3-member Raft: the leader
steps down with a clear ERROR, the view says why (for `hacluster status` and the metrics),
a member with room leads, and all is as before once space is freed. With every disk full a
full member still leads (better than no VIP at all), without leaving and winning in a loop.

The journal's Disk reports the free space (RecordingDisk.free): the rules are tested here,
a really full filesystem in tests/lab/test_disk_full.py.
"""

from __future__ import annotations

import logging
import time

from hacluster.consensus.raft import RaftNode
from hacluster.model import Role
from tests.support.disk import RecordingDisk
from tests.support.wait import wait_until
from tests.unit.test_raft_persistence import FAST, cluster, commit  # noqa: F401 - the fixture

FULL = 64 * 1024  # bytes free: below journal.MIN_FREE


def _start(c) -> dict[str, RecordingDisk]:
    disks = {n: RecordingDisk(node=n) for n in c.configs}
    for n, d in disks.items():
        c.start(n, disk=d)
    return disks


def _id(c, node: RaftNode) -> str:
    return next(i for i, n in c.nodes.items() if n is node)


def test_a_leader_whose_disk_fills_steps_down_and_a_member_with_room_leads(cluster, caplog):  # noqa: F811
    c = cluster(3)
    disks = _start(c)
    leader = c.leader()
    old = _id(c, leader)
    disks[old].free = FULL
    with caplog.at_level(logging.ERROR, logger="hacluster"):
        wait_until(lambda: leader.view().role is not Role.LEADER, 10, f"{old} to step down", FAST)
    assert "Stepping down from leadership" in caplog.text and "Raft data disk full" in caplog.text
    problem = leader.view().disk_problem
    assert "Raft data disk full" in problem and "64 KiB free" in problem, problem
    new = c.leader()
    assert _id(c, new) != old and new.view().disk_problem == ""
    # the cluster still commits; the full member still takes entries into its reserve
    result = commit(new, {"type": "set_flag", "name": "after", "value": "x",
                          "expect_generation": new.state.generation})
    wait_until(lambda: leader.state.generation == result.generation, 10, f"{old} applied it", FAST)

    disks[old].free = 1 << 30
    wait_until(lambda: leader.view().disk_problem == "", 10, f"{old}'s problem cleared", FAST)
    assert leader.view().journal_write_errors == 0  # nothing failed: it stepped down in time


def test_with_every_disk_full_one_member_still_leads_and_stays(cluster):  # noqa: F811
    c = cluster(3)
    disks = _start(c)
    first = c.leader()
    for d in disks.values():
        d.free = FULL
    wait_until(lambda: first.view().role is not Role.LEADER, 10, "the leader to step down", FAST)
    leader = c.leader()  # after the hold-back: a full member, as none has room
    term = leader.view().term
    held = wait_until(lambda: leader.view().role is Role.LEADER and leader.view().term == term
                      and leader.view().disk_problem, 10, "the full leader stays", FAST)
    assert "Raft data disk full" in held
    for _ in range(30):  # ~3 s, longer than the hold-back: no new election
        time.sleep(0.1)
        assert leader.view().role is Role.LEADER and leader.view().term == term
