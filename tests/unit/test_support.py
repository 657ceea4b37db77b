"""tests/support: the one wait (hacluster/lab/wait.py, tests/support/wait.py), sync and async,
and the one fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support.clock import FakeClock
from tests.support.wait import WaitTimeout, wait_until, wait_until_async


def test_returns_the_first_truthy_result() -> None:
    calls = itertools.count(1)
    assert wait_until(lambda: (n := next(calls)) >= 3 and n, 5, "three calls", interval=0.001) == 3


def test_the_timeout_names_what_was_awaited_and_the_last_result() -> None:
    with pytest.raises(WaitTimeout, match=r"timed out after 0.05 s waiting for the VIP \(last: \[\]\)"):
        wait_until(list, 0.05, "the VIP", interval=0.01)


def test_a_timeout_is_a_test_failure() -> None:
    assert issubclass(WaitTimeout, AssertionError)


def test_the_condition_is_tried_once_more_after_the_deadline() -> None:
    # it slept through its deadline (a loaded machine): one more try sees the condition hold
    seen: list[int] = []
    assert wait_until(lambda: seen.append(1) or len(seen) > 1, 0.01, "a second try", interval=0.05)
    assert len(seen) == 2


def test_the_async_twin_follows_the_same_rule() -> None:
    ticks = [0]

    async def scenario() -> None:
        async def tick() -> None:
            while True:
                ticks[0] += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())  # runs only while the wait yields to the loop
        assert await wait_until_async(lambda: ticks[0] >= 3 and ticks[0], 5, "3 ticks", interval=0.001) >= 3
        with pytest.raises(WaitTimeout, match="waiting for never"):
            await wait_until_async(lambda: False, 0.02, "never", interval=0.005)
        ticker.cancel()

    asyncio.run(scenario())



def test_the_fake_clock_moves_when_told_or_by_its_step() -> None:
    clock = FakeClock(100.0)
    assert clock() == clock() == 100.0
    clock.advance(0.5)
    assert clock() == 100.5
    stepping = FakeClock(10.0, step=0.001)
    assert stepping() < stepping()
