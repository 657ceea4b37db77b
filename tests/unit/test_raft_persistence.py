"""The replicated state survives restarts (invariant I2), through RaftNode and real pysyncobj.

pysyncobj keeps a node in two files: its journal (the log) and, after a log compaction
(every 5000 entries or 300 s), a full dump that replaces the compacted entries. A restart
loads the dump and replays the journal after it; a follower too far behind its leader is
sent the leader's dump (install snapshot). Each path must give back all that apply() built:
flags, health, the balancing table and the generations.

Real RaftNodes on 127.0.0.1 with a password, their data dirs under tmp_path; every wait is
for a condition with a deadline; every node is stopped and its tick thread gone at the end,
even when a test fails.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hacluster.consensus import raft
from hacluster.consensus.disk import Disk
from hacluster.consensus.pysyncobj_compat import HookedSyncObj, SyncObjConf, replicated
from hacluster.consensus.raft import RaftNode
from hacluster.consensus.state import ReplicatedState, Result
from hacluster.model import Role
from tests.support.config import config
from tests.support.net import LO, free_tcp_ports
from tests.support.wait import wait_until

SECRET = "persistence-test-secret"
FAST = 0.02  # s between polls: every condition here is cheap, read in this process
# Slower than the defaults: these tests are about the files, and a tick thread starved on a
# busy machine must not cost a leadership (and a failed commit) meanwhile.
TIMING = {"heartbeat_ms": 50, "election_timeout_min_ms": 600, "election_timeout_max_ms": 900,
          "lease_ms": 400, "leader_fallback_ms": 400}
TABLE = {"generation": 1, "services": [{"name": "ris", "vip": "10.0.0.100", "port": 443,
                                        "backends": [{"node": "n2", "port": 8443}]}]}


class Cluster:
    """Members n1..nN on 127.0.0.1, each with its own data dir, started and stopped by id."""

    def __init__(self, tmp_path: Path, size: int) -> None:
        ports = free_tcp_ports(2 * size)
        members = [{"id": f"n{i + 1}", "address": LO, "raft_port": ports[2 * i],
                    "grpc_port": ports[2 * i + 1]} for i in range(size)]
        self.configs = {m["id"]: config(node_id=m["id"], members=members, vips=[], timing=TIMING,
                                        data_dir=str(tmp_path / m["id"])) for m in members}
        self.nodes: dict[str, RaftNode] = {}

    def data_dir(self, node_id: str) -> Path:
        return self.configs[node_id].data_dir

    def start(self, node_id: str, disk: Disk | None = None,
              prepare: Callable[[RaftNode], None] | None = None) -> RaftNode:
        """disk: the journal's system calls (a recording one); prepare(node) runs before start."""
        node = RaftNode(self.configs[node_id], SECRET, disk=disk)
        if prepare is not None:
            prepare(node)
        node.start()
        self.nodes[node_id] = node
        return node

    def stop(self, node_id: str) -> None:
        """Stop a member and wait until its files and port are closed, as after a process exit
        (pysyncobj closes them on its tick thread, after destroy() has returned)."""
        node = self.nodes.pop(node_id)
        node.stop()
        assert node._sync is not None
        obj = node._sync.obj
        wait_until(lambda: not obj.tick_thread_alive(), 10, f"{node_id}'s tick thread to end", FAST)

    def stop_all(self) -> None:
        """Stop every member, even when one of them fails to stop; then report the first."""
        failed: list[AssertionError] = []
        for node_id in list(self.nodes):
            try:
                self.stop(node_id)
            except AssertionError as e:
                failed.append(e)
        if failed:
            raise failed[0]

    def leader(self) -> RaftNode:
        def sole_leader() -> RaftNode | None:
            leaders = [n for n in self.nodes.values() if n.view().role is Role.LEADER]
            return leaders[0] if len(leaders) == 1 else None
        return wait_until(sole_leader, 20, "one leader", FAST)

    def follower(self, leader: RaftNode) -> str:
        return next(i for i, n in self.nodes.items() if n is not leader)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # No agent loop runs here to call agent_alive(): keep the stuck-agent watchdog (its own
    # test is test_watchdog.py) from muting the leaders.
    monkeypatch.setattr(raft, "AGENT_STUCK_S", float("inf"))
    made: list[Cluster] = []

    def build(size: int) -> Cluster:
        made.append(Cluster(tmp_path, size))
        return made[-1]

    yield build
    for c in made:
        c.stop_all()


def commit(node: RaftNode, command: dict[str, Any]) -> Result:
    """Submit through RaftNode, as the agent does, and wait for the applied result."""
    got: list[tuple[Result | None, int]] = []
    node.submit(command, lambda result, err: got.append((result, err)))
    result, err = wait_until(lambda: got[0] if got else None, 10, f"{command['type']} applied", FAST)
    assert err == 0 and result is not None and result.ok, (command, result, err)
    return result


def fill(leader: RaftNode) -> dict[str, Any]:
    """Commit one of each kind of state (epoch, flag, health, table); return the state."""
    term = leader.view().term
    leader.register_epoch(term)
    wait_until(lambda: leader.view().epoch_applied, 10, f"epoch {term} applied", FAST)
    commit(leader, {"type": "set_flag", "name": "maintenance", "value": "n2",
                    "expect_generation": leader.state.generation})
    commit(leader, {"type": "health", "term": term,
                    "changes": {"n1/https": True, "n2/https": False}})
    commit(leader, {"type": "table", "term": term, "expect_generation": 0, "table": TABLE})
    state = persisted(leader)
    assert state["flags"] == {"maintenance": "n2"} and state["table_generation"] == 1
    assert state["epoch_term"] == term and state["generation"] == 4
    return state


def persisted(node: RaftNode) -> dict[str, Any]:
    """Every field of the node's replicated state (read while no command is in flight)."""
    return dataclasses.asdict(node.state)


def compact(node: RaftNode, dump: Path) -> None:
    """Force a log compaction; wait until the dump is written and the journal cut down to the
    two entries pysyncobj keeps (the dump's last two), so that a restart needs the dump."""
    assert node._sync is not None
    obj = node._sync.obj
    obj.forceLogCompaction()
    wait_until(lambda: dump.is_file() and obj.getStatus()["log_len"] == 2, 10,
               "the log compacted into a dump", FAST)


def caught_up(node: RaftNode, leader: RaftNode | None = None) -> bool:
    """Everything committed is applied (to the leader's last applied entry, if given)."""
    s = node._sync
    if s is None or s.last_applied < s.commit_index:
        return False
    return leader is None or (leader._sync is not None and s.last_applied == leader._sync.last_applied)


def restart_alone(c: Cluster) -> RaftNode:
    c.stop("n1")
    node = c.start("n1")
    wait_until(lambda: node.view().role is Role.LEADER and caught_up(node), 20,
               "n1 leading again with its log applied", FAST)
    return node


# ---------------------------------------------------------------- one member

def test_a_restart_replays_the_journal(cluster):
    c = cluster(1)
    c.start("n1")
    before = fill(c.leader())
    node = restart_alone(c)
    assert not (c.data_dir("n1") / "raft.dump").exists()  # the journal alone, no dump yet
    assert persisted(node) == before


def test_a_restart_after_a_log_compaction_loads_the_state_from_the_dump(cluster):
    c = cluster(1)
    c.start("n1")
    node = c.leader()
    before = fill(node)
    compact(node, c.data_dir("n1") / "raft.dump")
    node = restart_alone(c)
    assert persisted(node) == before
    # and the state keeps going forward from there: generations continue, not restart
    result = commit(node, {"type": "set_flag", "name": "drain", "value": "n3",
                           "expect_generation": before["generation"]})
    assert result.generation == before["generation"] + 1


def test_a_dump_of_an_older_state_gets_the_newer_fields_defaults(cluster):
    """ReplicatedState.__setstate__ runs when pysyncobj unpickles its dump: a dump written by
    a version whose state had no health nor table yet loads with their defaults."""
    c = cluster(1)
    c.start("n1")
    node = c.leader()
    before = fill(node)
    stripped: list[bool] = []

    def as_an_older_version() -> None:  # the state belongs to the tick thread
        for name in ("health", "table", "table_generation"):
            del node.state.__dict__[name]
        stripped.append(True)
    node.call_soon(as_an_older_version)
    wait_until(lambda: stripped, 10, "the state stripped of its newer fields", FAST)
    compact(node, c.data_dir("n1") / "raft.dump")
    node = restart_alone(c)
    assert persisted(node) == {**before, "health": {}, "table": None, "table_generation": 0}


class _SyncerBeforeTheFix(HookedSyncObj):
    """raft._Syncer as it was: its state created before SyncObj.__init__ and not declared as
    replicated state, so that pysyncobj left it out of every full dump."""

    def __init__(self, hooks: RaftNode, self_addr: str, others: list[str], conf: SyncObjConf,
                 journal: Any = None):
        self._state = ReplicatedState()
        super().__init__(hooks, self_addr, others, conf, journal=journal)

    @replicated
    def apply(self, payload: bytes) -> Result:
        return self._state.apply(payload)


def test_a_dump_written_before_the_fix_loads_and_the_state_starts_empty_from_it(cluster):
    """Such a dump holds no state, and the journal entries it replaced are gone: the node
    starts from an empty state at the dump's index (what it lost, no version can give back).
    It then works as usual, and its next dump holds its state."""
    c = cluster(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(raft, "_Syncer", _SyncerBeforeTheFix)
        c.start("n1")
        node = c.leader()
        fill(node)
        compact(node, c.data_dir("n1") / "raft.dump")
        c.stop("n1")
    node = c.start("n1")
    wait_until(lambda: node.view().role is Role.LEADER and caught_up(node), 20,
               "n1 leading again", FAST)
    assert persisted(node) == dataclasses.asdict(ReplicatedState())
    commit(node, {"type": "set_flag", "name": "maintenance", "value": "n2", "expect_generation": 0})
    compact(node, c.data_dir("n1") / "raft.dump")
    node = restart_alone(c)
    assert node.state.flags == {"maintenance": "n2"} and node.state.generation == 1


# ---------------------------------------------------------------- three members

@pytest.mark.parametrize("files", ["kept", "lost"])
def test_a_follower_behind_the_compacted_log_gets_the_state_from_the_leaders_dump(cluster, files):
    """A follower that was down while its leader compacted the log past the follower's last
    entry catches up from the leader's dump (install snapshot), from its own older files or,
    a rebuilt server, from none."""
    c = cluster(3)
    for node_id in c.configs:
        c.start(node_id)
    leader = c.leader()
    fill(leader)
    behind = c.follower(leader)
    wait_until(lambda: caught_up(c.nodes[behind], leader), 10, f"{behind} caught up", FAST)
    c.stop(behind)
    for i in range(3):  # past the follower's last entry: the leader keeps only its last two
        commit(leader, {"type": "set_flag", "name": f"while-{behind}-down-{i}", "value": "x",
                        "expect_generation": leader.state.generation})
    leader_id = next(i for i, n in c.nodes.items() if n is leader)
    compact(leader, c.data_dir(leader_id) / "raft.dump")
    if files == "lost":
        shutil.rmtree(c.data_dir(behind))

    node = c.start(behind)
    wait_until(lambda: caught_up(node, leader), 20, f"{behind} caught up from the dump", FAST)
    assert (c.data_dir(behind) / "raft.dump").is_file()  # what the leader sent it
    assert persisted(node) == persisted(leader)
    assert len(node.state.flags) == 4 and node.state.generation == 7
