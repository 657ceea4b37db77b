import pytest

from hacluster.gossip.types import GossipState, NodeMeta
from hacluster.model import CheckReport, CheckState
from hacluster.verdicts import Observed, VerdictTracker, desired


def meta(**states):
    return NodeMeta(checks=tuple(CheckReport(n, "tcp", "x:1", CheckState(s), 1.0, "")
                                 for n, s in states.items()))


@pytest.mark.parametrize("state, m, want", [
    (GossipState.ALIVE, meta(web="passing"), True),
    (GossipState.ALIVE, meta(web="failing"), False),
    (GossipState.ALIVE, meta(web="unknown"), None),
    (GossipState.ALIVE, meta(other="passing"), None),
    (GossipState.ALIVE, None, None),
    (GossipState.SUSPECT, meta(web="failing"), None),  # suspicion is not a verdict
    (GossipState.DEAD, meta(web="passing"), False),
    (GossipState.LEFT, None, False),
])
def test_desired(state, m, want):
    assert desired(Observed("n1", state, m), "web") is want


def test_a_change_is_proposed_only_after_it_settled():
    t = VerdictTracker(["web"], settle=0.5)
    down = [Observed("n1", GossipState.ALIVE, meta(web="failing"))]
    assert t.changes(10.0, down, {"n1/web": True}) == {}
    assert t.changes(10.4, down, {"n1/web": True}) == {}
    assert t.changes(10.5, down, {"n1/web": True}) == {"n1/web": False}
    # once committed, nothing more to say
    assert t.changes(10.6, down, {"n1/web": False}) == {}


def test_a_flap_restarts_the_settle_time():
    t = VerdictTracker(["web"], settle=0.5)
    committed = {"n1/web": True}
    assert t.changes(0.0, [Observed("n1", GossipState.ALIVE, meta(web="failing"))], committed) == {}
    assert t.changes(0.3, [Observed("n1", GossipState.ALIVE, meta(web="passing"))], committed) == {}
    assert t.changes(0.4, [Observed("n1", GossipState.ALIVE, meta(web="failing"))], committed) == {}
    assert t.changes(0.8, [Observed("n1", GossipState.ALIVE, meta(web="failing"))], committed) == {}
    assert t.changes(0.9, [Observed("n1", GossipState.ALIVE, meta(web="failing"))], committed) == \
        {"n1/web": False}


def test_suspicion_keeps_the_committed_value_and_death_takes_it_down():
    t = VerdictTracker(["web", "dicom"], settle=0.0)
    committed = {"n2/web": True, "n2/dicom": True}
    assert t.changes(0, [Observed("n2", GossipState.SUSPECT, None)], committed) == {}
    assert t.changes(1, [Observed("n2", GossipState.DEAD, None)], committed) == \
        {"n2/web": False, "n2/dicom": False}


def test_first_verdicts_for_a_fresh_cluster():
    t = VerdictTracker(["web"], settle=0.0)
    members = [Observed("n1", GossipState.ALIVE, meta(web="passing")),
               Observed("n2", GossipState.ALIVE, meta(web="failing")),
               Observed("n3", GossipState.ALIVE, None)]
    assert t.changes(0, members, {}) == {"n1/web": True, "n2/web": False}
