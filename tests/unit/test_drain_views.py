"""The members table's DRAINING and the services table's agree: both read the replicated
`draining/<node>` flag, not a member's own gossip meta (which repeats it only at its next
publish, seconds later, and so said `no` right after `drain n3` and `DRAINING` right after
`undrain n3`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hacluster.actions import AdminActions
from hacluster.agent import Agent
from hacluster.consensus.state import encode
from hacluster.gossip.types import GossipState, NodeMeta
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import Load
from hacluster_cli.overview import summarize
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view

SERVICES = [{"name": "web", "vip": "10.0.0.100", "port": 80,
             "backends": [{"node": "n1"}, {"node": "n2"}, {"node": "n3"}]}]


@dataclass
class _Member:
    """One member as the gossip membership reports it (the fields views.py reads)."""

    node: str
    address: str
    state: GossipState
    incarnation: int
    meta: NodeMeta | None
    last_seen_age: float | None = 0.1
    state_age: float = 5.0
    confirmations: int = 0
    is_self: bool = False


class _Gossip:
    def __init__(self, draining: bool) -> None:
        meta = NodeMeta(checks=(), load=Load(1, 2), draining=draining, version="0.2.0")
        self.views = [_Member(n, f"10.0.0.1{i}:7102", GossipState.ALIVE, 1, meta, is_self=n == "n1")
                      for i, n in enumerate(("n1", "n2", "n3"), start=1)]

    def members(self) -> tuple[_Member, ...]:
        return tuple(self.views)

    def awareness(self) -> int:
        return 0

    def request_probe(self, node: str) -> bool:
        return True


def _cluster(gossip_says_draining: bool) -> tuple[Agent, FakeRaft, FakeClock, _Gossip]:
    """n1 leads a 3-member cluster; every member's gossip meta says `gossip_says_draining`
    (stale: the members have not published since the flag changed)."""
    clock = FakeClock(100.0)
    raft = FakeRaft(current=leader_view())
    raft.state.apply(encode({"type": "leader_epoch", "term": raft.current.term, "node": "n1"}))
    gossip = _Gossip(gossip_says_draining)
    agent = Agent(config(services=SERVICES), FakeHostOps(), raft, clock=clock, gossip=gossip)
    _ticks(agent, clock)
    return agent, raft, clock, gossip


def _ticks(agent: Agent, clock: FakeClock, n: int = 5) -> None:
    """A few ticks: the leader's table step turns the committed flags into a table."""
    for _ in range(n):
        agent.loop.tick()
        clock.advance(0.05)


def _members_draining(agent: Agent) -> dict[str, bool]:
    return {m.id: m.draining for m in agent.views.members_status().members}


def _backend_states(agent: Agent) -> dict[str, str]:
    (web,) = agent.views.backends_status().services
    return {b.id: b.state for b in web.backends}


def test_after_drain_both_tables_say_draining_though_gossip_has_not_caught_up() -> None:
    agent, raft, clock, gossip = _cluster(gossip_says_draining=False)
    AdminActions(agent.config, raft).drain("n3", undo=False, disable=False)
    _ticks(agent, clock)
    assert _backend_states(agent)["n3"] == "draining"
    assert _members_draining(agent) == {"n1": False, "n2": False, "n3": True}


def test_after_undrain_neither_table_says_draining_though_gossip_still_does() -> None:
    agent, raft, clock, gossip = _cluster(gossip_says_draining=True)
    actions = AdminActions(agent.config, raft)
    actions.drain("n3", undo=False, disable=False)
    _ticks(agent, clock)
    actions.drain("n3", undo=True, disable=False)
    _ticks(agent, clock)
    assert set(_backend_states(agent).values()) == {"active"}
    assert _members_draining(agent) == {"n1": False, "n2": False, "n3": False}


def test_the_overview_shows_the_same_fact_in_both_tables() -> None:
    agent, raft, clock, gossip = _cluster(gossip_says_draining=False)
    AdminActions(agent.config, raft).drain("n3", undo=False, disable=False)
    _ticks(agent, clock)
    # n3 has not published any meta yet: its draining is still known (it is replicated)
    gossip.views[2] = replace(gossip.views[2], meta=None)
    ov = summarize(agent.views.status(), agent.views.members_status(), agent.views.backends_status(),
                   agent.views.status())
    assert [m.draining for m in ov.members] == [False, False, True]
    assert ov.services is not None and ov.services[0].draining == ("n3",)
