"""The guard loop's check that Raft listens (daemon.ListenerWatch; issue 15 finding 2)."""

from __future__ import annotations

import logging

from hacluster.daemon import LISTENER_REPEAT_S, ListenerWatch
from hacluster.events import EventLog
from tests.support.clock import FakeClock


def _watch(states: list[bool | None]) -> tuple[ListenerWatch, EventLog, FakeClock]:
    events = EventLog("n1")
    clock = FakeClock()
    return ListenerWatch(lambda: states[0], 7100, events, now=clock), events, clock


def test_nothing_is_said_before_raft_started_nor_while_it_listens(caplog):
    states: list[bool | None] = [None]
    watch, events, _ = _watch(states)
    with caplog.at_level(logging.INFO, logger="hacluster.daemon"):
        assert watch.check() is None
        states[0] = True
        assert watch.check() is True
    assert events.after(0) == [] and caplog.records == []


def test_a_port_that_stops_listening_is_an_error_and_an_event_until_it_listens_again(caplog):
    states: list[bool | None] = [True]
    watch, events, clock = _watch(states)
    watch.check()
    states[0] = False
    with caplog.at_level(logging.WARNING, logger="hacluster.daemon"):
        assert watch.check() is False
        clock.advance(2)
        watch.check()  # still down: no new event, no new line yet
        clock.advance(LISTENER_REPEAT_S)
        watch.check()  # the ERROR again
        states[0] = True
        assert watch.check() is True
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("RAFT PORT 7100 NOT LISTENING" in r.getMessage() for r in errors)
    assert [e.text for e in events.after(0)] == [
        "raft port 7100 not listening: peers cannot connect to this member",
        "raft port 7100 listening again"]
    assert all(e.kind == "agent" and e.fields == {"port": "7100"} for e in events.after(0))
