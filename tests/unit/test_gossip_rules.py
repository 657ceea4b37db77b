"""Table-driven rules of the gossip engine: SWIM precedence, refutation, the broadcast
queue's bounds, suspicion arithmetic, awareness bounds."""

from __future__ import annotations

import logging
import math

import pytest

from hacluster.gossip import wire
from hacluster.gossip.awareness import Awareness
from hacluster.gossip.broadcast import BroadcastQueue, retransmit_limit
from hacluster.gossip.membership import (
    PIGGYBACK_BUDGET_BYTES,
    GossipTiming,
    Membership,
    Verdict,
    precedence,
)
from hacluster.gossip.precedence import INCARNATION_LIMIT, answerable
from hacluster.gossip.provenance import HEARSAY_MARGIN
from hacluster.gossip.suspicion import (
    Suspicion,
    expected_confirmations,
    suspicion_bounds,
    timeout_after,
)
from hacluster.gossip.types import GossipState, NodeMeta, NodeRecord
from hacluster.model import CheckReport, CheckState, Load
from tests.support.clock import FakeClock
from tests.support.gossip_net import Cluster, Network, NullTransport, address

ALIVE, SUSPECT, DEAD, LEFT = GossipState.ALIVE, GossipState.SUSPECT, GossipState.DEAD, GossipState.LEFT
_STATE = {"a": ALIVE, "s": SUSPECT, "d": DEAD, "l": LEFT}


def rec(node: str, spec: str, origin: str = "n3", meta_seq: int = 0,
        meta: NodeMeta | None = None) -> NodeRecord:
    """'s2' -> suspect at incarnation 2."""
    state = _STATE[spec[0]]
    return NodeRecord(node, address(node), int(spec[1:]), state,
                      "" if state is ALIVE else origin, meta_seq, meta)


def engine(clock: FakeClock | None = None) -> Membership:
    peers = {n: address(n) for n in ("n2", "n3", "n4", "n5")}
    return Membership("n1", address("n1"), peers, NullTransport(), clock=clock or FakeClock())


# ---------------------------------------------------------------- precedence about others


@pytest.mark.parametrize("current, incoming, expected", [
    ("a1", "a2", "a2"), ("a2", "a1", "a2"), ("a1", "a1", "a1"),
    ("a1", "s1", "s1"), ("a1", "s2", "s2"), ("a2", "s1", "a2"),
    ("s1", "a1", "s1"), ("s1", "a2", "a2"), ("s1", "s2", "s2"), ("s2", "s1", "s2"),
    ("a1", "d1", "d1"), ("s1", "d1", "d1"), ("a2", "d1", "a2"), ("s2", "d1", "s2"),
    ("d1", "a1", "d1"), ("d1", "a2", "a2"), ("d1", "s2", "d1"), ("d2", "d1", "d2"), ("d1", "d3", "d3"),
    ("a1", "l1", "l1"), ("s1", "l1", "l1"), ("d1", "l1", "l1"), ("l1", "d1", "l1"),
    ("l1", "a1", "l1"), ("l1", "a2", "a2"), ("l1", "s2", "l1"), ("l2", "d3", "d3"),
])
def test_precedence(current, incoming, expected):
    def sender(spec: str) -> str:  # only n2 itself can say that it left (provenance.py)
        return "n2" if spec[0] == "l" else "n3"

    m = engine()
    m.handle_gossip(sender(current), (rec("n2", current),))
    assert (m.member("n2").state, m.member("n2").incarnation) == (_STATE[current[0]], int(current[1:]))
    m.handle_gossip(sender(incoming), (rec("n2", incoming, origin="n4"),))
    view = m.member("n2")
    assert (view.state, view.incarnation) == (_STATE[expected[0]], int(expected[1:]))


def test_precedence_meta_rules():
    old, new = NodeMeta(version="1"), NodeMeta(version="2")
    cur = rec("n2", "a1", meta_seq=3, meta=old)
    assert precedence(cur, rec("n2", "a1", meta_seq=4, meta=new)) is Verdict.META
    assert precedence(cur, rec("n2", "a1", meta_seq=3, meta=new)) is Verdict.IGNORE
    assert precedence(cur, rec("n2", "a1", meta_seq=2, meta=new)) is Verdict.IGNORE
    assert precedence(cur, rec("n2", "a1", meta_seq=4)) is Verdict.IGNORE  # no meta, nothing to take
    assert precedence(rec("n2", "a0"), rec("n2", "a0", meta=old)) is Verdict.META  # first heard
    assert precedence(rec("n2", "s1", meta_seq=3, meta=old), rec("n2", "a1", meta_seq=4, meta=new)) \
        is Verdict.META
    assert precedence(rec("n2", "d1"), rec("n2", "a1", meta_seq=9, meta=new)) is Verdict.IGNORE
    assert precedence(rec("n2", "s1"), rec("n2", "s1", origin="n4")) is Verdict.CONFIRM


def test_meta_update_keeps_state_and_incarnation():
    m = engine()
    m.handle_gossip("n2", (rec("n2", "a1", meta_seq=1, meta=NodeMeta(version="1")),))
    m.handle_gossip("n2", (rec("n2", "a1", meta_seq=2, meta=NodeMeta(version="2")),))
    m.handle_gossip("n2", (rec("n2", "a1", meta_seq=1, meta=NodeMeta(version="old")),))
    view = m.member("n2")
    assert (view.state, view.incarnation, view.meta) == (ALIVE, 1, NodeMeta(version="2"))


def test_revival_and_on_change_with_old_state():
    seen = []
    m = Membership("n1", address("n1"), {"n2": address("n2")}, NullTransport(), clock=FakeClock(),
                   on_change=lambda view, old: seen.append((view.node, old, view.state, view.incarnation)))
    m.handle_gossip("n2", (rec("n2", "d0"),))
    m.handle_gossip("n2", (rec("n2", "a1"),))
    m.handle_gossip("n2", (rec("n2", "a1", meta_seq=1, meta=NodeMeta()),))  # meta only: no callback
    assert seen == [("n2", ALIVE, DEAD, 0), ("n2", DEAD, ALIVE, 1)]
    assert m.stats()["revivals"] == 1 and m.stats()["deaths"] == 1


def test_on_change_exceptions_do_not_escape(caplog):
    def boom(view, old):
        raise RuntimeError("callback bug")

    m = Membership("n1", address("n1"), {"n2": address("n2")}, NullTransport(), clock=FakeClock(),
                   on_change=boom)
    with caplog.at_level(logging.ERROR, logger="hacluster.gossip"):
        m.handle_gossip("n2", (rec("n2", "s0"),))
    assert m.member("n2").state is SUSPECT
    assert "on_change callback failed" in caplog.text


# ---------------------------------------------------------------- claims about ourselves


@pytest.mark.parametrize("incoming, incarnation, awareness", [
    ("s0", 1, 1), ("d0", 1, 1), ("s4", 5, 1),
    ("l0", 1, 0),  # our LEFT from before a restart
    ("a3", 4, 0),  # we restarted; the cluster remembers a higher incarnation
    ("a0", 0, 0),  # our own current record: nothing to refute
])
def test_refutation(incoming, incarnation, awareness):
    m = engine()
    m.handle_gossip("n2", (rec("n1", incoming, origin="n2"),))
    me = m.member("n1")
    assert (me.state, me.incarnation, m.awareness()) == (ALIVE, incarnation, awareness)


def test_stale_suspicion_about_us_is_ignored():
    m = engine()
    m.handle_gossip("n2", (rec("n1", "s0"),))
    m.handle_gossip("n2", (rec("n1", "s0"),))  # old news: we are at 1 already
    assert m.member("n1").incarnation == 1 and m.stats()["refutations"] == 1


def test_refutation_is_in_the_ack_to_the_ping_carrying_the_suspicion():
    m = engine()
    ack = m.handle_ping("n2", (rec("n1", "s0", origin="n2"),))
    assert ack.responder.state is ALIVE and ack.responder.incarnation == 1


def test_push_pull_answer_carries_the_refutation():
    m = engine()
    answer = m.handle_push_pull("n2", (rec("n1", "d2", origin="n2"),), join=False)
    me = next(r for r in answer if r.node == "n1")
    assert (me.state, me.incarnation) == (ALIVE, 3)


def test_alive_records_about_us_from_an_earlier_run_are_outbid():
    m = engine()
    m.set_meta(NodeMeta(version="new"))  # meta_seq 1
    m.handle_gossip("n2", (rec("n1", "a0", meta_seq=1, meta=NodeMeta(version="new")),))
    assert m.member("n1").incarnation == 0  # that is just us
    m.handle_gossip("n2", (rec("n1", "a0", meta_seq=5, meta=NodeMeta(version="old")),))
    assert m.member("n1").incarnation == 1
    m.handle_gossip("n2", (rec("n1", "a1", meta_seq=1, meta=NodeMeta(version="other")),))
    assert m.member("n1").incarnation == 2 and m.awareness() == 0


# ---------------------------------------------------------------- absurd incarnations

LIMIT = INCARNATION_LIMIT


def _through_the_wire(r: NodeRecord) -> NodeRecord:
    return wire.record_from_pb(wire.record_to_pb(r), "r")  # raises if the wire refuses it


@pytest.mark.parametrize("state", [SUSPECT, DEAD, LEFT])
@pytest.mark.parametrize("incarnation", [LIMIT, LIMIT + 1, wire.MAX_INCARNATION])
def test_a_claim_about_us_beyond_any_real_incarnation_is_ignored_not_echoed(
        caplog, state, incarnation):
    m = engine()
    with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        m.handle_gossip("n2", (NodeRecord("n1", address("n1"), incarnation, state, "n2"),))
    me = m.member("n1")
    assert (me.state, me.incarnation, m.awareness()) == (ALIVE, 0, 0)
    assert m.stats()["absurd_claims"] == 1 and m.stats()["refutations"] == 0
    assert "beyond any real incarnation" in caplog.text


def test_an_alive_record_of_ours_at_the_limit_cannot_be_outbid_and_is_ignored():
    m = engine()
    m.handle_gossip("n2", (rec("n1", f"a{LIMIT}", meta_seq=1, meta=NodeMeta(version="forged")),))
    assert m.member("n1").incarnation == 0 and m.stats()["absurd_claims"] == 1


@pytest.mark.parametrize("claim", [f"s{LIMIT - 1}", f"d{LIMIT - 1}", f"a{LIMIT - 1}"])
def test_the_highest_refutable_claim_is_not_climbed_to(claim):
    # Refuting it would put us at the limit, where nobody could suspect us any more: we
    # stay, and tell every member our own word instead (provenance.py, rules 3 and 4).
    m = engine()
    m.handle_gossip("n2", (rec("n1", claim, origin="n2", meta=NodeMeta(version="x") if claim[0] == "a"
                                else None, meta_seq=3),))
    assert m.member("n1").incarnation == 0
    assert m.stats()["claims_beyond_reach"] == 1 and m.stats()["refutations"] == 0
    # ... and every member takes our word over such a claim, had it taken the claim at all.
    other = engine()
    other.handle_gossip("n3", (rec("n1", claim, origin="n2"),))
    other.handle_gossip("n1", (m.handle_ping("n2", ()).responder,))
    assert other.member("n1").state is ALIVE and other.member("n1").incarnation == 0


@pytest.mark.parametrize("claim", [f"s{HEARSAY_MARGIN}", f"d{HEARSAY_MARGIN}", f"a{HEARSAY_MARGIN}"])
def test_the_highest_claim_within_reach_is_refuted_with_a_record_the_wire_takes(claim):
    m = engine()
    m.handle_gossip("n2", (rec("n1", claim, origin="n2"),))
    me = m.member("n1")
    assert (me.state, me.incarnation) == (ALIVE, HEARSAY_MARGIN + 1)
    ack = m.handle_ping("n2", ())
    assert _through_the_wire(ack.responder) == ack.responder
    other = engine()
    other.handle_gossip("n3", (rec("n1", claim, origin="n2"),))
    other.handle_gossip("n1", (ack.responder,))
    assert other.member("n1").state is ALIVE and other.member("n1").incarnation == HEARSAY_MARGIN + 1


@pytest.mark.parametrize("spec, answerable_", [
    (f"a{LIMIT}", True), (f"a{LIMIT + 1}", False), (f"s{LIMIT - 1}", True), (f"s{LIMIT}", False),
    (f"d{LIMIT}", False), (f"l{LIMIT}", False), ("s0", True), (f"a{wire.MAX_INCARNATION}", False),
    (f"s{HEARSAY_MARGIN}", True),
])
def test_claims_about_others_that_their_subject_could_not_refute_are_ignored(spec, answerable_):
    assert answerable(rec("n2", spec)) is answerable_
    m = engine()
    m.handle_gossip("n2", (rec("n2", "a0"),))  # n2's own word: incarnation 0
    m.handle_gossip("n3", (rec("n2", spec),))
    view = m.member("n2")
    applied = (view.state, view.incarnation) == (_STATE[spec[0]], int(spec[1:]))
    # Hearsay moves n2's incarnation only so far from n2's own word (provenance.py).
    far = int(spec[1:]) > HEARSAY_MARGIN
    assert applied is (answerable_ and not far)
    assert m.stats()["absurd_claims"] == (0 if answerable_ else 1)
    assert m.stats()["forged_incarnations"] == (1 if answerable_ and far else 0)


def test_far_claims_about_a_member_not_heard_yet_wait_for_its_word_without_a_warning(caplog):
    m = engine()  # just started, in a cluster where n2 has refuted many times
    with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        m.handle_gossip("n3", (rec("n2", "a40"),))
    assert m.member("n2").incarnation == 0 and caplog.text == ""
    assert m.stats()["unheard_claims"] == 1 and m.stats()["forged_incarnations"] == 0
    m.handle_gossip("n2", (rec("n2", "a40"),))  # its own word
    m.handle_gossip("n3", (rec("n2", "s41", origin="n3"),))  # now within the margin
    assert (m.member("n2").state, m.member("n2").incarnation) == (SUSPECT, 41)


# ---------------------------------------------------------------- byte budgets


def _meta(kb: int) -> NodeMeta:
    """A meta of about `kb` KB on the wire."""
    text = "x" * 256
    n = max(1, kb * 1024 // 900)
    return NodeMeta(checks=tuple(CheckReport(f"c{i}", "exec", text, CheckState.FAILING, None,
                                             text, text) for i in range(n)))


def test_piggyback_carries_no_meta_but_our_own_and_stays_within_the_budget():
    peers = {f"n{i}": address(f"n{i}") for i in range(2, 12)}
    m = Membership("n1", address("n1"), peers, NullTransport(), clock=FakeClock())
    for n in peers:  # every member's own word, with a big meta
        m.handle_gossip(n, (rec(n, "a1", meta_seq=1, meta=_meta(50)),))
    m.set_meta(_meta(200))
    updates = m.handle_ping("n2", ()).updates  # the ack's responder is our own record
    assert len(updates) == len(peers)
    assert all(r.meta is None and r.incarnation == 1 and r.meta_seq == 0 for r in updates)
    probe = m._updates_for(m._members["n3"])  # a message of ours to a member not yet told
    assert probe[0].node == "n1" and probe[0].meta == _meta(200)
    assert sum(wire.encoded_size(r) for r in probe) <= PIGGYBACK_BUDGET_BYTES
    assert all(r.node != "n1" for r in m._updates_for(m._members["n3"]))  # told once is enough


def test_a_bare_record_takes_the_state_and_leaves_the_meta_held():
    m = engine()
    m.handle_gossip("n3", (rec("n2", "s1", origin="n3"),))
    m.handle_gossip("n2", (rec("n2", "a0", meta_seq=4, meta=NodeMeta(version="held")),))
    m.handle_gossip("n3", (rec("n2", "a2"),))  # a refutation, passed on without meta
    view = m.member("n2")
    assert (view.state, view.incarnation, view.meta) == (ALIVE, 2, NodeMeta(version="held"))
    m.handle_gossip("n2", (rec("n2", "a2", meta_seq=1, meta=NodeMeta(version="new")),))
    assert m.member("n2").meta == NodeMeta(version="new")  # its own next meta is taken
    m.handle_gossip("n2", (rec("n2", "a2", meta_seq=0, meta=NodeMeta(version="old")),))
    assert m.member("n2").meta == NodeMeta(version="new")  # and an overtaken one is not


# ---------------------------------------------------------------- unknown ids, set_meta


def test_unknown_node_ids_are_ignored_counted_and_logged_once(caplog):
    m = engine()
    before = [(v.node, v.state, v.incarnation) for v in m.members()]
    with caplog.at_level(logging.WARNING, logger="hacluster.gossip"):
        m.handle_gossip("n2", (rec("zz", "d5"), rec("zz", "a9")))
        m.handle_gossip("zz", ())
        m.handle_push_pull("n2", (rec("yy", "a0"),), join=False)
    assert [(v.node, v.state, v.incarnation) for v in m.members()] == before
    assert m.member("zz") is None
    assert m.stats()["unknown_records"] == 4
    assert caplog.text.count("'zz'") == 1 and caplog.text.count("'yy'") == 1


def test_set_meta_with_the_same_meta_queues_nothing():
    c = Cluster(3)
    meta = NodeMeta(load=Load(cpu_percent=12.0))
    c["n1"].set_meta(meta)
    assert c["n1"].member("n1").meta == NodeMeta(load=Load(cpu_percent=12.0), version="1.0")
    for _ in range(20):  # drain every retransmit
        c["n1"].gossip_once()
    sent = c.net.sent("n1")
    c["n1"].set_meta(meta)
    c["n1"].set_meta(NodeMeta(load=Load(cpu_percent=12.0), version="1.0"))
    c["n1"].gossip_once()
    assert c.net.sent("n1") == sent
    c["n1"].set_meta(NodeMeta(load=Load(cpu_percent=13.0)))
    c["n1"].gossip_once()
    assert c.net.sent("n1") > sent


def test_gossip_sends_nothing_when_nothing_is_queued():
    c = Cluster(4)
    c["n1"].gossip_once()
    assert c.net.total() == 0


# ---------------------------------------------------------------- broadcast queue


def test_queue_replaces_older_record_about_the_same_node():
    q = BroadcastQueue(retransmit_mult=4)
    q.queue(rec("n2", "s1"))
    q.queue(rec("n2", "a2"))
    assert q.take(10, n=5) == (rec("n2", "a2"),)
    assert len(q) == 1


def test_queue_bounds_records_per_message_and_prefers_the_least_sent():
    q = BroadcastQueue(retransmit_mult=4)
    for i in range(20):
        q.queue(rec(f"m{i}", "a0"))
    first = q.take(16, n=20)
    assert len(first) == 16
    assert [r.node for r in first[:3]] == ["m19", "m18", "m17"]  # newest first
    second = q.take(16, n=20)
    assert {r.node for r in second[:4]} == {"m0", "m1", "m2", "m3"}  # not yet sent go first


def test_queue_retransmit_limit():
    assert retransmit_limit(4, 5) == 4 and retransmit_limit(4, 10) == 8 and retransmit_limit(4, 40) == 8
    q = BroadcastQueue(retransmit_mult=4)
    q.queue(rec("n2", "a1"))
    sent = 0
    while q.take(16, n=40):
        sent += 1
    assert sent == 8 and len(q) == 0


def test_piggyback_bounded_per_message_on_the_wire():
    timing = GossipTiming(max_updates_per_message=2)
    net = Network()
    peers = {f"n{i}": address(f"n{i}") for i in range(2, 8)}
    m = Membership("n1", address("n1"), peers, net.transport("n1"), timing=timing, clock=FakeClock())
    m.handle_gossip("n2", tuple(rec(n, "s0") for n in peers))  # six fresh suspicions queued
    assert len(m.handle_ping("n2", ()).updates) == 2


# ---------------------------------------------------------------- suspicion and awareness


def test_suspicion_bounds_and_k():
    assert suspicion_bounds(1, 4, 6, 0.5) == (2.0, 12.0)
    assert suspicion_bounds(5, 4, 6, 0.5) == (2.0, 12.0)
    low, high = suspicion_bounds(100, 4, 6, 0.5)
    assert low == pytest.approx(4.0) and high == pytest.approx(24.0)
    assert [expected_confirmations(n, 4) for n in (1, 2, 3, 4, 10)] == [0, 0, 1, 2, 2]
    assert timeout_after(0, 0, 2.0, 12.0) == 2.0  # nobody to confirm: min at once
    assert timeout_after(1, 2, 2.0, 12.0) == pytest.approx(12 - 10 * math.log(2) / math.log(3))
    assert timeout_after(5, 2, 2.0, 12.0) == 2.0


def test_suspicion_counts_each_reporter_once_up_to_k():
    s = Suspicion(started=10.0, origin="n2", k=2, low=2.0, high=12.0)
    assert s.deadline() == 22.0
    assert not s.confirm("n2")
    assert s.confirm("n3") and not s.confirm("n3")
    assert s.confirm("n4") and not s.confirm("n5")  # k reached: no more re-gossip
    assert s.confirmations == 2 and s.deadline() == 12.0


def test_tiny_cluster_suspicion_times_out_at_the_minimum():
    clock = FakeClock()
    m = Membership("n1", address("n1"), {"n2": address("n2")}, NullTransport(), clock=clock)
    m.handle_gossip("n2", (rec("n2", "s0", origin="n1"),))
    clock.advance(1.99)
    m.expire_suspicions()
    assert m.member("n2").state is SUSPECT
    clock.advance(0.01)
    m.expire_suspicions()
    assert m.member("n2").state is DEAD and m.member("n2").state_age == 0.0


def test_awareness_bounds():
    a = Awareness(8)
    assert a.apply(-1) == 0 and a.apply(20) == 8 and a.apply(-3) == 5
    assert a.scale(0.5) == pytest.approx(3.0)
