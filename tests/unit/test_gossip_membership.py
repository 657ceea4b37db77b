"""Cluster-level behaviour of the SWIM + Lifeguard engine under a fake clock and network."""

from __future__ import annotations

import pytest

from hacluster.gossip.membership import GossipTiming, Membership
from hacluster.gossip.precedence import INCARNATION_LIMIT
from hacluster.gossip.suspicion import expected_confirmations, suspicion_bounds, timeout_after
from hacluster.gossip.types import GossipState, NodeMeta, NodeRecord
from hacluster.model import Load
from tests.support.gossip_net import Cluster, NullTransport, address

ALIVE, SUSPECT, DEAD, LEFT = GossipState.ALIVE, GossipState.SUSPECT, GossipState.DEAD, GossipState.LEFT


def meta_for(node: str, cpu: float = 0.0) -> NodeMeta:
    return NodeMeta(load=Load(cpu_percent=cpu or float(node[1:])), version="1.0")


def everyone_knows_metas(c: Cluster) -> bool:
    live = c.running()
    return all(c[o].member(n).meta == meta_for(n) for o in live for n in live if o != n)


def converged(c: Cluster, max_rounds: int = 30) -> Cluster:
    for node in c.ids:
        c[node].set_meta(meta_for(node))
    c.run_until(lambda: everyone_knows_metas(c) and c.all_alive(), max_rounds=max_rounds)
    return c


# ---------------------------------------------------------------- healthy cluster


def test_healthy_cluster_converges_with_metas_by_piggyback():
    c = Cluster(5)
    for node in c.ids:
        c[node].set_meta(meta_for(node))
    rounds = c.run_until(lambda: everyone_knows_metas(c) and c.all_alive(), max_rounds=30)
    assert rounds <= 10
    assert all(c[n].stats()["push_pulls_sent"] == 0 for n in c.ids)
    assert all(c[n].stats()["suspicions"] == 0 for n in c.ids)
    assert c.changes == []
    for _ in range(2 * (len(c.ids) - 1)):  # two probe passes: everyone has pinged everyone
        c.round()
    for o in c.ids:
        views = c[o].members()
        assert [v.node for v in views] == c.ids
        assert all(v.incarnation == 0 and v.last_seen_age is not None for v in views)
        me = c[o].member(o)
        assert me.is_self and me.last_seen_age == 0.0 and me.meta == meta_for(o)


def test_metas_spread_by_push_pull_alone():
    c = Cluster(6)
    for node in c.ids:
        c[node].set_meta(meta_for(node))
    rounds = c.run_until(lambda: everyone_knows_metas(c), max_rounds=20, probe=False, gossip=False,
                         push_pull=True)
    assert rounds <= 10
    assert c.net.total("ping") == 0 and c.net.total("gossip") == 0


def test_ack_carries_the_responders_record_and_sets_last_seen():
    c = Cluster(3)
    c["n2"].set_meta(meta_for("n2"))
    ack = c["n2"].handle_ping("n1", ())
    assert ack.responder == NodeRecord("n2", address("n2"), 0, ALIVE, "", 1, meta_for("n2"))
    assert c["n2"].member("n1").last_seen_age == 0.0
    assert c["n3"].member("n1").last_seen_age is None
    c.clock.advance(2.0)
    assert c["n2"].member("n1").last_seen_age == 2.0
    assert c["n2"].member("n1").meta is None  # a ping does not carry the sender's own record


def test_initial_meta_spreads_without_set_meta():
    c = Cluster(3)
    c.run_until(lambda: all(c[o].member(n).meta == NodeMeta(version="1.0")
                            for o in c.ids for n in c.ids), max_rounds=10)


# ---------------------------------------------------------------- failure detection


def test_stopped_node_becomes_suspect_then_dead_everywhere():
    c = converged(Cluster(5))
    c.net.stop("n3")
    stopped_at = c.clock()
    c.run_until(lambda: c.all_see("n3", DEAD), max_rounds=60)
    observers = {o for _, o, n, _, new in c.changes if n == "n3" and new is DEAD}
    assert observers == {"n1", "n2", "n4", "n5"}
    first_suspect = min(t for t, _, n, _, new in c.changes if n == "n3" and new is SUSPECT)
    first_dead = min(t for t, _, n, _, new in c.changes if n == "n3" and new is DEAD)
    low, _ = suspicion_bounds(5, 4, 6, c.timing.probe_interval)
    assert stopped_at <= first_suspect and first_dead - first_suspect >= low
    assert {n for _, _, n, _, _ in c.changes} == {"n3"}  # nobody else was ever doubted
    # Dead members are no longer probed.
    pings = c.net.calls.copy()
    for _ in range(40):
        c.round()
    assert all(c[o].stats()["deaths"] == 1 for o in c.running())
    assert c.net.calls[("n1", "ping")] - pings[("n1", "ping")] <= 40
    assert c.net.total("ping_req") == sum(v for (_, k), v in pings.items() if k == "ping_req")


def test_indirect_probe_keeps_a_member_alive_when_only_our_link_is_down():
    c = converged(Cluster(4))
    c.net.cut_link("n1", "n3")
    for _ in range(12):
        c.round()
    assert c.all_see("n3", ALIVE) and c.changes == []
    assert c["n1"].stats()["indirect_acks"] >= 1


def test_falsely_suspected_node_refutes_and_is_never_dead():
    c = converged(Cluster(5))
    c["n1"].handle_gossip("n2", (NodeRecord("n4", address("n4"), 0, SUSPECT, origin="n2"),))
    assert c.state("n1", "n4") is SUSPECT
    c.run_until(lambda: all(c[o].member("n4").incarnation >= 1 for o in c.ids) and c.all_alive(),
                max_rounds=10)
    assert DEAD not in c.states_seen("n4")
    assert c["n4"].stats()["refutations"] == 1


@pytest.mark.parametrize("incarnation", [INCARNATION_LIMIT, 2**62])
def test_a_forged_suspicion_beyond_any_real_incarnation_kills_nobody(incarnation):
    c = converged(Cluster(5))
    forged = NodeRecord("n4", address("n4"), incarnation, SUSPECT, origin="n2")
    for o in ("n1", "n4"):  # reaches n4 itself and a bystander, and spreads from there
        c[o].handle_gossip("n2", (forged,))
    for _ in range(30):
        c.round(push_pull=True)
    assert c.all_alive() and c.changes == []
    assert all(c[o].member("n4").incarnation == 0 for o in c.ids)  # nothing echoed, no climb
    assert c["n4"].stats()["absurd_claims"] >= 1 and c["n4"].stats()["refutations"] == 0


def test_a_suspicion_just_below_the_limit_sticks_nowhere_and_nobody_climbs():
    c = converged(Cluster(5))
    forged = NodeRecord("n4", address("n4"), INCARNATION_LIMIT - 1, SUSPECT, origin="n2")
    for o in ("n1", "n4"):  # a bystander refuses it as too far; n4 will not climb to it
        c[o].handle_gossip("n2", (forged,))
    for _ in range(20):
        c.round(push_pull=True)
    assert c.all_alive() and c.changes == []
    assert all(c[o].member("n4").incarnation == 0 for o in c.ids)
    assert c["n1"].stats()["forged_incarnations"] == 1
    assert c["n4"].stats()["claims_beyond_reach"] == 1


def test_slow_node_is_suspected_then_refutes_when_it_recovers():
    c = converged(Cluster(5))
    for other in c.ids:
        if other != "n4":
            c.net.delays[("n4", other)] = 1.0  # n4's answers come too late
    c.run_until(lambda: any(c.state(o, "n4") is SUSPECT for o in c.ids), max_rounds=20)
    c.net.heal()
    c.run_until(c.all_alive, max_rounds=20)
    assert DEAD not in c.states_seen("n4")
    assert all(c[o].member("n4").incarnation >= 1 for o in c.ids)


def test_buddy_system_tells_a_suspect_when_probing_it():
    c = converged(Cluster(2))
    c.net.dropped_kinds.add("gossip")
    c["n1"].handle_gossip("n2", (NodeRecord("n2", address("n2"), 0, SUSPECT, origin="n1"),))
    for _ in range(10):  # exhaust the normal retransmits into the void
        c["n1"].gossip_once()
    c["n1"].probe_once()
    assert c.state("n1", "n2") is ALIVE and c["n1"].member("n2").incarnation == 1


# ---------------------------------------------------------------- Lifeguard suspicion


def suspect_and_expire(confirmers: tuple[str, ...]) -> float:
    """Seconds from a suspicion of n5 (by n2) to its death, with extra confirmers."""
    from tests.support.clock import FakeClock

    clock = FakeClock()
    peers = {f"n{i}": address(f"n{i}") for i in range(2, 11)}
    m = Membership("n1", address("n1"), peers, NullTransport(), clock=clock)
    start = clock()
    for origin in ("n2",) + confirmers:
        m.handle_gossip(origin, (NodeRecord("n5", address("n5"), 0, SUSPECT, origin=origin),))
    assert m.member("n5").confirmations == min(len(confirmers), 2)
    while m.member("n5").state is SUSPECT:
        clock.advance(0.01)
        m.expire_suspicions()
    assert m.member("n5").state is DEAD
    return clock() - start


def test_confirmations_shorten_the_suspicion_timeout():
    low, high = suspicion_bounds(10, 4, 6, 0.5)
    assert (low, high) == (2.0, 12.0)
    k = expected_confirmations(10, 4)
    alone = suspect_and_expire(())
    one = suspect_and_expire(("n3",))
    two = suspect_and_expire(("n3", "n4"))
    three = suspect_and_expire(("n3", "n4", "n6"))
    assert alone == pytest.approx(high, abs=0.02)
    assert one == pytest.approx(timeout_after(1, k, low, high), abs=0.02)
    assert two == pytest.approx(low, abs=0.02) and three == pytest.approx(low, abs=0.02)
    assert two < one < alone


def test_same_reporter_twice_is_not_a_confirmation():
    m = Membership("n1", address("n1"), {"n2": address("n2"), "n3": address("n3")}, NullTransport())
    rec = NodeRecord("n3", address("n3"), 0, SUSPECT, origin="n2")
    m.handle_gossip("n2", (rec,))
    m.handle_gossip("n2", (rec,))
    assert m.member("n3").confirmations == 0


def test_confirmations_in_a_cluster_kill_sooner_than_the_unconfirmed_timeout():
    c = converged(Cluster(10))
    c.net.stop("n5")
    c.run_until(lambda: c.all_see("n5", DEAD), max_rounds=60)
    _, high = suspicion_bounds(10, 4, 6, c.timing.probe_interval)
    first_suspect = min(t for t, _, n, _, new in c.changes if n == "n5" and new is SUSPECT)
    last_dead = max(t for t, _, n, _, new in c.changes if n == "n5" and new is DEAD)
    assert last_dead - first_suspect < high / 2
    assert sum(c[o].stats()["confirmations"] for o in c.ids) > 0


# ---------------------------------------------------------------- Lifeguard awareness


def test_awareness_rises_when_our_messages_fail_slows_probing_and_recovers():
    c = converged(Cluster(5))
    n1 = c["n1"]
    assert n1.awareness() == 0 and n1.probe_delay() == 0.5
    c.net.isolate_outbound("n1")
    n1.probe_once()  # no ack (+1), three vias that never answer (+3)
    assert n1.awareness() == 4
    assert n1.probe_delay() == pytest.approx(0.5 * 5)
    n1.probe_once()
    assert c.net.ping_timeouts["n1"][-1] == pytest.approx(0.2 * 5)  # scaled probe timeout
    assert n1.awareness() == 7  # +1, and +2: the first target is suspect now, not a via
    n1.probe_once()
    assert n1.awareness() == 8 and n1.probe_delay() == pytest.approx(0.5 * 9)  # capped
    c.net.heal()
    for expected in range(7, -1, -1):
        n1.probe_once()
        assert n1.awareness() == expected
    n1.probe_once()
    assert n1.awareness() == 0 and c.net.ping_timeouts["n1"][-1] == pytest.approx(0.2)
    c.run_until(c.all_alive, max_rounds=20)  # n1's false suspicions get refuted


def test_nacking_vias_do_not_raise_awareness_beyond_the_failed_probe():
    c = converged(Cluster(5))
    c.net.stop("n5")
    n1 = c["n1"]
    while n1.stats()["probe_failures"] == 0:
        n1.probe_once()
    assert n1.awareness() == 1  # the probe failed; the three vias all nacked in time


# ---------------------------------------------------------------- push-pull


def test_push_pull_merges_divergent_views():
    c = converged(Cluster(3))
    c.net.dropped_kinds.update({"gossip", "ping"})  # nothing spreads but by push-pull
    c.net.cut_link("n1", "n3")
    # n2 heard n3 refute a suspicion (incarnation 1) and change its meta; n1 did not.
    c["n3"].handle_gossip("n2", (NodeRecord("n3", address("n3"), 0, SUSPECT, origin="n2"),))
    c["n3"].set_meta(meta_for("n3", 33))
    c["n2"].handle_gossip("n3", (c["n3"].handle_ping("n2", ()).responder,))
    # n1 changed its own meta; n2 did not hear of it.
    c["n1"].set_meta(meta_for("n1", 11))
    assert c["n1"].member("n3").incarnation == 0 and c["n2"].member("n3").incarnation == 1
    for _ in range(20):
        if c["n2"].member("n1").meta == meta_for("n1", 11):
            break
        c["n1"].push_pull_once()
    assert c["n2"].member("n1").meta == meta_for("n1", 11)
    n3 = c["n1"].member("n3")
    # n3's refutation reaches n1 through n2; its meta only n3 can state (provenance.py),
    # so n1 keeps n3's last word until n3 can talk to it again.
    assert (n3.state, n3.incarnation, n3.meta) == (ALIVE, 1, meta_for("n3"))
    c.net.heal()
    c.net.dropped_kinds.update({"gossip", "ping"})
    c.run_until(lambda: c["n1"].member("n3").meta == meta_for("n3", 33), max_rounds=20,
                probe=False, gossip=False, push_pull=True)


def test_push_pull_dead_claim_only_makes_a_live_member_suspect_and_it_refutes():
    c = converged(Cluster(4))
    stale = NodeRecord("n3", address("n3"), 0, DEAD, origin="n4")
    c["n1"].handle_push_pull("n4", (stale,), join=False)
    assert c.state("n1", "n3") is SUSPECT
    answer = c["n3"].handle_push_pull("n4", (stale,), join=False)  # about itself: refute
    assert [r for r in answer if r.node == "n3"][0].incarnation == 1
    c.run_until(c.all_alive, max_rounds=10)
    assert DEAD not in c.states_seen("n3")


def test_restarted_node_ends_above_its_old_incarnation():
    c = converged(Cluster(4))
    for origin in ("n1", "n2"):  # two refutations: the cluster remembers n3 at incarnation 2
        c["n3"].handle_gossip(origin, (NodeRecord("n3", address("n3"), c["n3"].member("n3").incarnation,
                                                  SUSPECT, origin=origin),))
    c.run_until(lambda: all(c[o].member("n3").incarnation == 2 for o in c.ids), max_rounds=10)
    fresh = c.restart("n3", rng_salt=7)
    assert fresh.member("n3").incarnation == 0 and fresh.member("n1").meta is None
    assert fresh.join()
    assert fresh.member("n3").incarnation == 3  # refuted what the cluster remembered
    fresh.set_meta(meta_for("n3", 77))
    c.run_until(lambda: all(c[o].member("n3").incarnation == 3
                            and c[o].member("n3").meta == meta_for("n3", 77) for o in c.ids),
                max_rounds=10)
    assert fresh.member("n1").meta == meta_for("n1")


def test_restart_with_the_same_incarnation_but_older_meta_seq_is_outbid():
    c = converged(Cluster(3))
    c["n3"].set_meta(meta_for("n3", 50))  # meta_seq 2 known everywhere
    c.run_until(lambda: all(c[o].member("n3").meta == meta_for("n3", 50) for o in c.ids), max_rounds=10)
    fresh = c.restart("n3")
    fresh.set_meta(meta_for("n3", 60))  # meta_seq 1 after restart: others would ignore it
    assert fresh.join()
    c.run_until(lambda: all(c[o].member("n3").meta == meta_for("n3", 60) for o in c.ids), max_rounds=10)
    assert fresh.member("n3").incarnation == 1


def test_restarted_dead_node_learns_it_from_the_ack_to_its_first_ping():
    c = converged(Cluster(4))
    c.net.stop("n4")
    c.run_until(lambda: c.all_see("n4", DEAD), max_rounds=60)
    c.net.start("n4")
    fresh = c.restart("n4")
    fresh.probe_once()  # no join, no reconnect: only its own probe
    assert fresh.member("n4").incarnation == 1
    c.run_until(c.all_alive, max_rounds=10)


def test_node_that_left_can_restart_and_rejoin():
    c = converged(Cluster(4))
    c["n4"].leave(timeout=1.0)
    c.net.stop("n4")
    c.run_until(lambda: c.all_see("n4", LEFT), max_rounds=10)
    c.net.start("n4")
    fresh = c.restart("n4")
    assert fresh.join() and fresh.member("n4").incarnation == 1
    c.run_until(c.all_alive, max_rounds=10)
    assert DEAD not in c.states_seen("n4")


def test_join_fails_when_nobody_answers_and_succeeds_alone():
    c = Cluster(3)
    c.net.stop("n2")
    c.net.stop("n3")
    assert c["n1"].join() is False
    assert Membership("solo", "solo:1", {}, NullTransport()).join() is True


# ---------------------------------------------------------------- leave and partitions


def test_graceful_leave_is_left_everywhere_not_dead():
    c = converged(Cluster(5))
    c["n5"].leave(timeout=1.0)
    assert c.state("n5", "n5") is LEFT
    assert sum(c.state(o, "n5") is LEFT for o in ("n1", "n2", "n3", "n4")) >= 3  # pushed directly
    c.net.stop("n5")
    c.run_until(lambda: c.all_see("n5", LEFT), max_rounds=10)
    ping_reqs = c.net.total("ping_req")
    for _ in range(60):  # far beyond any suspicion timeout
        c.round()
    assert c.all_see("n5", LEFT)
    assert DEAD not in c.states_seen("n5")
    assert c.net.total("ping_req") == ping_reqs  # left members are not probed


def test_left_is_final_for_ourselves():
    c = converged(Cluster(3))
    c["n3"].leave(timeout=1.0)
    c["n3"].handle_gossip("n1", (NodeRecord("n3", address("n3"), 0, SUSPECT, origin="n1"),))
    assert c["n3"].member("n3").state is LEFT and c["n3"].member("n3").incarnation == 0
    before = c.net.sent("n3")
    c["n3"].probe_once()
    c["n3"].reconnect_once()
    assert c.net.sent("n3") == before


def test_partition_then_heal_merges_back_through_reconnect():
    c = converged(Cluster(6))
    left, right = ("n1", "n2", "n3"), ("n4", "n5", "n6")
    c.net.partition(left, right)
    c.run_until(lambda: all(c.state(a, b) is DEAD and c.state(b, a) is DEAD
                            for a in left for b in right), max_rounds=80)
    c.net.heal()
    for _ in range(10):
        c.round()
    assert not c.all_alive()  # nobody talks to the dead without reconnect
    c.run_until(c.all_alive, max_rounds=20, reconnect=True)
    for _ in range(40):
        c.round()
    assert c.all_alive()
    assert all(c[o].member(n).meta == meta_for(n) for o in c.ids for n in c.ids)


# ---------------------------------------------------------------- O(1) traffic


def traffic(n: int) -> tuple[int, float]:
    """Most calls one node's own steps made in a period, and mean calls per node per period,
    with one member stopped so ping-reqs and suspicion broadcasts are in the mix."""
    c = converged(Cluster(n, gossips_per_round=1, seed=5), max_rounds=100)
    c.net.stop("n2")
    start_total = c.net.total()
    most, rounds = 0, 40
    for _ in range(rounds):
        for node in c.running():
            before = c.net.sent(node)
            c[node].probe_once()
            c[node].gossip_once()
            most = max(most, c.net.sent(node) - before)
        for node in c.running():
            c[node].expire_suspicions()
        c.clock.advance(c.timing.probe_interval)
    assert c.all_see("n2", DEAD)
    return most, (c.net.total() - start_total) / (rounds * len(c.running()))


def test_transport_calls_per_period_do_not_grow_with_cluster_size():
    t = GossipTiming()
    bound = 1 + t.indirect_checks + t.gossip_nodes
    most5, mean5 = traffic(5)
    most40, mean40 = traffic(40)
    assert most5 <= bound and most40 <= bound
    assert mean40 <= mean5 * 1.5, (mean5, mean40)
