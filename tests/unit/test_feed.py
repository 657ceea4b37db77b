"""The health feed: what this node publishes into gossip, and that it keeps going."""

from __future__ import annotations

import threading
import time

from hacluster.gossip.feed import HealthFeed
from hacluster.gossip.wire import MAX_TEXT, check_from_pb, check_to_pb
from hacluster.model import CheckReport, CheckState, Load


class Membership:
    def __init__(self, fail_first: int = 0) -> None:
        self.metas = []
        self.rounds = 0
        self.fail_first = fail_first
        self.published = threading.Event()

    def set_meta(self, meta) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("not ready")
        self.metas.append(meta)
        self.published.set()

    def gossip_once(self) -> None:
        self.rounds += 1


LONG = CheckReport("disk", "exec", "x" * 3000, CheckState.FAILING, 5.0, "e" * 3000, "o" * 3000)


def test_published_reports_equal_their_copy_after_the_wire() -> None:
    m = Membership()
    feed = HealthFeed(m, lambda: (LONG,), lambda: Load(12.4, 40.6), lambda: True, "0.2.0")
    meta = feed.publish(Load(12.4, 40.6))
    (c,) = meta.checks
    assert len(c.error) == MAX_TEXT and check_from_pb(check_to_pb(c), "c") == c
    assert meta.load == Load(12, 41) and meta.draining and meta.version == "0.2.0"


def test_the_feed_survives_a_failing_first_publish_and_pushes_changes_at_once() -> None:
    m = Membership(fail_first=1)
    feed = HealthFeed(m, lambda: (LONG,), lambda: Load(), lambda: False, "v", load_refresh=60)
    feed.start()
    try:
        feed.checks_changed()  # the first publish failed; a check change retries it
        assert m.published.wait(10)
        deadline = time.monotonic() + 10
        while m.rounds == 0 and time.monotonic() < deadline:
            feed.checks_changed()
            time.sleep(0.01)
        assert m.rounds >= 1  # a check change triggers a gossip round right away
    finally:
        feed.stop()


def test_only_news_bumps_the_record_and_the_rest_goes_out_at_most_each_refresh_max() -> None:
    # every new meta makes gossip send our record to every member: at 25 servers a latency
    # or a load wiggle each 5 s made gossip bytes per agent grow with N (bench/scale.py)
    from hacluster.gossip.feed import LOAD_STEP, REFRESH_MAX_S
    m, now = Membership(), [100.0]
    report = [CheckReport("web", "http", "x:80", CheckState.PASSING, 1.0, "")]
    feed = HealthFeed(m, lambda: tuple(report), lambda: Load(), lambda: False, "v",
                      clock=lambda: now[0])
    feed.publish(Load(40.0, 50.0))
    assert len(m.metas) == 1
    now[0] += 5
    report[0] = CheckReport("web", "http", "x:80", CheckState.PASSING, 3.0, "")
    held = feed.publish(Load(40.0 + LOAD_STEP - 1, 52.0))  # a latency, a small load move
    assert len(m.metas) == 1 and held == m.metas[0]
    feed.publish(Load(40.0 + LOAD_STEP, 52.0))  # a load move of LOAD_STEP is news
    assert len(m.metas) == 2 and m.metas[-1].load == Load(40 + LOAD_STEP, 52)
    report[0] = CheckReport("web", "http", "x:80", CheckState.FAILING, None, "refused")
    feed.publish()  # a check's state: at once
    assert len(m.metas) == 3 and m.metas[-1].checks[0].state is CheckState.FAILING
    report[0] = CheckReport("web", "http", "x:80", CheckState.FAILING, 2.0, "refused")
    feed.publish(Load(41.0, 53.0))
    assert len(m.metas) == 3
    now[0] += REFRESH_MAX_S  # the rest goes out in the end
    feed.publish(Load(41.0, 53.0))
    assert len(m.metas) == 4 and m.metas[-1].load == Load(41, 53)
    assert m.metas[-1].checks[0].latency_ms == 2.0
