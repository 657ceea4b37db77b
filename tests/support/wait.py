"""The tests' wait: hacluster.lab.wait (one rule, shared with bench/), and its asyncio twin.

    from tests.support.wait import wait_until
    wait_until(lambda: lab.holders() == ["n2"], 10, "n2 to hold the VIP")

wait_until_async is for a test that runs inside an event loop: the condition is polled the
same way (the same Deadline), but the wait yields to the loop instead of blocking it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from hacluster.lab.wait import POLL_S, Deadline, WaitTimeout, wait_until

T = TypeVar("T")

__all__ = ["POLL_S", "WaitTimeout", "wait_until", "wait_until_async"]


async def wait_until_async(cond: Callable[[], T], timeout: float, what: str,
                           interval: float = POLL_S) -> T:
    """wait_until for coroutines: the loop keeps running while the condition is false."""
    deadline = Deadline(timeout, what)
    while not deadline.met(got := cond()):
        await asyncio.sleep(interval)
    return got
