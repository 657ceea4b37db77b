"""The claim's order with connection-state sync: the synced flows are committed before the
first VIP is added (the commit overlaps the ARP probe), once per claim; a release of the
last VIP hands the flows back. Fake host and sync; the real conntrackd is in
tests/unit/test_conntrackd.py and tests/lab/test_connsync_agent.py."""

from dataclasses import replace

from hacluster.agent import Agent
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import SyncState, Vip
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view
from tests.support.sync import FakeSync

VIP = Vip("10.0.0.100", 24, "eth0")
VIP2 = Vip("10.0.0.101", 24, "eth0")


class OrderedHost(FakeHostOps):
    """FakeHostOps whose calls go into the sync's list too, so one list shows the order."""

    def __init__(self, shared, **kw):
        super().__init__(**kw)
        self.shared = shared

    def probe(self, vip, timeout_s):
        self.shared.append("probe")
        return super().probe(vip, timeout_s)

    def claim_vip(self, vip, lifetime_s, guard=None):
        self.shared.append(f"claim {vip.address}")
        return super().claim_vip(vip, lifetime_s, guard)

    def release_vip(self, vip):
        self.shared.append(f"release {vip.address}")
        super().release_vip(vip)


def make(sync=None, vips=None, **host_kw):
    sync = sync or FakeSync()
    host = OrderedHost(sync.calls, **host_kw)
    raft = FakeRaft()
    clock = FakeClock(100.0)
    cfg = config() if vips is None else config(vips=vips)
    return Agent(cfg, host, raft, clock=clock, sync=sync), raft, host, sync, clock


def test_the_commit_begins_before_the_probe_and_ends_before_the_first_claim():
    agent, raft, _host, sync, _ = make()
    raft.current = leader_view(term=3)
    agent.loop.tick()
    assert sync.calls == ["commit-begin", "probe", "commit-wait", "claim 10.0.0.100", "claimed"]


def test_one_commit_per_claim_and_renewals_commit_nothing():
    two = [{"address": v.address, "prefix": 24, "interface": "eth0"} for v in (VIP, VIP2)]
    agent, raft, _host, sync, clock = make(vips=two)
    raft.current = leader_view(term=3)
    for _ in range(4):
        agent.loop.tick()
        clock.advance(0.01)
    assert sync.calls.count("commit-begin") == 1 and sync.calls.count("claimed") == 1
    first_claim = sync.calls.index("claim 10.0.0.100")
    assert sync.calls.index("commit-wait") < first_claim < sync.calls.index("claim 10.0.0.101")


def test_releasing_the_last_vip_hands_the_flows_back_and_the_next_claim_commits_again():
    agent, raft, _host, sync, clock = make()
    raft.current = leader_view(term=3)
    agent.loop.tick()
    raft.current = replace(leader_view(term=3), lease_ok=False)
    clock.advance(0.01)
    agent.loop.tick()
    assert sync.calls[-2:] == ["release 10.0.0.100", "released"]
    raft.current = leader_view(term=5)
    clock.advance(1.0)
    agent.loop.tick()
    assert sync.calls.count("commit-begin") == 2 and sync.calls[-1] == "claimed"


def test_a_commit_that_does_not_finish_does_not_stop_the_claim():
    agent, raft, host, sync, _ = make(sync=FakeSync(commit_ok=False))
    raft.current = leader_view(term=3)
    agent.loop.tick()
    assert host.vip_present(VIP)
    assert "claiming without the synced flows" in agent.loop.report().sentence


def test_while_the_old_holder_answers_one_commit_runs_at_a_time_and_a_fresh_one_is_waited_for():
    agent, raft, host, sync, clock = make(sync=FakeSync(commit_finishes=False), answering={VIP.address})
    raft.current = leader_view(term=3)
    for _ in range(3):  # the first commit is still running: not begun again
        agent.loop.tick()
        clock.advance(0.01)
    assert len(sync.commits) == 1 and host.count("claim") == 0
    sync.commits[0].finished = True  # it ends while the old holder still answers
    agent.loop.tick()
    assert len(sync.commits) == 2  # a fresh one: the old holder kept syncing meanwhile
    host.answering.clear()
    clock.advance(0.01)
    agent.loop.tick()
    assert host.count("claim") == 1 and sync.commits[1].finished  # the claim waited for the fresh one
    assert sync.calls.index("claim 10.0.0.100") > sync.calls.index("commit-wait")


def test_status_shows_the_sync():
    agent, *_ = make(sync=FakeSync(state=SyncState.DOWN))
    assert agent.views.status().connection_sync.state is SyncState.DOWN
    agent2, *_ = make()
    assert agent2.views.status().connection_sync.state is SyncState.OK


def test_without_sync_status_says_off():
    agent = Agent(config(), FakeHostOps(), FakeRaft(), clock=FakeClock(1.0))
    assert agent.views.status().connection_sync.state is SyncState.OFF
