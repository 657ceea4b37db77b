"""sd_notify without libsystemd: real unix datagram sockets play systemd's part."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from hacluster.sdnotify import Notifier, WatchdogPinger
from tests.support.clock import FakeClock

MAX_SUN_PATH = 100  # sockaddr_un holds 108 bytes; pytest's tmp_path can be longer


class Listener:
    """What systemd does with NOTIFY_SOCKET: a bound datagram socket we read from."""

    def __init__(self, sock: socket.socket, env_value: str):
        self.sock = sock
        self.env_value = env_value

    def recv(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536).decode()

    def drain(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def listener(tmp_path: Path):
    short = None
    if len(str(tmp_path / "notify")) > MAX_SUN_PATH:
        short = tempfile.mkdtemp(prefix="sdn")
        path = os.path.join(short, "notify")
    else:
        path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield Listener(sock, path)
    finally:
        sock.close()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def abstract_listener():
    name = f"hacluster-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        yield Listener(sock, "@" + name)
    finally:
        sock.close()


def test_messages_reach_the_socket(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.env_value})
    assert n.enabled
    assert n.ready()
    assert listener.recv() == "READY=1"
    assert n.ready("leader, lease ok")
    assert listener.recv() == "READY=1\nSTATUS=leader, lease ok"
    assert n.status("follower of n1")
    assert listener.recv() == "STATUS=follower of n1"
    assert n.watchdog()
    assert listener.recv() == "WATCHDOG=1"
    assert n.stopping()
    assert listener.recv() == "STOPPING=1"


def test_abstract_namespace_socket(abstract_listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": abstract_listener.env_value})
    assert n.enabled
    assert n.ready("up")
    assert abstract_listener.recv() == "READY=1\nSTATUS=up"
    assert n.watchdog()
    assert abstract_listener.recv() == "WATCHDOG=1"


def test_a_newline_in_the_status_cannot_start_a_new_field(listener):
    n = Notifier(listener.env_value)
    n.status("error: boom\nREADY=1")
    assert listener.recv() == "STATUS=error: boom READY=1"


def test_unicode_status(listener):
    n = Notifier(listener.env_value)
    n.status("Hôpital Saint-Éloi: leader ✓")
    assert listener.recv() == "STATUS=Hôpital Saint-Éloi: leader ✓"


def test_watchdog_interval_from_env():
    sock = "/run/systemd/notify"
    assert Notifier.from_env({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "5000000"}
                             ).watchdog_interval() == 2.5
    assert Notifier.from_env({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "5000000",
                              "WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 2.5


@pytest.mark.parametrize("env", [
    {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"},  # meant for another process
    {"WATCHDOG_PID": "1"},  # no watchdog asked for
    {},
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "five seconds"},
])
def test_no_watchdog_interval(env):
    assert Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **env}
                             ).watchdog_interval() is None


def test_no_interval_without_a_socket_to_ping():
    assert Notifier.from_env({"WATCHDOG_USEC": "5000000"}).watchdog_interval() is None


def test_unset_environment_hides_the_socket_from_children():
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "7", "PATH": "/bin"}
    n = Notifier.from_env(env, unset_environment=True)
    assert env == {"PATH": "/bin"}
    assert n.enabled and n.watchdog_usec == 1000 and n.watchdog_pid == 7


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/notify"])
def test_no_or_unsupported_socket_is_a_no_op(value, caplog):
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    n = Notifier.from_env(env)
    assert not n.enabled
    assert not n.ready("up") and not n.status("x") and not n.watchdog() and not n.stopping()
    assert n.watchdog_interval() is None
    WatchdogPinger(n, FakeClock(100.0)).tick("sentence")
    assert not caplog.records
    assert n.describe().startswith("systemd notify: off")


def test_pinger_pings_when_due_and_not_more_often(listener):
    clock = FakeClock(100.0)
    pinger = WatchdogPinger(Notifier(listener.env_value, watchdog_usec=5_000_000), clock)
    assert pinger.interval == 2.5
    pings = []
    for _ in range(1000):  # 10 s of 10 ms ticks
        pinger.tick()
        pings += listener.drain()
        clock.advance(0.01)
    assert pings == ["WATCHDOG=1"] * 4  # at 0, 2.5, 5, 7.5 s


def test_pinger_spaces_pings_from_a_late_tick(listener):
    clock = FakeClock(100.0)
    pinger = WatchdogPinger(Notifier(listener.env_value, watchdog_usec=2_000_000), clock)
    pinger.tick()
    clock.advance(1.7)  # a slow tick: 0.7 s late
    pinger.tick()
    clock.advance(0.5)
    pinger.tick()  # no catch-up burst
    assert listener.drain() == ["WATCHDOG=1", "WATCHDOG=1"]
    clock.advance(0.5)
    pinger.tick()
    assert listener.drain() == ["WATCHDOG=1"]


def test_a_stuck_loop_stops_the_pings(listener):
    clock = FakeClock(100.0)
    pinger = WatchdogPinger(Notifier(listener.env_value, watchdog_usec=1_000_000), clock)
    pinger.tick()
    assert listener.drain() == ["WATCHDOG=1"]
    clock.advance(60)  # the loop is stuck: nobody calls tick(), nothing is sent
    assert listener.drain() == []


def test_status_is_sent_on_change_rate_limited_and_ends_on_the_latest(listener):
    clock = FakeClock(100.0)
    pinger = WatchdogPinger(Notifier(listener.env_value), clock, status_every=1.0)
    assert pinger.interval is None  # no WATCHDOG_USEC: status only
    pinger.tick("starting")
    assert listener.drain() == ["STATUS=starting"]
    for i in range(50):  # a flapping sentence within the same second
        clock.advance(0.01)
        pinger.tick(f"candidate {i}")
    assert listener.drain() == []
    clock.advance(0.5)
    pinger.tick("leader, lease ok")
    assert listener.drain() == ["STATUS=leader, lease ok"]
    for _ in range(300):  # unchanged: never resent
        clock.advance(0.01)
        pinger.tick("leader, lease ok")
    assert listener.drain() == []


def test_ping_and_status_share_one_datagram(listener):
    clock = FakeClock(100.0)
    pinger = WatchdogPinger(Notifier(listener.env_value, watchdog_usec=5_000_000), clock)
    pinger.tick("follower of n1")
    assert listener.drain() == ["WATCHDOG=1\nSTATUS=follower of n1"]


def test_a_vanished_socket_is_logged_once_and_never_raises(listener, caplog):
    caplog.set_level(logging.INFO, logger="hacluster.sdnotify")
    n = Notifier(listener.env_value, watchdog_usec=1_000_000)
    assert n.watchdog()
    listener.sock.close()
    os.unlink(listener.env_value)
    clock = FakeClock(100.0)
    pinger = WatchdogPinger(n, clock)
    for _ in range(20):
        pinger.tick("leader")
        clock.advance(1.0)
    assert not n.ready() and not n.stopping()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "cannot send" in caplog.records[0].getMessage()

    again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd came back
    again.bind(listener.env_value)
    try:
        assert n.watchdog()
        assert again.recv(100) == b"WATCHDOG=1"
        assert "works again" in caplog.records[-1].getMessage()
    finally:
        again.close()


def test_a_full_queue_does_not_block_the_loop(listener, caplog):
    """Nobody reads (PID 1 busy): sends fail fast with EAGAIN instead of blocking."""
    n = Notifier(listener.env_value)
    results = [n.watchdog() for _ in range(5000)]  # far above net.unix.max_dgram_qlen
    assert results[0] and not results[-1]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
