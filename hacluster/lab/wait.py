"""The one wait of the lab, its tests and its benchmarks: poll a condition until a deadline.

Lab tests and benchmarks never sleep for correctness; they wait for what they need
(STYLE.md §9). tests/support/wait.py hands this to the tests (with an asyncio twin built on
the same Deadline); bench/ imports it from here, since bench/ may not import tests/.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Most conditions ask a cluster, often through a new `hacluster` CLI process (~0.3 s of CPU):
# polled every 20 ms, a 2-CPU machine would starve the agents under test. A cheap condition
# (a flag, a counter in this process) passes a shorter interval.
POLL_S = 0.2


class WaitTimeout(AssertionError):
    """A condition still false at its deadline. An AssertionError: in a test it is a failure
    that names what was awaited, like any failed assert."""


class Deadline:
    """The rule of every wait: try the condition; a truthy result ends the wait; a false one
    after `timeout` seconds (monotonic) raises WaitTimeout naming `what` and the last result.

    The condition is always tried once more after the deadline has passed, so a wait that
    slept through its deadline (a loaded machine) still sees a condition that became true.
    """

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.end = time.monotonic() + timeout

    def met(self, got: object) -> bool:
        """True when `got` is truthy; False to poll again; WaitTimeout past the deadline."""
        if got:
            return True
        if time.monotonic() >= self.end:
            raise WaitTimeout(f"timed out after {self.timeout:g} s waiting for {self.what} "
                              f"(last: {got!r})")
        return False


def wait_until(cond: Callable[[], T], timeout: float, what: str, interval: float = POLL_S) -> T:
    """Call cond() every `interval` seconds until it returns something truthy, and return
    that; WaitTimeout (naming `what`) once `timeout` seconds have passed without."""
    deadline = Deadline(timeout, what)
    while not deadline.met(got := cond()):
        time.sleep(interval)
    return got
