"""The one way into the HA loop from other threads (ha/requests.py): a request is applied by
a whole tick and answered with what the kernel holds after it; stop() ends a running loop."""

from __future__ import annotations

import threading
import time

from hacluster.agent import Agent
from hacluster.ha.requests import Channel, HoldNothing
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import Vip
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view

VIP = Vip("10.0.0.100", 24, "eth0")


def test_hold_nothing_is_answered_after_the_tick_that_released():
    host = FakeHostOps()
    agent = Agent(config(), host, FakeRaft(current=leader_view()), clock=FakeClock())
    agent.loop.tick()
    assert host.vip_present(VIP)
    reply = agent.channel.send(HoldNothing(True))
    assert reply.wait(0) is None  # no tick has taken it yet
    agent.loop.tick()
    report = reply.wait(0)
    assert report is not None and report.vips_present == () and "handing off" in report.sentence
    assert agent.loop.releasing and not host.vip_present(VIP)
    agent.channel.send(HoldNothing(False))
    agent.loop.tick()
    assert not agent.loop.releasing and host.vip_present(VIP)


def test_a_running_loop_answers_requests_and_stop_ends_it():
    cfg = config(timing={"tick_ms": 50, "lease_ms": 200})
    host = FakeHostOps()
    agent = Agent(cfg, host, FakeRaft(current=leader_view()), clock=time.monotonic)
    runner = threading.Thread(target=agent.loop.run, daemon=True)
    runner.start()
    try:
        assert agent.channel.send(HoldNothing(True)).wait(5.0) is not None
        assert not host.vip_present(VIP)
    finally:
        agent.loop.stop()
        runner.join(5.0)
    assert not runner.is_alive()


def test_requests_sent_at_once_are_taken_in_order():
    ch = Channel()
    first, second = ch.send(HoldNothing(True)), ch.send(HoldNothing(False))
    taken = ch.take()
    assert [r for r, _ in taken] == [HoldNothing(True), HoldNothing(False)]
    assert [reply for _, reply in taken] == [first, second] and ch.take() == []
