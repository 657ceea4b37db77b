"""The leader's record of late heartbeat acks: silent when acks are prompt, one line per
window naming the longest silence otherwise (bench/starvation.py reads these lines)."""

from __future__ import annotations

import logging

from hacluster.consensus.acklag import REPORT_S, AckLag


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hacluster.raft"]


def test_prompt_acks_log_nothing(caplog):
    caplog.set_level(logging.INFO)
    lag = AckLag(floor=0.15, corroborate=1.0)
    t = 0.0
    while t < 3 * REPORT_S:
        lag.ack("n2", 0.06, t)
        t += 0.05
    assert lines(caplog) == []


def test_the_longest_silence_of_a_window_is_reported_once(caplog):
    caplog.set_level(logging.INFO)
    lag = AckLag(floor=0.15, corroborate=0.5)
    lag.ack("n2", 0.05, 0.0)
    lag.ack("n2", 0.40, 1.0)
    lag.ack("n2", 0.25, 2.0)
    lag.ack("n3", 0.05, 3.0)
    assert lines(caplog) == []
    lag.ack("n3", 0.05, REPORT_S)  # the window ends: one line, for n2 only
    assert lines(caplog) == ["n2's heartbeat acks lagged: longest silence 400 ms, 2 ack(s) after "
                             "more than 150 ms in the last 5.0 s (health.corroborate_ms 500); "
                             "its kernel's TCP acks: not read"]
    lag.ack("n2", 0.05, REPORT_S + 1)
    lag.ack("n2", 0.05, 2 * REPORT_S + 1)
    assert len(lines(caplog)) == 1  # a quiet window says nothing


def test_a_leadership_change_reports_what_it_saw(caplog):
    caplog.set_level(logging.INFO)
    lag = AckLag(floor=0.15, corroborate=1.0)
    lag.ack("n2", 0.9, 1.0)
    lag.reset(2.0)
    assert len(lines(caplog)) == 1 and "longest silence 900 ms" in lines(caplog)[0]
    lag.reset(3.0)
    assert len(lines(caplog)) == 1


def test_the_line_says_how_long_the_kernel_left_our_traffic_unacked(caplog):
    caplog.set_level(logging.INFO)
    lag = AckLag(floor=0.15, corroborate=0.5)
    lag.ack("n2", 0.05, 0.0)
    for t in (0.012, 0.003, 0.041):
        lag.tcp("n2", t)
    lag.ack("n2", 0.45, 1.0)
    lag.ack("n2", 0.05, REPORT_S)
    assert lines(caplog)[0].endswith("its kernel's TCP acks: longest wait 41 ms")
