from dataclasses import replace

from hacluster.ha.decide import (
    ANNOUNCE_OFFSETS,
    EPOCH_RETRY_S,
    Act,
    Rules,
    Snapshot,
    TableProgress,
    VipState,
    decide,
    may_hold,
    tick_sentence,
)
from hacluster.model import Role, Vip
from tests.support.raft import leader_view, view

VIP = Vip("10.0.0.100", 24, "eth0")


def snap(consensus, present=False, handoff=False, claimed_at=None, now=10.0, epoch_asked=0,
         announces=None):
    return Snapshot(now=now, node="n1", consensus=consensus, vips=(VipState(VIP, present),),
                    handoff=handoff, claimed_at=claimed_at or {}, announces_sent=announces or {},
                    epoch_asked=(epoch_asked, now))


def acts(decision):
    return [a.act for a in decision.actions]


def test_follower_releases_a_vip_it_finds():
    d = decide(snap(view(leader="n2"), present=True))
    assert acts(d) == [Act.RELEASE]
    assert d.sentence == "follower of n2, term 1, releasing 10.0.0.100"


def test_follower_without_vip_does_nothing():
    d = decide(snap(view(leader="n2")))
    assert d.actions == () and d.sentence == "follower of n2, term 1, holds no VIP"


def test_new_leader_registers_epoch_before_claiming():
    v = replace(leader_view(term=4), epoch_applied=False)
    d = decide(snap(v))
    assert acts(d) == [Act.REGISTER_EPOCH] and d.actions[0].term == 4
    assert "waiting for epoch" in d.sentence
    # asked already for this term: do not ask again every tick
    assert acts(decide(snap(v, epoch_asked=4))) == []


def test_leader_with_lease_and_epoch_claims_with_probe():
    d = decide(snap(leader_view()))
    assert acts(d) == [Act.CLAIM] and not d.actions[0].skip_probe
    assert d.sentence == "leader, term 2, lease ok, claiming 10.0.0.100"


def test_leader_by_transfer_claims_without_probe():
    d = decide(snap(leader_view(won_by_transfer=True)))
    assert d.actions[0].skip_probe


def test_holder_renews_every_tick_and_announces_on_schedule():
    claimed = {VIP.address: 10.0}
    d0 = decide(snap(leader_view(), present=True, claimed_at=claimed, now=10.0))
    assert acts(d0) == [Act.RENEW, Act.ANNOUNCE]
    d1 = decide(snap(leader_view(), present=True, claimed_at=claimed, now=10.01,
                     announces={VIP.address: 1}))
    assert acts(d1) == [Act.RENEW]
    d2 = decide(snap(leader_view(), present=True, claimed_at=claimed,
                     now=10.0 + ANNOUNCE_OFFSETS[1], announces={VIP.address: 1}))
    assert acts(d2) == [Act.RENEW, Act.ANNOUNCE]
    done = decide(snap(leader_view(), present=True, claimed_at=claimed, now=99.0,
                       announces={VIP.address: len(ANNOUNCE_OFFSETS)}))
    assert acts(done) == [Act.RENEW]
    assert done.sentence == "leader, term 2, lease ok, holds 10.0.0.100"


def test_holder_restores_a_vip_removed_behind_its_back():
    d = decide(snap(leader_view(), present=False, claimed_at={VIP.address: 1.0},
                    announces={VIP.address: 4}))
    assert acts(d) == [Act.RENEW]  # renew = replace: puts it back, no probe needed


def test_leader_without_lease_releases():
    v = replace(leader_view(), lease_ok=False)
    d = decide(snap(v, present=True, claimed_at={VIP.address: 1.0}))
    assert acts(d) == [Act.RELEASE] and "lease lost" in d.sentence
    assert not may_hold(snap(v))[0]


def test_handoff_releases_even_with_lease():
    d = decide(snap(leader_view(), present=True, handoff=True))
    assert acts(d) == [Act.RELEASE] and "handing off" in d.sentence


def test_candidate_sentence():
    d = decide(snap(view(role=Role.CANDIDATE, term=7)))
    assert d.sentence == "candidate, term 7, holds no VIP"


# The rules that used to live in the agent's loop (issue 13): each is decide()'s now.

def test_a_lost_epoch_is_asked_for_again_after_the_retry_time():
    v = replace(leader_view(term=4), epoch_applied=False)
    asked = Snapshot(now=10.0, node="n1", consensus=v, vips=(VipState(VIP, False),), handoff=False,
                     epoch_asked=(4, 10.0 - EPOCH_RETRY_S + 0.01))
    assert acts(decide(asked)) == []
    late = replace(asked, epoch_asked=(4, 10.0 - EPOCH_RETRY_S - 0.01))
    d = decide(late)
    assert acts(d) == [Act.REGISTER_EPOCH] and d.actions[0].term == 4 and "asking again" in d.actions[0].why


def test_without_the_lease_every_claim_is_forgotten_also_of_an_address_already_gone():
    v = replace(leader_view(), lease_ok=False)
    d = decide(snap(v, present=False, claimed_at={VIP.address: 1.0}, announces={VIP.address: 2}))
    assert acts(d) == [Act.FORGET] and "releasing" not in d.sentence


def test_a_transferred_leader_probes_an_address_it_released_itself_in_this_term():
    v = leader_view(term=5, won_by_transfer=True)
    own = replace(snap(v), released_in_term={VIP.address: 5})
    assert acts(decide(own)) == [Act.CLAIM] and not decide(own).actions[0].skip_probe
    earlier = replace(snap(v), released_in_term={VIP.address: 4})
    assert decide(earlier).actions[0].skip_probe


def test_a_peer_back_from_a_partition_restarts_the_announce_burst():
    held = snap(leader_view(), present=True, claimed_at={VIP.address: 1.0}, now=10.0,
                announces={VIP.address: len(ANNOUNCE_OFFSETS)})
    assert acts(decide(held)) == [Act.RENEW]
    back = replace(held, peers_back=frozenset({"n2"}), holding_since=1.0)
    d = decide(back)
    assert acts(d) == [Act.REANNOUNCE, Act.RENEW, Act.ANNOUNCE] and "n2 reconnected" in d.actions[0].why
    # peers that answer right after the win are catching up with it, not back from a partition
    just_won = replace(back, holding_since=10.0 - Rules().reannounce_settle_s)
    assert acts(decide(just_won)) == [Act.RENEW]


def test_the_sentence_carries_maintenance_and_the_table_generations():
    s = replace(snap(leader_view(), present=True, claimed_at={VIP.address: 1.0},
                     announces={VIP.address: 4}),
                maintenance=True, table=TableProgress(applied=6, wanted=7))
    assert decide(s).sentence == ("leader, term 2, lease ok, holds 10.0.0.100, MAINTENANCE: table "
                                  "frozen, no automatic handoff, table gen 6 (applying 7)")
    d = decide(replace(s, maintenance=False, table=TableProgress(None, None)))
    assert d.sentence.endswith("holds 10.0.0.100, table gen none")
    assert tick_sentence(d, ["waiting: x"], "claim: boom").endswith(", waiting: x, error: claim: boom")
