from dataclasses import replace

from hacluster.decide import ANNOUNCE_OFFSETS, Act, decide, may_hold
from hacluster.model import Role, Snapshot, Vip, VipState
from tests.support.raft import leader_view, view

VIP = Vip("10.0.0.100", 24, "eth0")


def snap(consensus, present=False, handoff=False, claimed_at=None, now=10.0):
    return Snapshot(now=now, node="n1", consensus=consensus, vips=(VipState(VIP, present),),
                    handoff=handoff, claimed_at=claimed_at or {})


def acts(decision):
    return [a.act for a in decision.actions]


def test_follower_releases_a_vip_it_finds():
    d = decide(snap(view(leader="n2"), present=True), 0, {})
    assert acts(d) == [Act.RELEASE]
    assert d.sentence == "follower of n2, term 1, releasing 10.0.0.100"


def test_follower_without_vip_does_nothing():
    d = decide(snap(view(leader="n2")), 0, {})
    assert d.actions == () and d.sentence == "follower of n2, term 1, holds no VIP"


def test_new_leader_registers_epoch_before_claiming():
    v = replace(leader_view(term=4), epoch_applied=False)
    d = decide(snap(v), 0, {})
    assert acts(d) == [Act.REGISTER_EPOCH] and d.actions[0].term == 4
    assert "waiting for epoch" in d.sentence
    # asked already for this term: do not ask again every tick
    assert acts(decide(snap(v), 4, {})) == []


def test_leader_with_lease_and_epoch_claims_with_probe():
    d = decide(snap(leader_view()), 2, {})
    assert acts(d) == [Act.CLAIM] and not d.actions[0].skip_probe
    assert d.sentence == "leader, term 2, lease ok, claiming 10.0.0.100"


def test_leader_by_transfer_claims_without_probe():
    d = decide(snap(leader_view(won_by_transfer=True)), 2, {})
    assert d.actions[0].skip_probe


def test_holder_renews_every_tick_and_announces_on_schedule():
    claimed = {VIP.address: 10.0}
    d0 = decide(snap(leader_view(), present=True, claimed_at=claimed, now=10.0), 2, {})
    assert acts(d0) == [Act.RENEW, Act.ANNOUNCE]
    d1 = decide(snap(leader_view(), present=True, claimed_at=claimed, now=10.01), 2,
                {VIP.address: 1})
    assert acts(d1) == [Act.RENEW]
    d2 = decide(snap(leader_view(), present=True, claimed_at=claimed,
                     now=10.0 + ANNOUNCE_OFFSETS[1]), 2, {VIP.address: 1})
    assert acts(d2) == [Act.RENEW, Act.ANNOUNCE]
    done = decide(snap(leader_view(), present=True, claimed_at=claimed, now=99.0), 2,
                  {VIP.address: len(ANNOUNCE_OFFSETS)})
    assert acts(done) == [Act.RENEW]
    assert done.sentence == "leader, term 2, lease ok, holds 10.0.0.100"


def test_holder_restores_a_vip_removed_behind_its_back():
    d = decide(snap(leader_view(), present=False, claimed_at={VIP.address: 1.0}), 2,
               {VIP.address: 4})
    assert acts(d) == [Act.RENEW]  # renew = replace: puts it back, no probe needed


def test_leader_without_lease_releases():
    v = replace(leader_view(), lease_ok=False)
    d = decide(snap(v, present=True, claimed_at={VIP.address: 1.0}), 2, {})
    assert acts(d) == [Act.RELEASE] and "lease lost" in d.sentence
    assert not may_hold(snap(v))[0]


def test_handoff_releases_even_with_lease():
    d = decide(snap(leader_view(), present=True, handoff=True), 2, {})
    assert acts(d) == [Act.RELEASE] and "handing off" in d.sentence


def test_candidate_sentence():
    d = decide(snap(view(role=Role.CANDIDATE, term=7)), 0, {})
    assert d.sentence == "candidate, term 7, holds no VIP"
