"""HealthRunner: rise/fall hysteresis, on_change, isolation of a hung check, prompt stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hacluster.health.runner import HealthRunner
from hacluster.health.spec import DicomCheck, ExecCheck, HttpCheck, TcpCheck
from hacluster.model import CheckState

from .conftest import HOST, wait_until

FAIL = "exit status 1, expected 0"


class Wall:
    """A settable wall clock, so changed_at is checkable."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flag_check(flag: Path, **kw) -> ExecCheck:
    """Passes while `flag` exists: the test flips health by creating/removing a file."""
    return ExecCheck(name=kw.pop("name", "flag"), kind="exec", command=["test", "-e", str(flag)], **kw)


def test_rise_and_fall(tmp_path):
    flag = tmp_path / "up"
    wall = Wall()
    r = HealthRunner([flag_check(flag, rise=2, fall=3)], HOST, wall=wall)
    [first] = r.reports()
    assert (first.state, first.changed_at, first.target) == (CheckState.UNKNOWN, 0.0, f"test -e {flag}")

    flag.touch()
    assert r.run_once("flag").state == CheckState.UNKNOWN  # one success is not enough
    wall.now = 1001.0
    rep = r.run_once("flag")
    assert (rep.state, rep.changed_at, rep.error) == (CheckState.PASSING, 1001.0, "")
    assert rep.latency_ms is not None

    flag.unlink()
    wall.now = 1002.0
    for _ in range(2):
        rep = r.run_once("flag")
        assert (rep.state, rep.error, rep.changed_at) == (CheckState.PASSING, FAIL, 1001.0)
    rep = r.run_once("flag")
    assert (rep.state, rep.changed_at) == (CheckState.FAILING, 1002.0)

    flag.touch()  # a success in between resets the failure count, and vice versa
    assert r.run_once("flag").state == CheckState.FAILING
    flag.unlink()
    assert r.run_once("flag").state == CheckState.FAILING
    flag.touch()
    r.run_once("flag")
    assert r.run_once("flag").state == CheckState.PASSING
    assert r.reports()[0].state == CheckState.PASSING


def test_from_unknown_straight_to_failing(tmp_path):
    r = HealthRunner([flag_check(tmp_path / "never", fall=2)], HOST)
    assert r.run_once("flag").state == CheckState.UNKNOWN
    assert r.run_once("flag").state == CheckState.FAILING


def test_on_change_fires_on_state_or_error_changes_only(tmp_path):
    flag = tmp_path / "up"
    calls: list[tuple] = []
    r = HealthRunner([flag_check(flag, rise=2, fall=2)], HOST, on_change=calls.append)
    flag.touch()
    r.run_once("flag")  # UNKNOWN, no error: nothing new (only the latency moved)
    assert calls == []
    r.run_once("flag")  # -> PASSING
    assert [c[0].state for c in calls] == [CheckState.PASSING]
    for _ in range(3):
        r.run_once("flag")  # still PASSING: latency wiggles are not news
    assert len(calls) == 1
    flag.unlink()
    r.run_once("flag")  # still PASSING, but a new error text: news
    assert [(c[0].state, c[0].error) for c in calls[1:]] == [(CheckState.PASSING, FAIL)]
    r.run_once("flag")  # -> FAILING
    r.run_once("flag")  # same state, same error: no call
    assert [(c[0].state, c[0].error) for c in calls] == [
        (CheckState.PASSING, ""), (CheckState.PASSING, FAIL), (CheckState.FAILING, FAIL)]
    assert all(len(c) == 1 for c in calls)  # the whole tuple, every time


def test_reports_keep_spec_order_and_default_host(listening_port):
    specs = [TcpCheck(name="b", kind="tcp", port=listening_port),
             TcpCheck(name="a", kind="tcp", port=listening_port, host="127.0.0.2")]
    r = HealthRunner(specs, HOST)
    assert [(x.name, x.kind, x.target) for x in r.reports()] == [
        ("b", "tcp", f"127.0.0.1:{listening_port}"), ("a", "tcp", f"127.0.0.2:{listening_port}")]


def test_duplicate_names_refused():
    with pytest.raises(ValueError, match="duplicate check names: x"):
        HealthRunner([TcpCheck(name="x", kind="tcp", port=1)] * 2, HOST)


def test_hung_checks_do_not_delay_others_and_stop_is_prompt(tmp_path, listening_port, silent_tcp,
                                                            http_server):
    pids = tmp_path / "pids"
    hung = [
        # A subprocess, a blocking library in a thread, and an asyncio stream: each hangs
        # for seconds, far longer than the quick check needs to rise.
        ExecCheck(name="hung-exec", kind="exec", command=["sh", "-c", f"echo $$ > {pids}; exec sleep 30"],
                  interval_ms=20_000, timeout_ms=10_000),
        DicomCheck(name="hung-dicom", kind="dicom", port=silent_tcp.port, interval_ms=20_000,
                   timeout_ms=10_000),
        HttpCheck(name="hung-http", kind="http", port=http_server.port, path="/hang",
                  interval_ms=20_000, timeout_ms=10_000),
    ]
    quick = TcpCheck(name="quick", kind="tcp", port=listening_port, interval_ms=50, rise=3)
    seen_threads: set[str] = set()

    def on_change(reports):
        seen_threads.add(threading.current_thread().name)

    r = HealthRunner([*hung, quick], HOST, on_change=on_change)
    r.start()
    try:
        wait_until(lambda: r.reports()[3].state == CheckState.PASSING, 3, "the quick check to pass")
        wait_until(pids.exists, 3, "the hung exec check to start")
        assert [x.state for x in r.reports()[:3]] == [CheckState.UNKNOWN] * 3
        assert seen_threads == {"hacluster-health"}
    finally:
        t0 = time.monotonic()
        r.stop()
        stopped_in = time.monotonic() - t0
    assert stopped_in < 2.0, f"stop() took {stopped_in:.2f} s"
    assert not r._thread.is_alive()
    pid = int(pids.read_text())
    wait_until(lambda: not Path(f"/proc/{pid}").exists()
               or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
               2, "the hung exec check's process to be killed on stop")


def test_runner_records_timeouts(silent_tcp):
    spec = HttpCheck(name="slow", kind="http", port=silent_tcp.port, interval_ms=100, timeout_ms=50, fall=1)
    r = HealthRunner([spec], HOST)
    r.start()
    try:
        rep = wait_until(lambda: (x := r.reports()[0]).state == CheckState.FAILING and x, 3, "a failure")
        assert rep.error == "timed out after 50 ms waiting for the response"
        assert rep.latency_ms is None
        assert r.run_once("slow").error == rep.error  # run_once while running: via the runner loop
    finally:
        r.stop()
