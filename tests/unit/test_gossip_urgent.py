"""Out-of-turn probes (gossip/urgent.py): when Raft has stopped hearing a member, the leader's
gossip probes it at once, directly and through others together, instead of at its turn."""

from __future__ import annotations

import threading

from hacluster.gossip.suspicion import suspicion_bounds
from hacluster.gossip.types import GossipState
from hacluster.gossip.urgent import REPEAT_PROBES
from tests.support.gossip_net import Cluster
from tests.support.wait import wait_until

ALIVE, SUSPECT, DEAD = GossipState.ALIVE, GossipState.SUSPECT, GossipState.DEAD


def settled(n: int = 3) -> Cluster:
    c = Cluster(n)
    c.run_until(c.all_alive, max_rounds=10)
    return c


def test_a_powered_off_member_is_suspect_after_one_urgent_probe():
    c = settled()
    c.net.stop("n3")
    assert c["n1"].request_probe("n3")
    c["n1"].probe_urgent()
    assert c.state("n1", "n3") is SUSPECT  # no probe round needed
    assert c["n1"].stats()["urgent_probes"] == 1
    # the ordinary course from there: confirmed by others, then dead
    c.run_until(lambda: c.all_see("n3", DEAD), max_rounds=60)


def test_a_live_member_answers_and_nobody_is_doubted():
    c = settled()
    assert c["n1"].request_probe("n2")
    c["n1"].probe_urgent()
    assert c.state("n1", "n2") is ALIVE and c.changes == []


def test_an_answer_through_another_member_keeps_it_alive():
    c = settled()
    c.net.cut_link("n1", "n3")  # only our own link is down
    assert c["n1"].request_probe("n3")
    c["n1"].probe_urgent()
    assert c.state("n1", "n3") is ALIVE and c["n1"].stats()["indirect_acks"] == 1


def test_at_most_once_per_repeat_interval_and_only_alive_members():
    c = settled()
    n1 = c["n1"]
    assert n1.request_probe("n2") and not n1.request_probe("n2")  # queued already
    n1.probe_urgent()
    assert not n1.request_probe("n2")  # probed out of turn a moment ago
    c.clock.advance((REPEAT_PROBES - 1) * c.timing.probe_interval)
    assert not n1.request_probe("n2")
    c.clock.advance(c.timing.probe_interval)
    assert n1.request_probe("n2")
    n1.probe_urgent()
    assert not n1.request_probe("n1")  # ourselves
    assert not n1.request_probe("n9")  # nobody
    c.net.stop("n3")
    n1.request_probe("n3")
    n1.probe_urgent()
    c.clock.advance(REPEAT_PROBES * c.timing.probe_interval)
    assert not n1.request_probe("n3")  # suspect already: nothing to learn sooner


def test_the_urgent_thread_probes_when_woken_and_ends_on_stop():
    c = settled()
    c.net.stop("n3")
    n1 = c["n1"]
    stop = threading.Event()
    worker = threading.Thread(target=n1._run_woken, args=("urgent", stop), daemon=True)
    worker.start()
    try:
        assert n1.request_probe("n3")
        wait_until(lambda: n1.member("n3").state is SUSPECT, 5, "n3 suspect", interval=0.01)
    finally:
        stop.set()
        n1._urgent_wake.set()  # as Runner.stop(): the thread sleeps until woken, on no period
        worker.join(2)
    assert not worker.is_alive()


def test_a_suspicion_the_leader_corroborated_is_dead_at_once_and_spreads_before_the_timeout():
    c = settled(5)
    c.net.stop("n5")
    n1 = c["n1"]
    assert not n1.corroborated("n5")  # not suspected yet: nothing to corroborate
    assert n1.request_probe("n5")
    n1.probe_urgent()
    assert c.state("n1", "n5") is SUSPECT
    assert not n1.corroborated("n2") and not n1.corroborated("n1")  # alive; ourselves
    started = c.clock()
    assert n1.corroborated("n5")
    assert c.state("n1", "n5") is DEAD and n1.stats()["corroborated_deaths"] == 1
    c.run_until(lambda: c.all_see("n5", DEAD), max_rounds=10, probe=False)
    # everyone has it before even the shortest Lifeguard timeout would have run out
    t = c.timing
    low, _ = suspicion_bounds(5, t.suspicion_mult, t.suspicion_max_timeout_mult, t.probe_interval)
    assert c.clock() - started < low


def test_a_live_member_declared_dead_by_a_corroboration_refutes_it():
    c = settled(4)
    c.net.cut_link("n1", "n4")
    c.net.cut_link("n2", "n4")
    c.net.cut_link("n3", "n4")
    n1 = c["n1"]
    n1.request_probe("n4")
    n1.probe_urgent()
    assert n1.corroborated("n4")
    c.net.heal()
    c.run_until(lambda: c.all_see("n4", ALIVE), max_rounds=20, push_pull=True)
    assert c["n4"].member("n4").incarnation > 0  # it refuted with a higher incarnation
