"""HealthRunner: rise/fall hysteresis, on_change, isolation of a hung check, stop cancels."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hacluster.health.runner import HealthRunner
from hacluster.health.spec import DicomCheck, ExecCheck, HttpCheck, TcpCheck
from hacluster.model import CheckState
from tests.support.clock import FakeClock
from tests.support.wait import wait_until

from .conftest import HOST, PATIENT_MS

FAIL = "exit status 1, expected 0"


def flag_check(flag: Path, **kw) -> ExecCheck:
    """Passes while `flag` exists: the test flips health by creating/removing a file."""
    kw.setdefault("timeout_ms", PATIENT_MS)  # a slow fork on a busy machine is no failure here
    kw.setdefault("interval_ms", 2 * PATIENT_MS)
    return ExecCheck(name=kw.pop("name", "flag"), kind="exec", command=["test", "-e", str(flag)], **kw)


def test_rise_and_fall(tmp_path):
    flag = tmp_path / "up"
    wall = FakeClock(1000.0)  # a settable wall clock, so changed_at is checkable
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


# The hung checks' timeout: far longer than any wait below, so none of them can finish an
# attempt before the test is over, however slow the machine. That is what makes "the quick
# check passed while they hung" and "stop() cancelled them" facts rather than races.
HUNG_MS = 120_000
DEADLINE_S = 30  # for waits that only guard against a hang; well below HUNG_MS


def test_hung_checks_do_not_delay_others_and_stop_cancels_them(tmp_path, listening_port, silent_tcp,
                                                               http_server):
    pids = tmp_path / "pids"
    hung = [
        # A subprocess, a blocking library in a thread, and an asyncio stream: each hangs
        # for longer than the test runs, while the quick check rises.
        ExecCheck(name="hung-exec", kind="exec", command=["sh", "-c", f"echo $$ > {pids}; exec sleep 300"],
                  interval_ms=2 * HUNG_MS, timeout_ms=HUNG_MS),
        DicomCheck(name="hung-dicom", kind="dicom", port=silent_tcp.port, interval_ms=2 * HUNG_MS,
                   timeout_ms=HUNG_MS),
        HttpCheck(name="hung-http", kind="http", port=http_server.port, path="/hang",
                  interval_ms=2 * HUNG_MS, timeout_ms=HUNG_MS),
    ]
    quick = TcpCheck(name="quick", kind="tcp", port=listening_port, interval_ms=50, rise=3)
    seen_threads: set[str] = set()

    def on_change(reports):
        seen_threads.add(threading.current_thread().name)

    def never_attempted(reports) -> bool:
        """No attempt of the hung checks has ended: no outcome, so no error and no latency."""
        return all((x.state, x.error, x.latency_ms) == (CheckState.UNKNOWN, "", None) for x in reports[:3])

    r = HealthRunner([*hung, quick], HOST, on_change=on_change)
    r.start()
    try:
        wait_until(lambda: pids.exists() and pids.read_text().endswith("\n"), DEADLINE_S,
                   "the hung exec check to start", interval=0.01)
        wait_until(lambda: http_server.hanging.is_set() and silent_tcp.seen, DEADLINE_S,
                   "the hung http and dicom checks to reach their targets", interval=0.01)
        wait_until(lambda: r.reports()[3].state == CheckState.PASSING, DEADLINE_S, "the quick check to pass",
                   interval=0.01)
        last = r.reports()[3]
        wait_until(lambda: r.reports()[3] is not last, DEADLINE_S, "one more attempt of the quick check",
                   interval=0.01)
        # All three hang (no attempt ended), and the quick check went on regardless.
        assert never_attempted(r.reports())
        assert seen_threads == {"hacluster-health"}
    finally:
        # Generous: only a stop() that waits for a hung target (HUNG_MS) takes this long.
        r.stop(timeout=DEADLINE_S)
    assert r._thread is not None and not r._thread.is_alive(), "stop() returned with the thread running"
    # Cancelled, not waited out: a hung attempt that had been allowed to end would show its
    # timeout (or the hung server's answer) as an error.
    assert never_attempted(r.reports())
    pid = int(pids.read_text())
    wait_until(lambda: not Path(f"/proc/{pid}").exists()
               or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
               DEADLINE_S, "the hung exec check's process to be killed on stop", interval=0.01)


def test_runner_records_timeouts(unanswered_syn_port):
    # A dropped SYN, not a silent listener: connect() hangs for sure, so the step the timeout
    # names does not depend on how fast a loaded machine gets through the handshake.
    spec = TcpCheck(name="slow", kind="tcp", port=unanswered_syn_port, interval_ms=100, timeout_ms=50, fall=1)
    r = HealthRunner([spec], HOST)
    r.start()
    try:
        rep = wait_until(lambda: (x := r.reports()[0]).state == CheckState.FAILING and x, DEADLINE_S,
                         "a failure", interval=0.01)
        assert rep.error == "timed out after 50 ms connecting"  # the probe's words, not the backstop's
        assert rep.latency_ms is None
        assert r.run_once("slow").error == rep.error  # run_once while running: via the runner loop
    finally:
        r.stop()


def test_run_once_racing_stop_gives_up_instead_of_hanging(tmp_path, monkeypatch):
    from hacluster.health import runner as runner_mod
    monkeypatch.setattr(runner_mod, "RUN_ONCE_SLACK_S", 0.5)
    started = tmp_path / "started"
    hang = ExecCheck(name="hang", kind="exec", interval_ms=3_600_000, timeout_ms=2_000,
                     command=["sh", "-c", f"touch {started}; exec sleep 120"])
    runner = HealthRunner([hang], default_host=HOST)
    runner.start()
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(runner.run_once("hang"))
        except RuntimeError as e:
            outcome.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    wait_until(started.exists, 30, "the attempt to start", interval=0.01)
    runner.stop(timeout=30)
    t.join(timeout=120)  # bounded by the check's timeout + slack, not forever
    assert not t.is_alive()
    assert len(outcome) == 1
