"""hostops/conntrackd.py: the config it writes, and the supervision of a stand-in binary
(tests/support/stub_conntrackd.py). The real conntrackd: tests/lab/test_connsync_agent.py."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hacluster.hostops.conntrackd import Conntrackd, ConntrackdPairs, make_sync, pair_port, render_conf
from hacluster.model import SyncSettings, SyncState
from tests.support.wait import wait_until

STUB = str(Path(__file__).parents[1] / "support" / "stub_conntrackd.py")
TWO = SyncSettings(mode="on", interface="eth0", address="10.0.0.11", peers=("10.0.0.12",))
THREE = SyncSettings(mode="on", interface="eth1", address="10.0.0.11", peers=("10.0.0.12", "10.0.0.13"))


def test_two_members_sync_over_unicast_to_the_peer(tmp_path):
    conf = render_conf(TWO, tmp_path)
    assert "Mode FTFW" in conf
    assert "IPv4_address 10.0.0.11" in conf and "IPv4_Destination_Address 10.0.0.12" in conf
    assert "Multicast" not in conf and "Interface eth0" in conf and "Port 3780" in conf
    assert f"Path {tmp_path}/conntrackd.ctl" in conf and f"LockFile {tmp_path}/conntrackd.lock" in conf


def test_more_members_sync_over_multicast_when_asked_and_nothing_filters_member_addresses(tmp_path):
    conf = render_conf(replace(THREE, transport="multicast"), tmp_path)
    assert "Multicast" in conf and "IPv4_address 225.0.0.50" in conf and "IPv4_interface 10.0.0.11" in conf
    assert "Interface eth1" in conf and "UDP {" not in conf
    assert "Address Ignore" not in conf and "10.0.0.12" not in conf  # a backend may be a member
    assert "Protocol Accept" in conf and "TCP" in conf  # not the sync's own UDP


def test_what_conntrackd_cannot_do_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one other member"):
        render_conf(SyncSettings(mode="on", interface="eth0", address="10.0.0.11"), tmp_path)
    with pytest.raises(ValueError, match="use one per peer"):
        render_conf(SyncSettings(mode="on", interface="eth0", address="10.0.0.11",
                                 peers=("10.0.0.12", "10.0.0.13"), transport="unicast"), tmp_path)


@pytest.fixture
def sync(tmp_path):
    errors: list[str] = []
    # a stand-in in Python starts slower than conntrackd's client (and CI machines are busy):
    # 3 s, not 100 ms
    s = Conntrackd(replace(TWO, commit_timeout=3.0), tmp_path / "ct", binary=STUB, on_error=errors.append,
                   backoff=(0.05, 0.2))
    s.errors = errors
    yield s
    s.stop()


def _up(s):
    return wait_until(lambda: s.status().state is SyncState.OK, 10, "the stub to be up")


def test_status_is_ok_once_the_control_socket_answers(sync):
    assert sync.status().state is SyncState.DOWN  # not started
    sync.start()
    _up(sync)
    assert "FTFW over unicast on eth0 (10.0.0.12)" in sync.status().detail


def test_a_crash_is_an_error_with_its_last_words_and_it_is_restarted(sync):
    sync.start()
    _up(sync)
    (sync.dir / "CRASH").write_text("")
    wait_until(lambda: sync.errors, 10, "the crash to be reported")
    assert "connection sync: down (conntrackd exited with status 3" in sync.errors[0]
    assert "asked to crash" in sync.errors[0] and "flows through the VIPs break" in sync.errors[0]
    wait_until(lambda: sync.status().state is SyncState.OK and sync.status().restarts == 1, 10,
               "the restart")


def test_a_leftover_instance_with_our_config_is_ended_first(sync):
    sync.dir.mkdir(parents=True)
    sync.conf.write_text(render_conf(TWO, sync.dir))
    old = subprocess.Popen([STUB, "-C", str(sync.conf)])
    try:
        wait_until(lambda: (sync.dir / "conntrackd.ctl").exists(), 10, "the leftover to listen")
        sync.start()
        _up(sync)
        assert old.wait(5) is not None  # ended, and its lock did not stop the new one
    finally:
        old.kill()
        old.wait()


def test_the_commit_is_timed_and_the_steps_after_a_claim_and_a_release_run_in_order(sync):
    sync.start()
    _up(sync)
    assert sync.begin_commit().wait()
    assert sync.status().last_commit_ms is not None and sync.status().last_commit_ms < 5000
    sync.claimed()
    sync.released()
    calls = sync.dir / "CALLS"
    wait_until(lambda: calls.exists() and len(calls.read_text().split()) == 6, 10, "the steps")
    assert calls.read_text().split() == ["-c", "-f", "-R", "-B", "-t", "-n"]


def test_a_commit_that_hangs_is_abandoned_at_the_timeout_with_an_error(sync):
    sync.start()
    _up(sync)
    (sync.dir / "SLOW").write_text("10")
    started = time.monotonic()
    assert not sync.begin_commit().wait()
    assert time.monotonic() - started < 8  # 3 s timeout; the stub sleeps 10 s
    assert any("did not finish within 3000 ms" in e for e in sync.errors)


def test_no_commit_while_conntrackd_is_down(sync):
    assert not sync.begin_commit().wait()  # never started
    assert not (sync.dir / "CALLS").exists()


def test_conntrackd_dies_with_the_agent(tmp_path):
    """PR_SET_PDEATHSIG: an agent killed with SIGKILL leaves no conntrackd behind (the next
    start would otherwise find its lock)."""
    ct = tmp_path / "ct"
    agent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from hacluster.hostops.conntrackd import Conntrackd
        from hacluster.model import SyncSettings
        s = Conntrackd(SyncSettings(mode="on", interface="eth0", address="10.0.0.11",
                                    peers=("10.0.0.12",)), Path({str(ct)!r}), binary={STUB!r})
        s.start()
        time.sleep(60)
    """)], cwd=Path(__file__).parents[2])
    try:
        pids = ct / "PIDS"
        wait_until(lambda: pids.exists() and pids.read_text().strip(), 10, "the stub to start")
        child = int(pids.read_text().split()[0])
        agent.send_signal(signal.SIGKILL)
        agent.wait()

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            return Path(f"/proc/{child}/stat").read_text().split(") ", 1)[1][0] == "Z"

        wait_until(gone, 10, "conntrackd to die with the agent")
    finally:
        agent.kill()
        agent.wait()


def test_every_pair_has_one_port_both_ends_agree_on():
    everyone = ("10.0.0.13", "10.0.0.11", "10.0.0.12", "10.0.0.9")
    ports = {}
    for a in everyone:
        for b in everyone:
            if a != b:
                ports[a, b] = pair_port(3780, a, b, everyone)
                assert ports[a, b] == pair_port(3780, b, a, tuple(reversed(everyone)))
    assert sorted(set(ports.values())) == list(range(3780, 3786))  # 4 members: 6 pairs
    for a in everyone:  # on one server, one port per peer
        mine = [p for (x, _), p in ports.items() if x == a]
        assert len(set(mine)) == 3


def test_by_default_one_conntrackd_per_peer_each_on_its_pair_port(tmp_path):
    s = make_sync(THREE, tmp_path)
    assert isinstance(s, ConntrackdPairs)
    confs = [render_conf(m.settings, m.dir) for m in s.members]
    assert "IPv4_Destination_Address 10.0.0.12" in confs[0] and "Port 3780" in confs[0]
    assert "IPv4_Destination_Address 10.0.0.13" in confs[1] and "Port 3781" in confs[1]
    assert all("Mode FTFW" in c and "Multicast" not in c for c in confs)
    assert isinstance(make_sync(replace(THREE, transport="multicast"), tmp_path), Conntrackd)


def test_the_pairs_are_ok_together_down_if_one_is_and_commit_together(tmp_path):
    errors: list[str] = []
    s = ConntrackdPairs(replace(THREE, commit_timeout=3.0), tmp_path / "ct", binary=STUB,
                        on_error=errors.append, backoff=(0.05, 0.2))
    try:
        s.start()
        wait_until(lambda: s.status().state is SyncState.OK, 10, "both pairs up")
        assert "10.0.0.12:3780" in s.status().detail and "10.0.0.13:3781" in s.status().detail
        assert s.begin_commit().wait()
        for m in s.members:
            assert (m.dir / "CALLS").read_text().split() == ["-c"]
        (s.members[1].dir / "SLOW").write_text("10")
        assert not s.begin_commit().wait()  # one pair late: the claim is told, not held
        errors.clear()
        s.members[1].stop()  # one pair's conntrackd gone: the whole sync is down, and says which
        assert s.status().state is SyncState.DOWN and s.status().detail == "10.0.0.13: stopped"
    finally:
        s.stop()
