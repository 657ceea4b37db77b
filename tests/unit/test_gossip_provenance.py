"""Who may say what about whom in gossip (issue 15, finding 5; gossip/provenance.py).

A member holding its own valid node certificate can send any record about any other
member. These tests play that member (the sender is authenticated: it is n3, speaking as
n3) and check that what only the subject may state (its checks, draining flag, load,
version, its leave) is never taken from anyone else, that nobody can push another's
incarnation out of its reach, and that a member held at the limit recovers when it
speaks for itself.
"""

from __future__ import annotations

import logging

import grpc
import pytest

from hacluster.api import gossip_pb2 as pb
from hacluster.gossip import wire
from hacluster.gossip.grpc_transport import GossipService
from hacluster.gossip.membership import Membership
from hacluster.gossip.precedence import INCARNATION_LIMIT
from hacluster.gossip.types import GossipState, NodeMeta, NodeRecord
from hacluster.model import CheckReport, CheckState, Load
from tests.support.clock import FakeClock
from tests.support.gossip_net import Cluster, NullTransport, address

ALIVE, SUSPECT, DEAD, LEFT = GossipState.ALIVE, GossipState.SUSPECT, GossipState.DEAD, GossipState.LEFT
LIMIT = INCARNATION_LIMIT


def meta_for(node: str, cpu: float = 0.0) -> NodeMeta:
    return NodeMeta(checks=(CheckReport("web", "http", f"{node}:80", CheckState.PASSING, 1.0, ""),),
                    load=Load(cpu_percent=cpu or float(node[1:])), version="1.0")


def converged(c: Cluster, max_rounds: int = 40) -> Cluster:
    for node in c.ids:
        c[node].set_meta(meta_for(node))
    c.run_until(lambda: c.all_alive() and all(
        c[o].member(n).meta == meta_for(n) for o in c.ids for n in c.ids), max_rounds=max_rounds)
    return c


def deliver(engine: Membership, via: str, sender: str, records: tuple[NodeRecord, ...]) -> None:
    """`records` from `sender` (authenticated) by one of the three inbound paths."""
    if via == "gossip":
        engine.handle_gossip(sender, records)
    elif via == "ping":
        engine.handle_ping(sender, records)
    else:
        engine.handle_push_pull(sender, records, join=False)


def warnings_naming(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and all(w in r.getMessage() for w in words)]


FORGED = NodeMeta(checks=(CheckReport("web", "http", "n2:80", CheckState.FAILING, None, "forged"),),
                  load=Load(99.0, 99.0), draining=True, version="6.6.6")
VIAS = ["gossip", "ping", "push_pull"]


# ---------------------------------------------------------------- meta: only the member itself


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("bump", [0, 1])  # the same incarnation, or riding on a "refutation"
def test_checks_and_draining_stated_by_another_member_are_ignored_and_warned(caplog, via, bump):
    c = converged(Cluster(3))
    held = c["n1"].member("n2")
    forged = NodeRecord("n2", address("n2"), held.incarnation + bump, ALIVE, "", 99, FORGED)
    with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        deliver(c["n1"], via, "n3", (forged,))
    assert c["n1"].member("n2").meta == meta_for("n2")
    assert not c["n1"].member("n2").meta.draining
    assert c["n1"].stats()["forged_meta"] == 1
    assert warnings_naming(caplog, "n3", "n2")
    for _ in range(10):  # nor does it spread from there
        c.round(push_pull=True)
    assert all(c[o].member("n2").meta == meta_for("n2") for o in c.ids)


def test_the_member_itself_still_publishes_its_checks_and_draining():
    c = converged(Cluster(3))
    draining = NodeMeta(checks=meta_for("n2").checks, draining=True, version="1.0")
    c["n2"].set_meta(draining)
    c.run_until(lambda: all(c[o].member("n2").meta == draining for o in c.ids), max_rounds=5)
    assert sum(c[o].stats()["forged_meta"] for o in c.ids) == 0


def test_relayed_records_never_carry_another_members_meta():
    c = converged(Cluster(4))
    for _ in range(5):
        c.round(push_pull=True)
    records = c["n1"].handle_push_pull("n2", (), join=False)
    assert {r.node for r in records if r.meta is not None} == {"n1", "n2"}  # ours, and its own
    ack = c["n1"].handle_ping("n3", ())
    assert ack.responder.meta is not None
    assert all(r.meta is None for r in ack.updates if r.node != "n1")


def test_a_members_news_reaches_every_member_from_itself_in_a_bigger_cluster():
    c = converged(Cluster(10), max_rounds=60)
    c["n7"].set_meta(meta_for("n7", 70))
    rounds = c.run_until(lambda: all(c[o].member("n7").meta == meta_for("n7", 70) for o in c.ids),
                         max_rounds=20)
    assert rounds <= 3  # 9 members, 3 per gossip, 2 gossips a round: told within two rounds


# ---------------------------------------------------------------- leave: only the member itself


@pytest.mark.parametrize("via", VIAS)
def test_a_leave_stated_by_another_member_is_not_a_leave(caplog, via):
    c = converged(Cluster(3))
    forged = NodeRecord("n2", address("n2"), c["n1"].member("n2").incarnation, LEFT, "n2")
    with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        deliver(c["n1"], via, "n3", (forged,))
    assert c.state("n1", "n2") is not LEFT
    assert c["n1"].stats()["forged_lefts"] == 1
    assert warnings_naming(caplog, "n3", "n2")
    c.run_until(c.all_alive, max_rounds=10)  # at most a claim that it is dead: it refutes
    assert LEFT not in c.states_seen("n2")


def test_a_real_leave_reaches_every_member_from_the_member_itself():
    c = converged(Cluster(6))
    c["n6"].leave(timeout=1.0)
    c.net.stop("n6")
    assert c.all_see("n6", LEFT)
    for _ in range(30):
        c.round()
    assert c.all_see("n6", LEFT) and DEAD not in c.states_seen("n6")
    assert sum(c[o].stats()["forged_lefts"] for o in c.running()) == 0


def test_a_left_member_is_passed_on_as_dead_and_taken_as_that():
    c = converged(Cluster(4))
    c.net.dropped_kinds.add("gossip")  # n4's goodbye reaches n1 only, by push-pull
    c.net.cut_link("n4", "n2")
    c.net.cut_link("n4", "n3")
    c["n4"].leave(timeout=1.0)
    c.net.stop("n4")
    assert c.state("n1", "n4") is LEFT
    c.net.dropped_kinds.clear()
    c.run_until(lambda: c.state("n2", "n4") is DEAD and c.state("n3", "n4") is DEAD,
                max_rounds=40)
    assert c.state("n1", "n4") is LEFT  # n1 heard it from n4 itself
    assert sum(c[o].stats()["forged_lefts"] for o in c.running()) == 0


# ---------------------------------------------------------------- incarnations


@pytest.mark.parametrize("state, incarnation", [
    (ALIVE, LIMIT), (ALIVE, LIMIT - 1), (ALIVE, 1000), (SUSPECT, LIMIT - 1), (DEAD, LIMIT - 1),
])
def test_another_member_cannot_push_a_members_incarnation_out_of_its_reach(
        caplog, state, incarnation):
    c = converged(Cluster(4))
    forged = NodeRecord("n2", address("n2"), incarnation, state, "" if state is ALIVE else "n3")
    with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        c["n1"].handle_gossip("n3", (forged,))
    view = c["n1"].member("n2")
    assert (view.state, view.incarnation) == (ALIVE, 0)
    assert c["n1"].stats()["forged_incarnations"] == 1
    assert warnings_naming(caplog, "n3", "n2")
    # ... and the failure detector still works for n2
    c.net.stop("n2")
    c.run_until(lambda: c.all_see("n2", DEAD), max_rounds=60)


@pytest.mark.parametrize("state", [ALIVE, SUSPECT, DEAD, LEFT])
def test_a_member_does_not_climb_to_the_limit_on_anothers_word(caplog, state):
    c = converged(Cluster(4))
    forged = NodeRecord("n2", address("n2"), LIMIT - 1, state, "" if state is ALIVE else "n3", 7,
                        FORGED if state is ALIVE else None)
    with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        c["n2"].handle_gossip("n3", (forged,))
    assert c["n2"].member("n2").incarnation == 0
    assert c["n2"].stats()["claims_beyond_reach"] == 1
    assert warnings_naming(caplog, "n3")
    for _ in range(5):
        c.round(push_pull=True)
    assert all(c[o].member("n2").incarnation == 0 for o in c.ids)
    c.net.stop("n2")
    c.run_until(lambda: c.all_see("n2", DEAD), max_rounds=60)


def test_a_member_held_at_the_limit_recovers_when_it_speaks_for_itself():
    c = converged(Cluster(4))
    # An earlier run of n2 was driven to the limit (as an agent before this rule could be):
    # every member holds that as n2's own word.
    top = NodeRecord("n2", address("n2"), LIMIT, ALIVE, "", 5, meta_for("n2", 5))
    for o in ("n1", "n3", "n4"):
        c[o].handle_gossip("n2", (top,))
    assert all(c[o].member("n2").incarnation == LIMIT for o in ("n1", "n3", "n4"))
    fresh = c.restart("n2")
    fresh.set_meta(meta_for("n2", 42))
    assert fresh.join()
    c.run_until(lambda: all(c[o].member("n2").incarnation < 100
                            and c[o].member("n2").meta == meta_for("n2", 42) for o in c.ids),
                max_rounds=20)
    assert fresh.member("n2").incarnation < 100
    # It can be suspected, refute, and die again like any member.
    c["n1"].handle_gossip("n3", (NodeRecord("n2", address("n2"), fresh.member("n2").incarnation,
                                            SUSPECT, "n3"),))
    c.run_until(c.all_alive, max_rounds=10)
    c.net.stop("n2")
    c.run_until(lambda: c.all_see("n2", DEAD), max_rounds=60)


def test_a_restart_after_many_refutations_is_taken_from_the_member_itself():
    c = converged(Cluster(4))
    old = NodeRecord("n3", address("n3"), 500, ALIVE, "", 3, meta_for("n3"))
    for o in ("n1", "n2", "n4"):  # a long-lived n3 had refuted 500 times
        c[o].handle_gossip("n3", (old,))
    fresh = c.restart("n3")
    fresh.set_meta(meta_for("n3", 33))
    assert fresh.join()
    c.run_until(lambda: all(c[o].member("n3").meta == meta_for("n3", 33) for o in c.ids),
                max_rounds=20)
    assert all(c[o].member("n3").incarnation < 500 for o in c.ids)
    assert DEAD not in c.states_seen("n3")


def test_refutations_relayed_within_the_margin_are_taken():
    c = converged(Cluster(5))
    c.net.cut_link("n1", "n4")
    c.net.dropped_kinds.add("push_pull")
    c["n4"].handle_gossip("n2", (NodeRecord("n4", address("n4"), 0, SUSPECT, "n2"),))
    c.run_until(lambda: c["n1"].member("n4").incarnation == 1, max_rounds=10)
    assert c["n1"].stats()["forged_incarnations"] == 0


# ---------------------------------------------------------------- over real gRPC, a real engine


def test_a_member_certificate_cannot_forge_another_members_health_over_grpc(caplog):
    from tests.unit.pki import PKI
    from tests.unit.test_gossip_grpc import MEMBERS, _raw, _serving

    engine = Membership("n1", MEMBERS["n1"], {n: a for n, a in MEMBERS.items() if n != "n1"},
                        NullTransport(), clock=FakeClock())
    real = NodeRecord("n2", MEMBERS["n2"], 0, ALIVE, "", 1, meta_for("n2"))
    engine.handle_gossip("n2", (real,))
    forged = [wire.record_to_pb(NodeRecord("n2", MEMBERS["n2"], 0, ALIVE, "", 9, FORGED)),
              wire.record_to_pb(NodeRecord("n2", MEMBERS["n2"], 0, LEFT, "n2")),
              wire.record_to_pb(NodeRecord("n2", MEMBERS["n2"], LIMIT, ALIVE, ""))]
    with _serving(engine) as (_, addr, service), \
            caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        assert isinstance(service, GossipService)
        for record in forged:  # n3's own valid certificate, speaking as n3
            _raw(addr, "Gossip", pb.GossipRequest(sender="n3", updates=[record]), PKI.client("n3"))
        with pytest.raises(grpc.RpcError):  # and it cannot speak as n2
            _raw(addr, "Gossip", pb.GossipRequest(sender="n2", updates=forged[:1]), PKI.client("n3"))
    view = engine.member("n2")
    assert view.meta == meta_for("n2") and view.state is not LEFT and view.incarnation < LIMIT
    stats = engine.stats()
    assert (stats["forged_meta"], stats["forged_lefts"], stats["forged_incarnations"]) == (1, 1, 1)
    assert warnings_naming(caplog, "n3")
