"""Suspect by election, the agent's side: the new holder applies a table without the silent
predecessor's backends before it claims, the leader's duties keep them out while gossip
still calls the dead server alive, and put them back once it is really back."""

from __future__ import annotations

from dataclasses import replace

from hacluster.agent import Agent
from hacluster.consensus.state import encode
from hacluster.dataplane.build import build_table
from hacluster.dataplane.table import BackendState, table_to_doc
from hacluster.gossip.types import NodeMeta
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import CheckReport, CheckState, ConsensusView, GossipState, PeerLink, Role
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft
from tests.unit.test_agent_table import SERVICES, FakeDataplane
from tests.unit.test_members_checks import FakeGossip, FakeView

PASSING = NodeMeta(checks=(CheckReport("web", "http", "x:80", CheckState.PASSING, 1.0, ""),))


def leading(term: int, n2_silent: float | None, epoch_applied: bool = True,
            n2_tcp: float | None = None) -> ConsensusView:
    """n1 leads `term`; n3 acks promptly, n2 (the old holder) has been silent that long
    (and its kernel, when n2_tcp is given)."""
    return ConsensusView(
        role=Role.LEADER, term=term, leader="n1", lease_ok=True, lease_remaining_s=0.2,
        epoch_applied=epoch_applied, won_by_transfer=False, has_quorum=True, commit_index=9,
        last_applied=9, peers=(PeerLink("n2", "10.0.0.12:7100", n2_silent is not None and n2_silent < 1,
                                        n2_silent, n2_tcp),
                               PeerLink("n3", "10.0.0.13:7100", True, 0.02)))


def setup():
    """n2 held the VIP in term 2 with all three backends up; then it went silent."""
    cfg = config(checks=[{"name": "web", "kind": "http"}], services=SERVICES,
                 health={"settle_ms": 0, "rejoin_ms": 2000})
    raft = FakeRaft(current=leading(3, 0.4, epoch_applied=False))
    s = raft.state
    s.apply(encode({"type": "leader_epoch", "term": 2, "node": "n2"}))
    s.apply(encode({"type": "health", "term": 2, "changes": {f"n{i}/web": True for i in (1, 2, 3)}}))
    # the table n2's leadership committed, built as the leader builds it
    table = table_to_doc(build_table(cfg.services, {m.id: m.address for m in cfg.members},
                                     s.health, s.flags, 1))
    assert s.apply(encode({"type": "table", "term": 2, "expect_generation": 0, "table": table})).ok
    # gossip has not noticed anything yet: n2 ALIVE for minutes, its check passing
    gossip = FakeGossip([FakeView(f"n{i}", f"x{i}:1", GossipState.ALIVE, 1, PASSING, 0.1, 600.0, 0,
                                  i == 1) for i in (1, 2, 3)])
    dp, host, clock = FakeDataplane(), FakeHostOps(), FakeClock(100.0)
    agent = Agent(cfg, host, raft, clock=clock, gossip=gossip, dataplane=dp)
    return agent, raft, gossip, dp, host, clock


def run(agent, clock, seconds, step=0.01):
    for _ in range(int(seconds / step)):
        agent.loop.tick()
        clock.advance(step)


def backends(table) -> dict[str, BackendState]:
    return {b.id: b.state for b in table.services[0].backends}


def test_the_first_table_the_new_holder_applies_excludes_the_silent_predecessor():
    agent, raft, _, dp, host, clock = setup()
    agent.loop.tick()  # the new leader asks for its epoch
    assert raft.epochs == [3] and host.count("claim") == 0
    # its epoch entry commits (by election: no transfer)
    assert raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1",
                                    "by_election": True})).ok
    raft.current = leading(3, 0.4)
    wanted_before = len(dp.wanted)
    agent.loop.tick()  # the tick that claims
    assert host.count("claim") == 1
    first = dp.wanted[wanted_before]  # handed to the data plane before the claim, same tick
    assert first.generation == 2 and backends(first)["n2"] is BackendState.DOWN
    assert backends(first)["n1"] is BackendState.ACTIVE


def test_the_suspicion_holds_while_gossip_still_calls_the_dead_holder_alive():
    agent, raft, _, dp, _, clock = setup()
    raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1", "by_election": True}))
    for t in range(30):  # 3 s: Raft never hears n2 again, gossip is slow to notice
        raft.current = leading(3, 0.4 + t * 0.1)
        run(agent, clock, 0.1)
    assert raft.state.suspects == {"n2": 3} and raft.state.health["n2/web"] is False
    assert raft.state.table_generation == 2  # no table put it back
    assert backends(dp.wanted[-1])["n2"] is BackendState.DOWN


def test_a_wrongly_suspected_member_is_back_after_rejoin():
    agent, raft, gossip, dp, _, clock = setup()
    raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1", "by_election": True}))
    raft.current = leading(3, 0.02)  # it lives: it acks the new leader at once
    run(agent, clock, 1.5)
    assert raft.state.suspects == {"n2": 3}  # rejoin (2 s) counts from the suspicion
    run(agent, clock, 1.0)
    assert raft.state.suspects == {} and raft.state.health["n2/web"] is True
    assert backends(dp.wanted[-1])["n2"] is BackendState.ACTIVE


def test_a_dead_holder_found_dead_by_gossip_stays_down_after_rejoin():
    agent, raft, gossip, _, _, clock = setup()
    raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1", "by_election": True}))
    raft.current = leading(3, 5.0)
    gossip.views[1] = replace(gossip.views[1], state=GossipState.DEAD, state_age=3.0)
    run(agent, clock, 3.0)
    assert raft.state.suspects == {"n2": 3} and raft.state.health["n2/web"] is False


def test_without_gossip_a_suspect_is_back_once_raft_hears_it_for_rejoin():
    agent, raft, _, _, _, clock = setup()
    agent = Agent(agent.config, FakeHostOps(), raft, clock=clock, dataplane=FakeDataplane())
    raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1", "by_election": True}))
    raft.current = leading(3, 3.0)
    run(agent, clock, 2.5)
    assert raft.state.suspects == {"n2": 3}
    raft.current = leading(3, 0.02)
    run(agent, clock, 2.5)
    assert raft.state.suspects == {}


def test_the_leader_has_gossip_probe_a_member_raft_stopped_hearing():
    agent, raft, gossip, _, _, clock = setup()
    raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1"}))
    raft.current = leading(3, 0.1)  # a late ack or two: nothing yet
    run(agent, clock, 0.05)
    assert getattr(gossip, "probes", []) == []
    raft.current = leading(3, 0.15)  # health.silence_probe_ms
    run(agent, clock, 0.05)
    assert set(gossip.probes) == {"n2"}  # every tick: gossip itself limits how often it probes


def test_a_member_whose_kernel_still_acks_is_not_probed_out_of_turn():
    agent, raft, gossip, _, _, clock = setup()
    raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1"}))
    raft.current = leading(3, 0.4, n2_tcp=0.01)  # starved: late Raft acks, a live kernel
    run(agent, clock, 0.1)
    assert getattr(gossip, "probes", []) == []
    raft.current = leading(3, 0.4, n2_tcp=0.3)
    run(agent, clock, 0.05)
    assert set(gossip.probes) == {"n2"}


def test_a_silent_non_voter_that_gossip_suspects_goes_down_without_waiting_for_dead():
    # a non-voter has no vote, but the leader hears its answers as it hears a voter's: at
    # SUSPECT + Raft and kernel silence its backends leave (before: only at gossip's DEAD,
    # 4.2 s at 25 servers in bench/scale.py)
    members = [{"id": f"n{i}", "address": f"10.0.0.1{i}", "raft_port": 7100, "grpc_port": 7101,
                **({"voter": False} if i == 4 else {})} for i in (1, 2, 3, 4)]
    cfg = config(members=members, checks=[{"name": "web", "kind": "http"}], services=SERVICES,
                 health={"settle_ms": 0})
    healthy = leading(3, 0.02)

    def with_n4(silent: float, tcp: float | None) -> ConsensusView:
        return replace(healthy, observers=(PeerLink("n4", "10.0.0.14:7100", silent < 1, silent, tcp),))

    raft = FakeRaft(current=with_n4(0.02, None))
    raft.state.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1"}))
    raft.state.apply(encode({"type": "health", "term": 3,
                             "changes": {f"n{i}/web": True for i in (1, 2, 3, 4)}}))
    views = {i: FakeView(f"n{i}", f"x{i}:1", GossipState.ALIVE, 1, PASSING, 0.1, 600.0, 0, i == 1)
             for i in (1, 2, 3, 4)}
    gossip = FakeGossip(list(views.values()))
    clock = FakeClock(100.0)
    agent = Agent(cfg, FakeHostOps(), raft, clock=clock, gossip=gossip, dataplane=FakeDataplane())
    run(agent, clock, 0.2)
    assert raft.state.health["n4/web"] is True and getattr(gossip, "probes", []) == []
    raft.current = with_n4(0.2, 0.2)  # powered off: Raft and its kernel silent
    run(agent, clock, 0.05)
    assert "n4" in gossip.probes  # probed out of turn, as a silent voter is
    gossip.views[3] = replace(views[4], state=GossipState.SUSPECT, state_age=0.0)
    raft.current = replace(with_n4(0.6, 0.6), lease_ok=False)  # our own links in doubt
    run(agent, clock, 0.05)
    assert getattr(gossip, "declared", []) == []
    raft.current = with_n4(0.6, 0.6)  # health.corroborate_ms (500) of silence
    run(agent, clock, 0.1)
    assert raft.state.health["n4/web"] is False  # at the suspicion, not at the Lifeguard timeout
    assert all(raft.state.health[f"n{i}/web"] for i in (1, 2, 3))
    assert gossip.declared == ["n4"]  # and gossip has it dead at once (gossip/urgent.py)
