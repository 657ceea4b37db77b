"""An idle agent wakes for what can change its answer, not on a 10 ms poll (issue 17).

The HA loop ticks fast only while something is under way and otherwise pauses until the
idle tick, the lease's end or the next renewal, woken at once by requests and Raft changes;
a holder renews its VIP's kernel lifetime a quarter-lifetime apart; the Raft tick thread
waits for its messages until the next thing due, and pings only the links heartbeats leave
idle; the journal stores an unchanged commit index no more.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

from hacluster.agent import Agent
from hacluster.consensus import pysyncobj_compat as compat
from hacluster.consensus.journal import DurableJournal
from hacluster.consensus.quiet import QUIET_MAX_S
from hacluster.consensus.raft import MAX_POLL_S
from hacluster.ha.decide import ANNOUNCE_OFFSETS, Act, Rules, Snapshot, VipState, decide
from hacluster.ha.requests import Channel, Stop
from hacluster.hostops.fake import FakeHostOps
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view
from tests.unit.test_raft_terms import FakeSeam, _node

VIP = config().vips[0]


# ------------------------------------------------------------------ decide: renewal cadence

def _holder_snap(now: float, renewed: float | None, present: bool = True) -> Snapshot:
    return Snapshot(now=now, node="n1", consensus=leader_view(), vips=(VipState(VIP, present),),
                    handoff=False, claimed_at={VIP.address: 1.0},
                    announces_sent={VIP.address: len(ANNOUNCE_OFFSETS)},
                    renewed_at={} if renewed is None else {VIP.address: renewed})


def test_a_holder_renews_only_when_a_quarter_lifetime_passed_or_the_kernel_lacks_it():
    rules = Rules(renew_every_s=0.5)
    acts = lambda snap: [a.act for a in decide(snap, rules).actions]  # noqa: E731
    assert acts(_holder_snap(10.0, renewed=9.7)) == []
    assert acts(_holder_snap(10.0, renewed=9.5)) == [Act.RENEW]
    assert acts(_holder_snap(10.0, renewed=9.9, present=False)) == [Act.RENEW]  # removed or expired
    assert acts(_holder_snap(10.0, renewed=None)) == [Act.RENEW]


# ------------------------------------------------------------------ the loop's pace

def _agent(raft=None, host=None):
    clock = FakeClock(100.0)
    raft = raft or FakeRaft()
    host = host or FakeHostOps()
    return Agent(config(), host, raft, clock=clock), raft, host, clock


def test_a_quiet_follower_pauses_for_the_idle_tick_and_a_claim_keeps_the_loop_fast():
    agent, raft, host, clock = _agent()
    raft.current = view()  # a follower with nothing to do
    agent.loop.tick()
    assert agent.loop._busy  # its sentence changed ("starting" -> follower): not settled yet
    agent.loop.tick()
    t = agent.config.timing
    assert not agent.loop._busy and agent.loop._quiet_pause() == t.idle_tick
    raft.current = leader_view()
    agent.loop.tick()  # claims: the announce burst is under way
    assert host.count("claim") == 1 and agent.loop._busy


class _LeaseRaft(FakeRaft):
    deadline = 0.0

    def lease_deadline(self) -> float:
        return self.deadline


def _quiet_holder():
    """A leader that claimed the VIP and finished its announce burst: the loop is quiet."""
    raft = _LeaseRaft()
    agent, _, _, clock = _agent(raft=raft)
    raft.current = leader_view()
    raft.deadline = float("inf")  # the claim's guard reads the real clock: no end
    agent.loop.tick()
    for _ in ANNOUNCE_OFFSETS:  # let the burst end
        clock.advance(1.0)
        agent.loop.tick()
    agent.loop.tick()
    return agent, raft, clock


def test_a_quiet_holder_wakes_at_its_lease_deadline_or_its_next_renewal():
    agent, raft, clock = _quiet_holder()
    t = agent.config.timing
    assert not agent.loop._busy
    raft.deadline = clock.now + 0.15  # sooner than the idle tick and the renewal
    assert abs(agent.loop._quiet_pause() - 0.15) < 1e-9
    raft.deadline = clock.now + 10
    renewed = agent.loop._vips.book.renewed_at[VIP.address]
    assert abs(agent.loop._quiet_pause() - min(t.idle_tick, renewed + t.renew_every - clock.now)) < 1e-9
    raft.deadline = clock.now - 1  # past: never a pause shorter than the fast tick
    assert agent.loop._quiet_pause() == t.tick


def test_a_lease_deadline_that_moved_on_only_rearms_the_quiet_sleep():
    agent, raft, clock = _quiet_holder()
    t = agent.config.timing
    until = clock.now + t.idle_tick
    raft.deadline = clock.now + 0.15
    assert abs(agent.loop._quiet_pause(until) - 0.15) < 1e-9
    clock.advance(0.15)
    raft.deadline = clock.now + 0.15  # heartbeat acks moved the lease on meanwhile
    assert not agent.loop._due(until)  # sleep again, no tick
    assert abs(agent.loop._quiet_pause(until) - 0.1) < 1e-9  # the idle tick's end comes first
    raft.deadline = clock.now  # no ack extended it: tick (and release)
    assert agent.loop._due(until)
    raft.deadline = clock.now + 10
    clock.advance(0.1)
    assert agent.loop._due(until)  # the idle tick came
    renewed = agent.loop._vips.book.renewed_at[VIP.address]
    clock.now = renewed + t.renew_every
    assert agent.loop._due(clock.now + 1)  # the renewal is due


def test_a_lease_that_ends_while_the_loop_is_quiet_releases_at_the_next_tick():
    raft = _LeaseRaft()
    agent, _, host, clock = _agent(raft=raft)
    raft.current = leader_view()
    raft.deadline = float("inf")
    agent.loop.tick()
    raft.current = replace(leader_view(), lease_ok=False)
    agent.loop.tick()
    assert not host.vip_present(VIP) and agent.loop._busy


def test_the_loop_subscribes_its_wake_up_to_raft_changes():
    class Watched(FakeRaft):
        def on_change(self, callback):
            self.callback = callback

    agent, raft, _, _ = _agent(raft=Watched())
    ch = agent.channel
    assert ch.sleep(0.0)  # nothing pending: the pause ran out
    raft.callback()
    assert not ch.sleep(5.0)  # woken at once


def test_channel_wake_ends_a_pause_from_another_thread_and_from_a_signal_handler():
    ch = Channel()
    threading.Timer(0.05, ch.wake).start()
    t0 = time.monotonic()
    assert not ch.sleep(10.0)
    assert time.monotonic() - t0 < 5.0
    old = signal.signal(signal.SIGUSR1, lambda *_: ch.send(Stop()))
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        t0 = time.monotonic()
        assert not ch.sleep(10.0)
        assert time.monotonic() - t0 < 5.0
        assert [type(r) for r, _ in ch.take()] == [Stop]
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert ch.sleep(0.01)  # drained: the next pause runs its course


def test_many_wakes_before_a_pause_end_one_pause_only():
    ch = Channel()
    for _ in range(1000):
        ch.wake()
    assert not ch.sleep(1.0)
    assert ch.sleep(0.01)


# ------------------------------------------------------------------ the Raft tick thread

def test_a_leader_polls_until_its_next_heartbeat_a_follower_until_its_timer(monkeypatch):
    seam = FakeSeam(leader=True)
    node, clock = _node(monkeypatch, seam)
    node._last_ping = clock.now
    seam.heartbeat_at = clock.now + 0.03
    assert abs(node.poll_wait(0.01) - 0.03) < 1e-9
    seam.heartbeat_at = clock.now - 0.001  # sent in this tick: the next one a heartbeat later
    assert abs(node.poll_wait(0.01) - min(MAX_POLL_S, node.config.timing.heartbeat)) < 1e-9
    seam.state = compat.FOLLOWER
    node._election_due = clock.now + 5
    assert node.poll_wait(0.01) == MAX_POLL_S  # capped: pysyncobj's own timers
    node._election_due = clock.now + 0.04
    assert abs(node.poll_wait(0.01) - 0.04) < 1e-9
    node._election_due = clock.now - 1
    assert node.poll_wait(0.01) == 0.01  # never below pysyncobj's period


def test_a_non_voter_or_a_retired_voter_polls_for_the_quiet_cap_not_pysyncobjs_10_ms(monkeypatch):
    """Neither has an election timer: its _election_due stays in the past, and a poll_wait
    that followed it made a non-voter tick at 100 Hz (5 % of a CPU in a 5-server lab, twice
    a follower voter's); capped at MAX_POLL_S it still ran a full tick 10 times a second
    (cProfile of an idle non-voter at N = 10: 425 full ticks in 40 s for 157 heartbeats).
    It waits QUIET_MAX_S now, and never longer than its next ping."""
    for make in (lambda n: setattr(n, "_built_readonly", True), lambda n: n.retire()):
        seam = FakeSeam(leader=False)
        node, clock = _node(monkeypatch, seam)
        make(node)
        node._last_ping = clock.now
        node._election_due = 0.0
        assert node.poll_wait(0.01) == QUIET_MAX_S > MAX_POLL_S
        node._last_ping = clock.now - node._ping_period() + 0.05
        assert abs(node.poll_wait(0.01) - 0.05) < 1e-9  # its next hc_ping comes first


def test_call_soon_ends_the_poll_at_once(monkeypatch):
    seam = FakeSeam()
    node, _ = _node(monkeypatch, seam)
    node.call_soon(lambda: None)
    assert getattr(seam, "woken", 0) == 1 and node.poll_wait(0.01) == 0.0


def test_pings_go_only_on_links_that_heartbeats_leave_idle(monkeypatch):
    seam = FakeSeam(leader=False)
    seam.leader = "10.0.0.12:7100"
    node, clock = _node(monkeypatch, seam)
    node.before_tick()
    assert [(n, m["type"]) for n, m in seam.sent if m["type"] == "hc_ping"] \
        == [("10.0.0.13:7100", "hc_ping")]
    seam.sent.clear()
    seam.state = compat.LEADER
    clock.advance(1.0)
    node.before_tick()
    assert not [m for _, m in seam.sent if m["type"] == "hc_ping"]


def test_raft_changes_call_the_watchers(monkeypatch):
    node, _ = _node(monkeypatch, FakeSeam())
    calls = []
    node.on_change(lambda: calls.append(1))
    node._on_state_changed(compat.FOLLOWER, compat.CANDIDATE)
    assert calls == [1]


# ------------------------------------------------------------------ the journal

def test_the_commit_index_alone_is_never_stored_on_the_timer(tmp_path):
    class Counting(DurableJournal):
        stores = 0

        def _store_meta(self) -> bool:
            Counting.stores += 1
            return super()._store_meta()

    j = Counting(tmp_path / "raft.journal", tmp_path / "raft.dump")
    before = Counting.stores
    for i in range(10):  # pysyncobj sets it with every message, changed or not
        j.setRaftCommitIndex(5 + i // 2)
        j.onOneSecondTimer()
    assert Counting.stores == before  # three flushes on the tick thread each time, before
    j._destroy()
