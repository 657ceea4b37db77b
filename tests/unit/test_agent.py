from dataclasses import replace

from hacluster.agent import Agent
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import Role, Vip
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view

VIP = Vip("10.0.0.100", 24, "eth0")


def make(raft=None, host=None):
    raft = raft or FakeRaft()
    host = host or FakeHostOps()
    clock = FakeClock(100.0)
    return Agent(config(), host, raft, clock=clock), raft, host, clock


def test_stale_vip_on_a_follower_is_removed_at_start():
    agent, raft, host, _ = make(host=FakeHostOps(present={VIP.address: 2}))
    agent.loop.tick()
    assert not host.vip_present(VIP) and ("release", VIP.address) in host.calls


def test_leader_goes_epoch_then_probe_then_claim_then_announce():
    agent, raft, host, clock = make()
    raft.current = replace(leader_view(term=3), epoch_applied=False)
    agent.loop.tick()
    assert raft.epochs == [3] and host.calls == []
    raft.current = leader_view(term=3)
    s = agent.loop.tick()
    assert [k for k, _ in host.calls] == ["probe", "claim", "announce"]
    assert host.present[VIP.address] == 2  # kernel lifetime from config
    assert "leader, term 3, lease ok, claiming 10.0.0.100" in s
    clock.advance(0.01)
    assert agent.loop.tick() == "leader, term 3, lease ok, holds 10.0.0.100"
    assert agent.views.status().vips[0].held


def test_claim_waits_while_someone_answers_the_probe():
    agent, raft, host, clock = make(host=FakeHostOps(answering={VIP.address}))
    raft.current = leader_view()
    agent.loop.tick()
    assert host.count("claim") == 0 and "kernel still answers" in agent.loop.report().sentence
    host.answering.clear()
    clock.advance(0.01)
    agent.loop.tick()
    assert host.count("claim") == 1


def test_lease_lost_during_probe_means_no_claim():
    class LosingRaft(FakeRaft):
        def lease_ok_now(self):  # the snapshot saw the lease; by the end of the probe it is gone
            return False

    agent, raft, host, _ = make(raft=LosingRaft())
    raft.current = leader_view()
    agent.loop.tick()
    assert host.count("probe") == 1 and host.count("claim") == 0


def test_holder_renews_a_quarter_lifetime_apart_and_releases_when_lease_ends():
    agent, raft, host, clock = make()
    raft.current = leader_view()
    every = agent.config.timing.vip_lifetime / 4
    for _ in range(5):  # ticks within a quarter of the lifetime: the claim, no renewal
        agent.loop.tick()
        clock.advance(0.01)
    assert host.count("claim") == 1
    clock.advance(every)
    agent.loop.tick()
    agent.loop.tick()
    assert host.count("claim") == 2  # one renewal (the same netlink replace), then none
    raft.current = replace(leader_view(), lease_ok=False)
    s = agent.loop.tick()
    assert not host.vip_present(VIP) and "lease lost" in s
    assert not agent.views.status().vips[0].held


def test_vip_removed_by_someone_else_is_restored_without_probe():
    agent, raft, host, clock = make()
    raft.current = leader_view()
    agent.loop.tick()
    host.present.clear()  # e.g. a network restart dropped the address
    probes = host.count("probe")
    clock.advance(0.01)
    agent.loop.tick()
    assert host.vip_present(VIP) and host.count("probe") == probes


def test_peer_reconnect_triggers_a_new_announce_burst():
    agent, raft, host, clock = make()
    raft.current = leader_view()
    agent.loop.tick()
    for _ in range(200):
        clock.advance(0.01)
        agent.loop.tick()
    before = host.count("announce")
    assert before == 4
    raft.current = leader_view(ack_age=0.9)  # partition: acks stop, the link may stay up
    agent.loop.tick()
    assert host.count("announce") == before
    raft.current = leader_view()
    clock.advance(0.01)
    agent.loop.tick()
    assert host.count("announce") == before + 1


def test_sigterm_on_leader_releases_first_then_transfers():
    agent, raft, host, clock = make()
    raft.current = leader_view()
    agent.loop.tick()
    agent.loop.shutdown()
    kinds = [k for k, _ in host.calls]
    assert kinds[-1] == "release" and raft.transfers == [None]
    assert not host.vip_present(VIP)


def test_sigterm_on_follower_does_not_transfer():
    agent, raft, host, _ = make()
    raft.current = view(leader="n2")
    agent.loop.shutdown()
    assert raft.transfers == []


def test_hostops_errors_show_in_the_sentence_and_the_loop_goes_on():
    agent, raft, host, clock = make(host=FakeHostOps(fail_claims=True))
    raft.current = leader_view()
    s = agent.loop.tick()
    assert "error: claim 10.0.0.100: claim" in s and "injected failure" in s
    host.fail_claims = False
    clock.advance(0.01)
    assert "error" not in agent.loop.tick()


def test_status_reports_members_and_role():
    agent, raft, host, _ = make()
    raft.current = leader_view(term=9)
    agent.loop.tick()
    st = agent.views.status()
    assert st.role is Role.LEADER and st.term == 9 and st.node == "n1"
    assert [m.id for m in st.members] == ["n1", "n2", "n3"] and st.members[0].is_self


def test_a_renewal_decided_before_a_pause_is_not_executed_after_it():
    """A tick decides RENEW, the process is frozen, the lease ends: no stale renewal."""

    class PausedRaft(FakeRaft):
        paused = False

        def lease_ok_now(self):  # the snapshot still sees the lease; every later look does not
            return not self.paused and super().lease_ok_now()

    agent, raft, host, clock = make(raft=PausedRaft())
    raft.current = leader_view()
    agent.loop.tick()
    claims = host.count("claim")
    raft.paused = True
    clock.advance(0.01)
    agent.loop.tick()
    assert host.count("claim") == claims


def test_lease_ending_during_the_netlink_call_undoes_the_claim():
    class EndsDuringCall(FakeRaft):
        checks = 0
        ending = False

        def lease_ok_now(self):  # armed: the pre-check (deadline) passes, the post-check fails
            if not self.ending:
                return super().lease_ok_now()
            self.checks += 1
            return self.checks <= 1

    agent, raft, host, clock = make(raft=EndsDuringCall())
    raft.current = leader_view()
    agent.loop.tick()  # holds it
    assert host.vip_present(VIP)
    raft.ending = True
    clock.advance(agent.config.timing.renew_every)  # the next renewal is due
    agent.loop.tick()
    assert not host.vip_present(VIP) and host.calls[-1] == ("release", VIP.address)


def test_a_lost_epoch_proposal_is_made_again():
    # pysyncobj dropped the first leader_epoch (a leadership change under way): without a
    # retry this leader would lead forever without claiming the VIP
    agent, raft, host, clock = make()
    raft.current = replace(leader_view(term=4), epoch_applied=False)
    agent.loop.tick()
    clock.advance(0.1)
    agent.loop.tick()
    assert raft.epochs == [4]  # asked once, waiting
    clock.advance(0.5)
    agent.loop.tick()
    assert raft.epochs == [4, 4]
    raft.current = leader_view(term=4)
    agent.loop.tick()
    assert host.vip_present(VIP)
