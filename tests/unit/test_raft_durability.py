"""What a real 3-member Raft acknowledges is on disk (issue 15, finding 3), without strace.

* The order of system calls, recorded through the journal's Disk seam on one timeline for
  the three members: a command is acknowledged only after the leader and a follower wrote
  and flushed its entry; a vote and a vote request go out only after the term and vote were
  flushed, renamed into place and the directory flushed.
* The page cache itself, with the real Disk: at the moment pysyncobj acknowledges the
  command, no page of the leader's journal (nor of a follower's) waits for writeback
  (/proc/kpageflags, tests/support/pagecache.py), and another process reads the entry back
  with pysyncobj's own FileJournal. Before the fix the journal was a sparse mmap that
  nothing ever flushed: its pages were still dirty at the ack.

Real RaftNodes on 127.0.0.1 (test_raft_persistence's Cluster), data dirs under tmp_path.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hacluster.consensus.raft import RaftNode
from hacluster.model import Role
from tests.support import pagecache
from tests.support.disk import Op, RecordingDisk
from tests.support.wait import wait_until
from tests.unit.test_raft_persistence import FAST, cluster  # noqa: F401 - the fixture

JOURNAL, META = "raft.journal", "raft.journal.meta"


def _submit_marked(leader: RaftNode, on_ack: Any) -> str:
    """Commit a flag whose name is unique (it appears verbatim in the journal's record)."""
    marker = f"durable-{uuid.uuid4().hex[:12]}"
    got: list[int] = []

    def ack(result: Any, err: int) -> None:
        on_ack()
        got.append(err)
    leader.submit({"type": "set_flag", "name": marker, "value": "x",
                   "expect_generation": leader.state.generation}, ack)
    assert wait_until(lambda: got, 10, "the command acknowledged", FAST) == [0]
    return marker


def _leader_id(c: Any, leader: RaftNode) -> str:
    return next(i for i, n in c.nodes.items() if n is leader)


def _acked_on_timeline(leader: RaftNode, lid: str, ops: list[Op],
                       lock: threading.Lock) -> tuple[list[Op], int, bytes]:
    """Commit a marked command; the timeline with its ack (recorded on the leader's tick
    thread, right when pysyncobj acknowledges), the ack's place, and the marker."""
    def ack() -> None:
        with lock:
            ops.append(Op("ack", lid, ""))
    marker = _submit_marked(leader, ack).encode()
    with lock:
        timeline = list(ops)
    return timeline, timeline.index(Op("ack", lid, "")), marker


def test_a_command_is_acknowledged_only_after_a_majority_wrote_and_flushed_it(cluster):  # noqa: F811
    c, ops, lock, _ = _recorded(cluster)
    leader = c.leader()
    lid = _leader_id(c, leader)
    timeline, acked, marker = _acked_on_timeline(leader, lid, ops, lock)

    def flushed_before_ack(node: str) -> bool:
        wrote = next((i for i, o in enumerate(timeline) if o.node == node and o.op == "write"
                      and o.name == JOURNAL and marker in o.data), None)
        if wrote is None:
            return False
        flushed = next((i for i, o in enumerate(timeline[wrote:], wrote)
                        if o.node == node and o.op == "flush" and o.name == JOURNAL), None)
        return flushed is not None and flushed < acked

    assert flushed_before_ack(lid), "the leader acknowledged before its own copy was flushed"
    followers = [n for n in c.configs if n != lid]
    assert any(flushed_before_ack(f) for f in followers), \
        "acknowledged before any follower had flushed the entry: not on a majority's disks"


def test_votes_and_vote_requests_go_out_only_once_term_and_vote_are_durable(cluster):  # noqa: F811
    ops: list[Op] = []
    lock = threading.Lock()
    c = cluster(3)

    def record_sends(node_id: str) -> Any:
        def prepare(node: RaftNode) -> None:
            send = node.on_send

            def on_send(message: dict[str, Any], to: Any = None) -> dict[str, Any] | None:
                out = send(message, to)
                if out is not None and out.get("type") in ("request_vote", "response_vote"):
                    with lock:
                        ops.append(Op(f"send {out['type']}", node_id, "", pickle.dumps(out["term"])))
                return out
            node.on_send = on_send  # type: ignore[method-assign] - the hook pysyncobj calls
        return prepare

    for node_id in c.configs:
        c.start(node_id, disk=RecordingDisk(ops, node_id, lock), prepare=record_sends(node_id))
    c.leader()
    with lock:
        timeline = list(ops)
    sends = [(i, o) for i, o in enumerate(timeline) if o.op.startswith("send ")]
    assert {o.op for _, o in sends} == {"send request_vote", "send response_vote"}, sends
    for at, send in sends:
        term = pickle.loads(send.data)
        mine = [(i, o) for i, o in enumerate(timeline[:at]) if o.node == send.node]
        # the last meta written before the send holds this term and a vote
        wrote = max(i for i, o in mine if o.op == "write" and o.name == f"{META}.tmp")
        meta = pickle.loads(timeline[wrote].data)
        assert meta["currentTerm"] == term and meta["votedForNodeId"] is not None, (send, meta)
        if send.op == "send request_vote":
            assert meta["votedForNodeId"] == c.configs[send.node].me.raft_endpoint
        after = [(o.op, o.name) for i, o in mine if i > wrote]
        assert after[:3] == [("flush", f"{META}.tmp"), ("replace", f"{META}.tmp>{META}"),
                             ("flush_path", c.data_dir(send.node).name)], (send, after)


_READ_BACK = """
import json, sys
from pysyncobj.journal import FileJournal
marker = sys.argv[1].encode()
found = {}
for path in sys.argv[2:]:
    j = FileJournal(path)
    found[path] = any(marker in j[i][0] for i in range(len(j)))
print(json.dumps(found))
"""


def test_at_the_ack_the_entry_is_on_the_disks_and_another_process_reads_it(cluster, tmp_path):  # noqa: F811
    why_not = pagecache.supported(tmp_path)
    if why_not:
        pytest.skip(why_not)
    c = cluster(3)
    for node_id in c.configs:
        c.start(node_id)
    leader = c.leader()
    lid = _leader_id(c, leader)
    journals = {n: c.data_dir(n) / JOURNAL for n in c.configs}
    dirty_at_ack: dict[str, list[int]] = {}

    def ack() -> None:  # on the leader's tick thread, right when pysyncobj acknowledges
        for node_id, path in journals.items():
            dirty_at_ack[node_id] = pagecache.dirty_pages(path)
    marker = _submit_marked(leader, ack)
    assert dirty_at_ack[lid] == [], f"the leader's journal had pages not yet on disk: {dirty_at_ack}"
    followers = [n for n in c.configs if n != lid]
    assert any(dirty_at_ack[f] == [] for f in followers), \
        f"no follower's journal was on disk at the ack: {dirty_at_ack}"

    proc = subprocess.run([sys.executable, "-c", _READ_BACK, marker, *map(str, journals.values())],
                          capture_output=True, text=True, timeout=60, check=True)
    found = {Path(p).parent.name: ok for p, ok in json.loads(proc.stdout).items()}
    assert found[lid] and sum(found.values()) >= 2, found


def test_commands_that_arrive_together_share_one_flush_on_every_member(cluster):  # noqa: F811
    """Group commit: the leader flushes once per tick for the commands of the tick, and a
    follower once for the acks of every append_entries that arrived together (pysyncobj
    sends one per command)."""
    c, ops, lock, _ = _recorded(cluster)
    leader = c.leader()
    n = 40
    done: list[int] = []
    with lock:
        ops.clear()

    def propose() -> None:  # all of them on the tick thread at once, as a burst would come
        for i in range(n):
            leader.submit({"type": "bench_noop", "ignorable": True, "n": i},
                          lambda result, err: done.append(err))
    leader.call_soon(propose)
    wait_until(lambda: len(done) == n, 10, f"{n} commands acknowledged", FAST)
    assert done == [0] * n
    def flushes() -> dict[str, int]:
        with lock:
            return {node: sum(1 for o in ops if o == Op("flush", node, JOURNAL)) for node in c.configs}
    # the commands were acknowledged by a majority: the third member may flush a moment later
    wait_until(lambda: all(flushes().values()), 10, "every member's flush", FAST)
    assert all(f <= n // 4 for f in flushes().values()), flushes()


def _recorded(make: Any) -> tuple[Any, list[Op], threading.Lock, dict[str, RecordingDisk]]:
    """Three members whose system calls go to one timeline (ops, under lock)."""
    ops: list[Op] = []
    lock = threading.Lock()
    c = make(3)
    disks = {n: RecordingDisk(ops, n, lock) for n in c.configs}
    for node_id in c.configs:
        c.start(node_id, disk=disks[node_id])
    return c, ops, lock, disks


def test_slow_follower_disks_delay_the_commit_but_never_the_leaders_lease(cluster):  # noqa: F811
    """CI: two followers' acks waited ~200 ms for their journal flush (five agents on one
    disk) and the leader's lease, which counted those acks, lapsed: the VIP went down for
    0.3 s. A follower now flushes on a thread of its own and answers each heartbeat's
    receipt at once; the ack, and so the commit, still wait for the flush."""
    c, ops, lock, disks = _recorded(cluster)
    leader = c.leader()
    lid = _leader_id(c, leader)
    wait_until(leader.lease_ok_now, 10, "the leader's lease", FAST)
    slow = 2 * leader.lease_s  # each journal flush of both followers: twice the lease
    followers = [n for n in disks if n != lid]
    with lock:
        mark = len(ops)  # the slow flushes are those recorded from here on
        for node_id in followers:
            disks[node_id].flush_delay[JOURNAL] = slow
    lapses: list[float] = []
    done = threading.Event()

    def watch() -> None:  # the lease as the agent reads it, every 5 ms
        while not done.wait(0.005):
            if not leader.lease_ok_now():
                lapses.append(time.monotonic())

    def slow_flushes_over() -> bool:  # each follower flushed slowly, and none still is
        with lock:
            late = ops[mark:]
        return all(0 < late.count(Op("flush", n, JOURNAL)) == late.count(Op("flushed", n, JOURNAL))
                   for n in followers)
    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        _submit_marked(leader, lambda: None)
        took = time.monotonic() - started
        # the leader keeps its lease until the last of the followers' slow flushes ended
        wait_until(slow_flushes_over, 10, "the followers' slow flushes to end", FAST)
    finally:
        done.set()
        watcher.join()
    assert took >= slow, f"acknowledged after {took:.2f} s, before a follower's flush could end"
    assert lapses == [], f"the lease lapsed {len(lapses)} times while the followers flushed"
    assert leader.view().role is Role.LEADER


def test_a_slow_leader_disk_holds_the_commit_until_the_leaders_own_flush_ended(cluster):  # noqa: F811
    """The leader flushes on a thread of its own, in parallel with its followers; pysyncobj
    counts the leader's copy towards every commit, so the commit must wait for that flush
    when the followers' acks come first."""
    c, ops, lock, disks = _recorded(cluster)
    leader = c.leader()
    lid = _leader_id(c, leader)
    disks[lid].flush_delay[JOURNAL] = 0.3
    timeline, acked, marker = _acked_on_timeline(leader, lid, ops, lock)
    wrote = next(i for i, o in enumerate(timeline) if o.node == lid and o.op == "write"
                 and o.name == JOURNAL and marker in o.data)
    ended = next((i for i, o in enumerate(timeline[wrote:], wrote)
                  if o.node == lid and o.op == "flushed" and o.name == JOURNAL), None)
    followers_acked = [i for i, o in enumerate(timeline[wrote:acked], wrote)
                       if o.node != lid and o.op == "flush" and o.name == JOURNAL]
    assert ended is not None and ended < acked, "acknowledged before the leader's own flush ended"
    assert followers_acked, "no follower flushed before the ack"
