"""While a new leader waits for a killed holder's kernel lifetime (its ARP probe is still
answered), `hacluster status` says so -- "waiting up to 2 s for n1's address lifetime to
end; n1's kernel still answers" -- instead of "HELD BY NO ONE": from the loop's tick, through
the read model and the admin API, to the overview and its screen."""

from __future__ import annotations

import dataclasses

from hacluster.admin import status_to_pb
from hacluster.agent import Agent
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import Role
from hacluster.statuspage import status_document
from hacluster_cli.client import status_from_pb
from hacluster_cli.overview import summarize
from hacluster_cli.overview_screen import render_overview
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view

from .test_overview import gossip, status, table

VIP = "10.0.0.100"
WORDS = "waiting up to 2 s for n1's address lifetime to end; n1's kernel still answers"


def _n2_after_n1_was_killed() -> tuple[Agent, FakeRaft, FakeHostOps, FakeClock]:
    """n2 followed n1, then won the election after n1's agent was killed; n1's kernel still
    has the VIP (its lifetime has not ended), so n2's ARP probe is answered."""
    raft = FakeRaft(current=view(leader="n1"))
    host = FakeHostOps(answering={VIP})
    clock = FakeClock(100.0)
    agent = Agent(config(node_id="n2"), host, raft, clock=clock)
    agent.loop.tick()  # a follower of n1
    raft.current = leader_view(leader="n2", peers=("n1", "n3"))
    return agent, raft, host, clock


def test_the_tick_and_the_agents_status_say_what_the_claim_waits_for() -> None:
    agent, _, host, clock = _n2_after_n1_was_killed()
    clock.advance(0.01)
    sentence = agent.loop.tick()
    assert host.count("claim") == 0
    assert sentence.endswith(WORDS) and "claiming 10.0.0.100" in sentence
    (vip,) = agent.views.status().vips
    assert not vip.held and vip.waiting == WORDS
    # the old kernel's lifetime ends: the probe goes unanswered, n2 claims, nothing waits
    host.answering.clear()
    clock.advance(0.01)
    agent.loop.tick()
    (vip,) = agent.views.status().vips
    assert vip.held and vip.waiting == "" and host.count("claim") == 1


def test_without_a_known_old_holder_the_words_say_the_old_holder() -> None:
    raft = FakeRaft(current=leader_view(leader="n2", peers=("n1", "n3")))
    agent = Agent(config(node_id="n2"), FakeHostOps(answering={VIP}), raft, clock=FakeClock())
    agent.loop.tick()
    assert agent.views.status().vips[0].waiting == (
        "waiting up to 2 s for the old holder's address lifetime to end; its kernel still answers")


def test_the_waiting_words_cross_the_admin_api_and_reach_the_status_page() -> None:
    agent, _, _, clock = _n2_after_n1_was_killed()
    clock.advance(0.01)
    agent.loop.tick()
    st = agent.views.status()
    assert status_from_pb(status_to_pb(st)).vips == st.vips
    vip = status_document(st, None, None, None)["status"]["vips"][0]
    assert vip["holder"] is None and vip["holder_seen"] == WORDS


def test_the_overview_says_waiting_instead_of_held_by_no_one() -> None:
    leader = status("n2", leader="n2", held=(False, True))
    leader = dataclasses.replace(leader, vips=(
        dataclasses.replace(leader.vips[0], waiting=WORDS), leader.vips[1]))
    asked = status("n3", leader="n2")
    ov = summarize(asked, gossip("n3", leader="n2"), table("n3"), leader)
    (first, second) = ov.vips
    assert (first.holders, first.waiting) == ((), WORDS) and second.holders == ("n2",)
    assert ov.problems == (f"VIP 10.0.0.100/24 is not held yet: the leader n2 is {WORDS}",)
    assert ov.to_dict()["vips"][0]["waiting"] == WORDS
    screen = render_overview(ov)
    assert "HELD BY NO ONE" not in screen
    lines = screen.splitlines()
    at = lines.index("  10.0.0.100/24  eth0  not held yet:")
    assert lines[at + 1] == f"    {WORDS}"
    assert max(len(line) for line in lines) <= 100


def test_a_vip_the_leader_does_not_wait_for_is_still_held_by_no_one() -> None:
    leader = status("n1", leader="n1", held=(False, True))
    assert leader.role is Role.LEADER
    ov = summarize(leader, gossip(), table(), leader)
    assert ov.vips[0].waiting == ""
    assert "10.0.0.100/24  eth0  HELD BY NO ONE" in render_overview(ov)
