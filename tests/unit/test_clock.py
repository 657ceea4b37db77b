"""One lease clock: raft.py and hostops read the very same function, on CLOCK_MONOTONIC_RAW."""

from __future__ import annotations

import time

from hacluster import clock
from hacluster.consensus import raft
from hacluster.hostops import base, fake, netlink


def test_every_lease_deadline_is_read_on_the_one_clock():
    assert raft._now is clock.now
    assert base.GUARD_CLOCK is clock.now
    assert netlink._clock is clock.now


def test_the_clock_is_monotonic_raw():
    before = time.clock_gettime(time.CLOCK_MONOTONIC_RAW)
    reading = clock.now()
    after = time.clock_gettime(time.CLOCK_MONOTONIC_RAW)
    assert before <= reading <= after


def test_the_fake_hostops_fences_on_the_lease_clock(monkeypatch):
    from hacluster.model import Vip

    vip = Vip("10.0.0.100", 24, "eth0")
    monkeypatch.setattr(clock, "now", lambda: 100.0)
    host = fake.FakeHostOps()
    assert host.claim_vip(vip, 2.0, guard=lambda: 100.5)
    assert not host.claim_vip(vip, 2.0, guard=lambda: 100.0)  # deadline reached: fenced
    assert host.calls[-1] == ("fenced", "10.0.0.100")
