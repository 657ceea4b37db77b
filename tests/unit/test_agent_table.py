"""The agent's side of the balancing table: the leader commits, every node applies."""

from __future__ import annotations

from hacluster.agent import Agent
from hacluster.consensus.state import encode
from hacluster.dataplane.table import BackendState
from hacluster.hostops.fake import FakeHostOps
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view

SERVICES = [{"name": "web", "vip": "10.0.0.100", "port": 80, "check": "web",
             "backends": [{"node": "n1"}, {"node": "n2"}, {"node": "n3"}]}]


class FakeDataplane:
    def __init__(self):
        self.wanted = []

    def want(self, table):
        self.wanted.append(table)

    def applied_generation(self):
        return self.wanted[-1].generation if self.wanted else None

    def wanted_generation(self):
        return self.applied_generation()


def _agent(role="leader"):
    cfg = config(checks=[{"name": "web", "kind": "http"}], services=SERVICES)
    raft = FakeRaft(current=leader_view() if role == "leader" else view(leader="n2"))
    raft.state.apply(encode({"type": "leader_epoch", "term": raft.current.term, "node": "n1"}))
    dp = FakeDataplane()
    clock = FakeClock(100.0)
    return Agent(cfg, FakeHostOps(), raft, clock=clock, dataplane=dp), raft, dp, clock


def _run(agent, clock, seconds, step=0.05):
    for _ in range(int(seconds / step)):
        agent.loop.tick()
        clock.advance(step)


def test_leader_commits_a_first_table_and_a_new_one_when_health_changes():
    agent, raft, dp, clock = _agent()
    _run(agent, clock, 0.3)
    assert raft.state.table_generation == 1
    assert [b.state for b in dp.wanted[-1].services[0].backends] == [BackendState.ACTIVE] * 3
    assert "table gen 1" in agent.loop.report().sentence
    n = len(raft.submitted)
    _run(agent, clock, 0.5)
    assert len(raft.submitted) == n  # nothing changed: nothing proposed
    raft.state.apply(encode({"type": "health", "term": raft.current.term,
                             "changes": {"n2/web": False}}))
    _run(agent, clock, 0.3)
    assert raft.state.table_generation == 2
    states = {b.id: b.state for b in dp.wanted[-1].services[0].backends}
    assert states["n2"] is BackendState.DOWN and "table gen 2" in agent.loop.report().sentence


def test_a_follower_applies_the_committed_table_and_never_proposes():
    agent, raft, dp, clock = _agent(role="follower")
    _run(agent, clock, 0.3)
    assert not getattr(raft, "submitted", []) and dp.wanted == []
    leader, lraft, _, lclock = _agent()
    _run(leader, lclock, 0.3)
    raft.state.table, raft.state.table_generation = lraft.state.table, lraft.state.table_generation
    _run(agent, clock, 0.1)
    assert dp.wanted and dp.wanted[-1].generation == 1  # hot standby: the same table
