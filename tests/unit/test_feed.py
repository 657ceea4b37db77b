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
