"""The leader's failover planning (pure): who may take over, and every refusal's words."""

import pytest

from hacluster.errors import Refusal, Refused
from hacluster.ha.failover import plan
from hacluster.model import ConsensusView, GossipState, PeerLink, Role

MEMBERS = ["n1", "n2", "n3"]
VIPS = ("10.0.0.100",)


def view(role=Role.LEADER, quorum=True, acks=(("n2", 0.05), ("n3", 0.02))):
    return ConsensusView(role, 3, "n1" if role is Role.LEADER else "n2", quorum, 1.0, True, False,
                         quorum, 10, 10, tuple(PeerLink(p, f"{p}:7100", a is not None, a) for p, a in acks))


ALIVE = {m: GossipState.ALIVE for m in MEMBERS}


def go(to=None, v=None, gossip=ALIVE, health=None, flags=None, caught_up=lambda m: True):
    return plan("n1", MEMBERS, VIPS, v or view(), gossip, health or {}, flags or {}, 0.5, caught_up, to)


def refusal(**kw) -> Refused:
    with pytest.raises(Refused) as e:
        go(**kw)
    return e.value


def test_a_named_eligible_member_is_the_target():
    p = go("n2")
    assert (p.source, p.target, p.vips) == ("n1", "n2", VIPS)


def test_a_move_to_the_leader_itself_is_the_no_op_plan():
    p = go("n1")
    assert (p.source, p.target, p.vips) == ("n1", "n1", ())


def test_without_a_name_the_freshest_eligible_member_is_picked():
    assert go().target == "n3"
    assert go(flags={"draining/n3": "true"}).target == "n2"


@pytest.mark.parametrize("kw, words", [
    ({"to": "n9"}, "no member 'n9'"),
    ({"to": "n2", "v": view(role=Role.FOLLOWER)}, "does not lead (the leader is n2)"),
    ({"to": "n2", "v": view(quorum=False)}, "without a quorum"),
    ({"to": "n2", "v": view(acks=(("n2", 3.0), ("n3", 0.02)))}, "Raft link is not answering"),
    ({"to": "n2", "v": view(acks=(("n2", None), ("n3", 0.02)))}, "Raft link is not answering"),
    ({"to": "n2", "gossip": {**ALIVE, "n2": GossipState.SUSPECT}}, "gossip sees it suspect"),
    ({"to": "n2", "flags": {"draining/n2": "true"}}, "draining"),
    ({"to": "n2", "health": {"n2/web": False, "n2/db": True}}, "check(s) web are committed down"),
    ({"to": "n2", "caught_up": lambda m: False}, "log is behind"),
])
def test_refusals_say_why(kw, words):
    e = refusal(**kw)
    assert words in str(e), str(e)
    assert e.kind in (Refusal.PRECONDITION, Refusal.NOT_FOUND)


def test_an_external_hosts_derived_check_does_not_make_a_member_ineligible():
    assert go("n2", health={"n2/web@10.0.0.50": False}).target == "n2"


def test_no_eligible_member_lists_each_reason():
    e = refusal(flags={"draining/n2": "true"}, gossip={**ALIVE, "n3": GossipState.DEAD})
    assert "n2: it is draining" in str(e) and "n3: gossip sees it dead" in str(e)


def test_without_gossip_the_raft_view_alone_decides():
    assert go("n2", gossip=None).target == "n2"
