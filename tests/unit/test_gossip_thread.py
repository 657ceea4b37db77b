"""start()/stop() smoke tests with real time, bounded by deadlines (no fixed sleeps)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from hacluster.gossip import runner
from hacluster.gossip.membership import GossipTiming, Membership
from hacluster.gossip.types import GossipState, NodeMeta
from tests.support.gossip_net import Network, NullTransport, address
from tests.support.wait import wait_until

FAST = GossipTiming(probe_interval=0.05, probe_timeout=0.02, gossip_interval=0.02,
                    push_pull_interval=0.3, reconnect_interval=0.1)


def gossip_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("gossip-")}


def test_threads_detect_failure_spread_meta_and_stop_promptly():
    net = Network()
    ids = ("n1", "n2", "n3")
    engines = {n: Membership(n, address(n), {p: address(p) for p in ids if p != n},
                             net.transport(n), timing=FAST) for n in ids}
    for n, e in engines.items():
        net.add(e, n)
    try:
        for e in engines.values():
            e.start()
            e.start()  # idempotent
        assert len(gossip_threads()) == 18  # four periodic steps, expiry and the urgent prober, each
        wait_until(lambda: all(e.stats()["push_pulls_sent"] >= 1 for e in engines.values()),
                   timeout=5, what="a push-pull from every engine",
                   interval=0.01)  # start() joins at once, not after a push-pull interval
        engines["n1"].set_meta(NodeMeta(draining=True))
        wait_until(lambda: all(engines[o].member("n1").meta == NodeMeta(draining=True)
                               for o in ("n2", "n3")), timeout=5, what="n1 draining, seen by n2 and n3",
                   interval=0.01)
        net.stop("n3")
        engines["n3"].stop()
        wait_until(lambda: all(engines[o].member("n3").state is GossipState.DEAD
                               for o in ("n1", "n2")), timeout=10, what="n3 dead, seen by n1 and n2",
                   interval=0.01)
        assert engines["n1"].member("n2").state is GossipState.ALIVE
    finally:
        started = time.monotonic()
        for e in engines.values():
            e.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert gossip_threads() == set()


class ExplodingTransport:
    def ping(self, *a):
        raise RuntimeError("transport bug")

    ping_req = gossip = push_pull = ping


def test_a_failing_step_is_logged_and_the_thread_keeps_going(caplog):
    m = Membership("n1", address("n1"), {"n2": address("n2")}, ExplodingTransport(), timing=FAST)
    m.set_meta(NodeMeta(draining=True))  # something to gossip
    with caplog.at_level(logging.ERROR, logger="hacluster.gossip"):
        m.start()
        try:
            wait_until(lambda: m.stats()["step_errors"] >= 5, timeout=5, what="five step errors",
                       interval=0.01)
        finally:
            m.stop()
    assert "step failed" in caplog.text
    assert gossip_threads() == set()


@contextlib.contextmanager
def _expiry_thread(m: Membership) -> Iterator[tuple[threading.Thread, list[float]]]:
    """m's expiry thread, running; yields it and the times of its looks; stopped after."""
    looks: list[float] = []
    look = m.expire_suspicions
    m.expire_suspicions = lambda: (looks.append(time.monotonic()), look())[1]
    stop = threading.Event()
    worker = threading.Thread(target=m._run_expiry, args=(stop,), daemon=True)
    worker.start()
    try:
        yield worker, looks
    finally:
        stop.set()
        m._expiry_wake.set()
        worker.join(2)


def test_the_expiry_thread_sleeps_until_the_deadline_then_declares_death(monkeypatch):
    # issue 17: no suspicion, no wake-up (it looked every 50 ms); a suspicion wakes it, and it
    # sleeps until its deadline: death is declared on time all the same
    monkeypatch.setattr(runner, "EXPIRY_IDLE_S", 60.0)
    m = Membership("n1", address("n1"), {"n2": address("n2")}, NullTransport(),
                   timing=GossipTiming(probe_interval=0.05, probe_timeout=0.02))
    with _expiry_thread(m) as (worker, looks):
        wait_until(lambda: looks, 5, "the expiry thread's first look", interval=0.01)
        m.probe_once()  # nobody answers: n2 is suspect
        deadline = m._members["n2"].suspicion.deadline()
        wait_until(lambda: m.member("n2").state is GossipState.DEAD, 5, "n2 dead", interval=0.005)
        died = time.monotonic()
    assert not worker.is_alive()
    assert deadline <= died < deadline + 0.5
    assert len(looks) <= 3  # at start, when the suspicion started, at its deadline


def test_a_confirmation_heard_in_gossip_wakes_the_expiry_thread_for_its_closer_deadline(monkeypatch):
    # bench/scale.py: every powered-off member died at the unconfirmed timeout (5 s after
    # the suspicion, not ~2 s): a confirmation arriving in gossip did not wake the thread
    from hacluster.gossip.types import NodeRecord

    monkeypatch.setattr(runner, "EXPIRY_IDLE_S", 60.0)
    peers = {f"n{i}": address(f"n{i}") for i in range(2, 8)}
    m = Membership("n1", address("n1"), peers, NullTransport(),
                   timing=GossipTiming(probe_interval=0.1, probe_timeout=0.02))
    with _expiry_thread(m) as (_, looks):
        wait_until(lambda: looks, 5, "the expiry thread's first look", interval=0.01)
        suspect = [NodeRecord("n5", address("n5"), 0, GossipState.SUSPECT, origin=o)
                   for o in ("n2", "n3", "n4")]
        m.handle_gossip("n2", suspect[:1])
        alone = m._members["n5"].suspicion.deadline()
        # the suspicion woke it: its next sleep is until `alone`
        wait_until(lambda: len(looks) >= 2, 5, "the look after the suspicion", interval=0.005)
        m.handle_gossip("n3", suspect[1:2])
        m.handle_gossip("n4", suspect[2:])
        confirmed = m._members["n5"].suspicion.deadline()
        assert confirmed < alone - 0.2
        wait_until(lambda: m.member("n5").state is GossipState.DEAD, 10, "n5 dead", interval=0.005)
        died = time.monotonic()
    assert confirmed <= died < confirmed + 0.3
