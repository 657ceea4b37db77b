"""Exec check: exit codes, captured output, the process group killed on timeout, and the
command run without the agent's capabilities, environment or (with `user`) identity."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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


# ------------------------------------------------- without the agent's powers (issue 15, finding 6)

CAPS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
ROOT = Path(__file__).resolve().parents[2]
AGENT_UID = 1  # `daemon`: stands for the role's `hacluster` user in the tests below


def _caps(output: str) -> dict[str, int]:
    return {k: int(v, 16) for k, _, v in (ln.partition(":\t") for ln in output.splitlines()) if k in CAPS}


@contextlib.contextmanager
def traversable_by_others(*paths: Path) -> Iterator[None]:
    """Let another user reach the code and the venv: a clean clone may sit in a directory
    only root can enter (mktemp -d makes 0700). Adds the search bit (not read) to each
    ancestor that lacks it, for the duration; puts the modes back after."""
    changed: list[tuple[Path, int]] = []
    try:
        for path in paths:
            for d in [path, *path.parents]:
                mode = d.stat().st_mode
                if d.is_dir() and not mode & stat.S_IXOTH:
                    d.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
                    changed.append((d, stat.S_IMODE(mode)))
        yield
    finally:
        for d, mode in reversed(changed):
            d.chmod(mode)


def probe_as_agent(check: ExecCheck, caps: str = "+net_admin,+net_raw") -> dict[str, object]:
    """Run the probe in an agent as the role runs it: its own user (uid 1 here), with `caps`
    ambient (systemd's AmbientCapabilities), no root. Returns the Outcome as a dict."""
    code = ("import asyncio, json, sys\n"
            "from hacluster.health import exec_check\n"
            "from hacluster.health.spec import ExecCheck\n"
            "o = asyncio.run(exec_check.probe(ExecCheck.model_validate_json(sys.argv[1]), '10.1.2.3'))\n"
            "print(json.dumps({'ok': o.ok, 'error': o.error, 'output': o.output}))\n")
    with traversable_by_others(ROOT, Path(sys.executable).parent, Path(sys.executable).resolve().parent):
        proc = subprocess.run(["setpriv", f"--reuid={AGENT_UID}", f"--regid={AGENT_UID}", "--clear-groups",
                               f"--inh-caps={caps}", f"--ambient-caps={caps}", "--",
                               sys.executable, "-c", code, check.model_dump_json()],
                              capture_output=True, text=True, timeout=60, cwd="/",
                              env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def secret_dir() -> Iterator[Path]:
    """A secret file as the role installs it: owned by the agent's user, mode 0600, in a
    directory others may traverse (so only the file's mode protects it)."""
    d = Path(tempfile.mkdtemp(prefix="hacluster-secret-"))
    d.chmod(0o755)
    secret = d / "secret"
    secret.write_text("s3cret-of-the-cluster-0123456789\n")
    secret.chmod(0o600)
    os.chown(secret, AGENT_UID, AGENT_UID)
    yield d
    shutil.rmtree(d)


def test_a_check_of_a_root_agent_gets_no_capability_and_cannot_use_nft():
    caps = _caps(probe(spec("grep", "^Cap", "/proc/self/status")).output)
    assert caps == dict.fromkeys(CAPS, 0), caps
    out = probe(spec("nft", "list", "ruleset"))
    assert not out.ok and "Operation not permitted" in out.output


def test_a_check_does_not_inherit_the_agents_ambient_network_capabilities():
    got = probe_as_agent(spec("grep", "^Cap", "/proc/self/status"))
    caps = _caps(str(got["output"]))
    assert got["ok"] and set(caps) == set(CAPS), got
    # the agent's user may not drop its bounding set (no CAP_SETPCAP): it gains nothing from it
    assert {k: v for k, v in caps.items() if k != "CapBnd"} == dict.fromkeys(set(CAPS) - {"CapBnd"}, 0)
    got = probe_as_agent(spec("nft", "list", "ruleset"))
    assert not got["ok"] and "Operation not permitted" in str(got["output"]), got
    # nor read the agent's environment or memory (it has capabilities the check has not)
    got = probe_as_agent(spec("sh", "-c", "cat /proc/$PPID/environ /proc/$PPID/maps"))
    assert str(got["output"]).count("Permission denied") == 2, got


def test_the_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch):
    for k, v in {"HACLUSTER_LOG_FORMAT": "json", "HACLUSTER_SECRET_FILE": "/etc/hacluster/secret",
                 "AWS_SECRET_ACCESS_KEY": "leak", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                 "LD_PRELOAD": "/tmp/evil.so", "PYTHONPATH": "/tmp"}.items():
        monkeypatch.setenv(k, v)
    out = probe(spec("env", env={"WARD": "a"}))
    got = dict(line.split("=", 1) for line in out.output.splitlines())
    assert out.ok and got["WARD"] == "a" and got["LANG"] == got["LC_ALL"] == "C.UTF-8"
    assert got["HACLUSTER_CHECK_NAME"] == "script" and got["HACLUSTER_CHECK_HOST"] == "10.1.2.3"
    assert set(got) <= {"PATH", "LANG", "LC_ALL", "HOME", "WARD", "HACLUSTER_CHECK_NAME",
                        "HACLUSTER_CHECK_HOST"}, got


def test_as_its_own_user_a_check_cannot_read_the_secret(secret_dir: Path):
    read = spec("cat", str(secret_dir / "secret"), user="nobody")
    # a root agent
    out = probe(read)
    assert not out.ok and "Permission denied" in out.output and "s3cret" not in out.output
    # the role's agent: its own user, the network capabilities and the two to switch users
    got = probe_as_agent(read, "+net_admin,+net_raw,+setuid,+setgid")
    assert not got["ok"] and "Permission denied" in str(got["output"]), got
    who = probe_as_agent(spec("sh", "-c", 'id -u; echo "$HOME $USER"; grep ^Cap /proc/self/status',
                              user="nobody"), "+net_admin,+net_raw,+setuid,+setgid")
    lines = str(who["output"]).splitlines()
    assert lines[:2] == ["65534", "/nonexistent nobody"], who
    assert {k: v for k, v in _caps("\n".join(lines[2:])).items() if k != "CapBnd"} == \
        dict.fromkeys(set(CAPS) - {"CapBnd"}, 0)


def test_a_user_the_agent_cannot_switch_to_is_a_clear_error():
    got = probe_as_agent(spec("true", user="nobody"))
    assert got["error"] == ("cannot run as nobody: the agent lacks CAP_SETUID and CAP_SETGID "
                            "(docs/health.md, exec checks)"), got
    assert probe(spec("true", user="no-such-user-here")).error == "no such user: no-such-user-here"
