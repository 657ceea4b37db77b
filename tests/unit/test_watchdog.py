"""The leader goes silent when its agent loop stops ticking (no VIP renewals any more)."""

from hacluster.consensus import raft as raft_mod
from hacluster.consensus.raft import AGENT_STUCK_S, RaftNode
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft


def test_leader_mutes_heartbeats_while_the_agent_loop_is_stuck(monkeypatch):
    clock = FakeClock(1000.0)
    monkeypatch.setattr(raft_mod, "_now", clock)
    node = RaftNode(config(), "s" * 32)
    node.agent_alive()
    node._check_agent(clock())
    assert not node.mute_heartbeats
    clock.advance(AGENT_STUCK_S + 0.1)
    node._check_agent(clock())
    assert node.mute_heartbeats
    node.agent_alive()
    node._check_agent(clock())
    assert not node.mute_heartbeats


def test_status_flags_a_stuck_loop():
    from hacluster.agent import Agent
    from hacluster.hostops.fake import FakeHostOps

    clock = FakeClock(100.0)
    agent = Agent(config(), FakeHostOps(), FakeRaft(), clock=clock)
    agent.loop.tick()
    assert "STUCK" not in agent.views.status().sentence
    clock.advance(5.0)
    assert "AGENT LOOP STUCK for 5.0 s" in agent.views.status().sentence
