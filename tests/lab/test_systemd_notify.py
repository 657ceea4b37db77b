"""The agents speak systemd's notify protocol: READY=1 once they serve, WATCHDOG=1 from the
loop while it runs, STOPPING=1 on SIGTERM (a unix datagram socket stands in for systemd)."""

from __future__ import annotations

import signal
import socket

from tests.support.wait import wait_until


def test_agents_notify_ready_watchdog_and_stopping(lab_factory, tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    got: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                return got
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # the lab's agents inherit it
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        lab = lab_factory(up=False, balance=False)
        lab.up()
        wait_until(lambda: sum("READY=1" in m for m in drain()) >= 3, 30, "READY=1 from the 3 agents")
        pings = sum("WATCHDOG=1" in m for m in got)
        wait_until(lambda: sum("WATCHDOG=1" in m for m in drain()) >= pings + 3, 10, "watchdog pings")
        lab.signal_agent(lab.nodes[0], signal.SIGTERM)
        wait_until(lambda: any("STOPPING=1" in m for m in drain()), 15, "STOPPING=1 on SIGTERM")
    finally:
        sock.close()
