"""Exec check: exit codes, captured output, and the process group killed on timeout."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hacluster.health import exec_check
from hacluster.health.spec import ExecCheck
from tests.support.wait import wait_until

from .conftest import PATIENT_MS, probe_until_stuck


def spec(*command: str, **kw) -> ExecCheck:
    return ExecCheck(name="script", kind="exec", command=list(command), **{"timeout_ms": PATIENT_MS, **kw})


def probe(s: ExecCheck):
    return asyncio.run(exec_check.probe(s, "10.1.2.3"))


def _gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it runs nothing any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_true_passes():
    out = probe(spec("true"))
    assert out.ok and out.error == "" and out.latency_ms is not None


def test_false_fails_with_output():
    out = probe(spec("sh", "-c", "echo disk full; echo on stderr >&2; exit 1"))
    assert not out.ok
    assert out.error == "exit status 1, expected 0"
    assert out.output == "disk full\non stderr"


def test_expect_exit_and_environment():
    out = probe(spec("sh", "-c", 'echo "$HACLUSTER_CHECK_NAME@$HACLUSTER_CHECK_HOST"; exit 3',
                     expect_exit=3))
    assert out.ok and out.output == "script@10.1.2.3"


def test_output_truncated():
    out = probe(spec("sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"))
    assert out.ok and out.output == "x" * exec_check.OUTPUT_LIMIT


def test_command_not_found():
    out = probe(spec("/nonexistent/check-thing"))
    assert out.error == "command not found: /nonexistent/check-thing"


def test_killed_by_signal():
    assert probe(spec("sh", "-c", "kill -TERM $$")).error == "killed by signal SIGTERM"


def test_timeout_kills_the_whole_group(tmp_path):
    pids, ready = tmp_path / "pids", tmp_path / "ready"
    # The shell forks sleep and waits: both must die, not only the direct child. After
    # "started" come 200 kB of newlines, more than a pipe holds, so `ready` appears only once
    # the probe has been reading the output (the command may well get that far before the
    # probe starts reading); the trailing newlines are stripped from the output.
    script = (f"echo $$ > {pids}; sleep 300 & echo $! >> {pids}; echo started; "
              f"head -c 200000 /dev/zero | tr '\\0' '\\n'; touch {ready}; wait")
    out = probe_until_stuck(exec_check.probe, spec("sh", "-c", script), ready.exists, host="10.1.2.3")
    assert not out.ok
    assert out.error == "timed out after 10000 ms"
    assert out.output == "started"
    shell, sleeper = (int(p) for p in pids.read_text().split())
    wait_until(lambda: _gone(shell) and _gone(sleeper), 30, "the timed-out processes to be gone",
               interval=0.01)
    assert not os.path.exists(f"/proc/{shell}") or _gone(shell)


def test_plain_sleep_times_out_and_is_reaped():
    out = probe(spec("sleep", "5", timeout_ms=200))
    assert out.error == "timed out after 200 ms"
