"""The agent's one clock (placeholder until the seam branch lands)."""

import time


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC_RAW)
