"""Failover execution on an agent whose loop runs (fakes behind HostOps and Raft): the
release is confirmed before any transfer, a failed move never leaves a transferred claim
unprobed, and SIGTERM does not transfer while an address is still here."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

import pytest

from hacluster.agent import Agent
from hacluster.errors import Refusal, Refused
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import Vip
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view

VIP = Vip("10.0.0.100", 24, "eth0")


@dataclass
class _StickyHostOps(FakeHostOps):
    """A release that does not take (the kernel keeps the address)."""

    def release_vip(self, vip: Vip) -> None:
        self.calls.append(("release", vip.address))


def wait_held(host: FakeHostOps, timeout: float = 5.0) -> None:
    """Until the agent's loop (on its thread) holds the VIP, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not host.vip_present(VIP) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host.vip_present(VIP), host.calls


def running(raft: FakeRaft, host: FakeHostOps):
    agent = Agent(config(), host, raft, clock=time.monotonic)
    t = threading.Thread(target=agent.loop.run, daemon=True)
    t.start()
    wait_held(host)
    return agent, t


def stop(agent, t):
    agent.loop.stop()
    t.join(5)


def test_a_move_releases_then_transfers_and_records_an_event():
    raft, host = FakeRaft(current=leader_view()), FakeHostOps()
    agent, t = running(raft, host)
    try:
        out = agent.failover.run("n2", False, 2.0)
    finally:
        stop(agent, t)
    assert raft.transfers == ["n2"] and not host.vip_present(VIP) and not agent.loop.releasing
    assert out.plan.target == "n2" and out.released_at_unix_ms > 0
    assert [e.kind for e in agent.events.after(0)][-1] == "failover"


def test_no_transfer_while_the_address_is_still_here():
    raft, host = FakeRaft(current=leader_view()), _StickyHostOps()
    agent, t = running(raft, host)
    try:
        with pytest.raises(Refused) as e:
            agent.failover.run("n2", False, 2.0)
    finally:
        stop(agent, t)
    assert e.value.kind is Refusal.INTERNAL and "could not be released" in str(e.value)
    assert raft.transfers == [] and not agent.loop.releasing


def test_a_transfer_that_never_takes_ends_with_a_probed_reclaim():
    # this leader itself won by transfer: its first claim skipped the probe; after its own
    # failover timed out, its reclaim must probe (the target may have claimed unprobed)
    raft = FakeRaft(current=replace(leader_view(), won_by_transfer=True), step_down_on_transfer=False)
    host = FakeHostOps()
    agent, t = running(raft, host)
    assert host.count("probe") == 0  # by transfer: no probe the first time
    try:
        with pytest.raises(Refused) as e:
            agent.failover.run("n2", False, 0.5)
        assert e.value.kind is Refusal.ABORTED and "keeps leading" in str(e.value)
        wait_held(host)
    finally:
        stop(agent, t)
    assert host.count("probe") >= 1, host.calls
    assert raft.transfers and set(raft.transfers) == {"n2"}


def test_sigterm_does_not_transfer_while_the_address_is_still_here():
    raft, host = FakeRaft(current=leader_view()), _StickyHostOps()
    agent = Agent(config(), host, raft)
    agent.loop.tick()
    agent.loop.shutdown()
    assert raft.transfers == [] and agent.loop.stopping
