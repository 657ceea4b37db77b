"""The metrics listener of an idle agent sleeps (issue 17): socketserver's loop woke every
0.5 s only to look for a shutdown; ours waits without a timeout until a client connects or
stop() wakes it."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hacluster import listener


def test_the_listener_sleeps_until_a_client_comes_and_stops_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    timeouts: list[float | None] = []
    real = listener.selectors.DefaultSelector

    class Recording(real):  # type: ignore[misc, valid-type]
        def select(self, timeout: float | None = None) -> Any:
            timeouts.append(timeout)
            return super().select(timeout)

    monkeypatch.setattr(listener.selectors, "DefaultSelector", Recording)
    server = listener.serve_metrics("127.0.0.1:0", CollectorRegistry())
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the env
        with opener.open(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.status == 200
        assert timeouts and set(timeouts) == {None}
    finally:
        started = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 and not server._thread.is_alive()
    server.stop()  # twice: harmless (the daemon's reload may stop a stopped listener)


def test_stopped_before_its_thread_ran() -> None:
    server = listener.serve_metrics("127.0.0.1:0", CollectorRegistry())
    server.stop()
    server._thread.join(2)
    assert not server._thread.is_alive()
