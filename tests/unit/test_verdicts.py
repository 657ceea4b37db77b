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


@pytest.mark.parametrize("tcp, want", [
    (0.01, None),  # its kernel acks our segments: only its processes are slow (CPU starvation)
    (0.6, False),  # nothing acks: the server is gone
    (None, False),  # unknown (no connection): Raft and gossip decide, as before
])
def test_a_suspect_whose_kernel_still_acks_is_not_down(tcp, want):
    obs = Observed("n1", S, meta(web="passing"), raft_silent=2.0, tcp_silent=tcp)
    assert desired(obs, "web", Policy(corroborate=0.5)) is want


def test_a_corroborated_down_needs_no_settle_time():
    """SUSPECT + Raft silent for the corroboration window: that window was the filter."""
    t = VerdictTracker(["web"], settle=0.5, policy=Policy(corroborate=0.5))
    gone = [Observed("n1", S, meta(web="passing"), raft_silent=0.5)]
    assert t.changes(10.0, gone, {"n1/web": True}) == {"n1/web": False}


def test_dead_with_raft_and_kernel_silent_needs_no_settle_time_either():
    # the leader has gossip declare a corroborated suspect DEAD at once: were DEAD settled,
    # the backends of a powered-off server would wait the settle time behind that
    t = VerdictTracker(["web"], settle=0.5, policy=Policy(corroborate=0.5))
    committed = {"n1/web": True}
    assert t.changes(10.0, [Observed("n1", D, meta(web="passing"), raft_silent=0.6)], committed) \
        == {"n1/web": False}
    # DEAD in gossip alone (Raft not asked, or its kernel still acks): the settle time as before
    for obs in (Observed("n2", D, None), Observed("n3", D, None, raft_silent=0.6, tcp_silent=0.01)):
        assert t.changes(10.0, [obs], {f"{obs.node}/web": True}) == {}


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


# ------------------------------------------------------------------ suspect by election

def test_a_suspect_stays_down_while_gossip_still_calls_the_dead_holder_alive():
    """Right after the election gossip has not noticed the power-off yet: ALIVE for long,
    passing checks. The ordinary rule would put it back up; the suspicion holds."""
    t = VerdictTracker(["web"], settle=0.0, policy=Policy(rejoin=2.0))
    dead_holder = Observed("n1", A, meta(web="passing"), state_age=600.0, raft_silent=0.4)
    for at in (0.0, 1.0, 3.0):
        assert t.changes(at, [dead_holder], {"n1/web": False}, suspects={"n1"}) == {}
        assert t.rejoined == frozenset()


def test_a_suspect_is_back_after_rejoin_alive_in_gossip_and_heard_by_raft():
    t = VerdictTracker(["web"], settle=0.0, policy=Policy(rejoin=2.0, raft_fresh=0.35))
    committed = {"n1/web": False}
    back = Observed("n1", A, meta(web="passing"), state_age=600.0, raft_silent=0.02)
    assert t.changes(10.0, [back], committed, suspects={"n1"}) == {}  # the suspicion starts
    assert t.changes(11.9, [back], committed, suspects={"n1"}) == {}
    # rejoin counted from the suspicion, not from gossip's (older) ALIVE: back now
    assert t.changes(12.0, [back], committed, suspects={"n1"}) == {"n1/web": True}
    assert t.rejoined == {"n1"}


@pytest.mark.parametrize("obs", [
    Observed("n1", A, meta(web="passing"), state_age=1.0, raft_silent=0.02),  # alive too briefly
    Observed("n1", A, meta(web="passing"), state_age=9.0, raft_silent=2.0),  # Raft does not hear it
    Observed("n1", A, meta(web="passing"), state_age=9.0, raft_silent=None),
    Observed("n1", S, meta(web="passing"), state_age=9.0, raft_silent=0.02),
    Observed("n1", D, None, state_age=9.0, raft_silent=9.0),
])
def test_a_suspect_is_not_back_while_either_channel_doubts_it(obs):
    t = VerdictTracker(["web"], settle=0.0, policy=Policy(rejoin=2.0))
    t.changes(0.0, [obs], {"n1/web": False}, suspects={"n1"})
    assert t.changes(5.0, [obs], {"n1/web": False}, suspects={"n1"}) == {}
    assert t.rejoined == frozenset()


def test_a_suspect_whose_check_fails_is_committed_down_and_not_cleared():
    t = VerdictTracker(["web"], settle=0.0, policy=Policy(rejoin=2.0))
    obs = Observed("n1", A, meta(web="failing"), state_age=0.5, raft_silent=0.02)
    assert t.changes(0.0, [obs], {}, suspects={"n1"}) == {"n1/web": False}
    assert t.rejoined == frozenset()


def test_a_suspect_that_is_no_member_any_more_is_cleared():
    t = VerdictTracker(["web"], settle=0.0)
    t.changes(0.0, [Observed("n2", A, meta(web="passing"))], {}, suspects={"n9"})
    assert t.rejoined == {"n9"}


def test_a_new_leadership_measures_the_suspicion_afresh():
    t = VerdictTracker(["web"], settle=0.0, policy=Policy(rejoin=2.0))
    obs = Observed("n1", A, meta(web="passing"), state_age=600.0, raft_silent=0.02)
    assert t.back(0.0, [obs], {"n1"}) == frozenset()
    t.reset()
    assert t.back(2.5, [obs], {"n1"}) == frozenset()  # since 2.5 for this leadership
    assert t.back(4.5, [obs], {"n1"}) == {"n1"}
