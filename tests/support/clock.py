"""The one fake clock of the tests: time moves only when the test says so."""

from __future__ import annotations


class FakeClock:
    """A clock to inject wherever the code takes one (`clock=`, `wall=`): each call returns
    `now`; `advance(seconds)` moves it on, or the test sets `now`. With `step`, every call
    first moves it `step` seconds, for code that wants strictly increasing times (the audit
    log's records)."""

    def __init__(self, now: float = 1000.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
