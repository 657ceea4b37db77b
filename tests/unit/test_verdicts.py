import pytest

from hacluster.gossip.types import GossipState, NodeMeta
from hacluster.ha.verdicts import Observed, Policy, VerdictTracker, desired
from hacluster.model import CheckReport, CheckState

A, S, D, L = GossipState.ALIVE, GossipState.SUSPECT, GossipState.DEAD, GossipState.LEFT


def meta(**states):
    return NodeMeta(checks=tuple(CheckReport(n, "tcp", "x:1", CheckState(s), 1.0, "")
                                 for n, s in states.items()))


@pytest.mark.parametrize("state, m, silent, want", [
    (A, meta(web="passing"), None, True),
    (A, meta(web="failing"), None, False),
    (A, meta(web="unknown"), None, None),
    (A, meta(other="passing"), None, None),
    (A, None, None, None),
    (S, meta(web="failing"), None, None),  # suspicion is not a verdict
    (S, meta(web="passing"), 0.3, None),  # ... not even with Raft acks a bit late
    (S, meta(web="passing"), 1.0, False),  # Raft silent 1 s too: two channels agree
    (D, meta(web="passing"), 5.0, False),
    (D, meta(web="passing"), None, False),
    (D, meta(web="passing"), 0.05, None),  # gossip cut off, Raft still hears it
    (L, None, 0.01, False),  # it said goodbye
])
def test_desired(state, m, silent, want):
    assert desired(Observed("n1", state, m, raft_silent=silent), "web") is want


def test_up_needs_the_member_alive_for_the_rejoin_time_but_down_does_not():
    fresh_ok = Observed("n1", A, meta(web="passing"), state_age=0.5)
    fresh_bad = Observed("n1", A, meta(web="failing"), state_age=0.5)
    p = Policy(rejoin=2.0)
    assert desired(fresh_ok, "web", p) is None
    assert desired(fresh_bad, "web", p) is False
    assert desired(Observed("n1", A, meta(web="passing"), state_age=2.0), "web", p) is True


def test_a_change_is_proposed_only_after_it_settled():
    t = VerdictTracker(["web"], settle=0.5)
    down = [Observed("n1", A, meta(web="failing"))]
    assert t.changes(10.0, down, {"n1/web": True}) == {}
    assert t.changes(10.4, down, {"n1/web": True}) == {}
    assert t.changes(10.5, down, {"n1/web": True}) == {"n1/web": False}
    assert t.changes(10.6, down, {"n1/web": False}) == {}  # committed: nothing more to say


def test_a_flap_restarts_the_settle_time():
    t = VerdictTracker(["web"], settle=0.5)
    committed = {"n1/web": True}
    for at, s in ((0.0, "failing"), (0.3, "passing"), (0.4, "failing"), (0.8, "failing")):
        assert t.changes(at, [Observed("n1", A, meta(web=s))], committed) == {}
    assert t.changes(0.9, [Observed("n1", A, meta(web="failing"))], committed) == {"n1/web": False}


def test_suspicion_keeps_the_committed_value_and_death_takes_it_down():
    t = VerdictTracker(["web", "dicom"], settle=0.0)
    committed = {"n2/web": True, "n2/dicom": True}
    assert t.changes(0, [Observed("n2", S, None)], committed) == {}
    assert t.changes(1, [Observed("n2", D, None)], committed) == {"n2/web": False, "n2/dicom": False}


def test_dead_in_gossip_but_alive_in_raft_is_flagged_and_left_alone():
    t = VerdictTracker(["web"], settle=0.0)
    assert t.changes(0, [Observed("n2", D, meta(web="passing"), raft_silent=0.02)],
                     {"n2/web": True}) == {}
    assert t.contradicted == {"n2"}
    t.changes(1, [Observed("n2", A, meta(web="passing"))], {"n2/web": True})
    assert t.contradicted == frozenset()


def test_first_verdicts_for_a_fresh_cluster():
    t = VerdictTracker(["web"], settle=0.0)
    members = [Observed("n1", A, meta(web="passing")), Observed("n2", A, meta(web="failing")),
               Observed("n3", A, None)]
    assert t.changes(0, members, {}) == {"n1/web": True, "n2/web": False}


def test_checks_reported_by_members_count_even_if_not_configured_here():
    t = VerdictTracker([], settle=0.0)
    assert t.changes(0, [Observed("n2", A, meta(pacs="failing"))], {}) == {"n2/pacs": False}


def test_keys_of_removed_checks_and_members_are_forgotten_at_once():
    t = VerdictTracker(["web"], settle=5.0)
    committed = {"n1/web": True, "n1/old": False, "n9/web": True}
    assert t.changes(0, [Observed("n1", A, meta(web="passing"))], committed) == \
        {"n1/old": None, "n9/web": None}
