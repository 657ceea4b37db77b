"""The lease clock: the one clock on which VIP ownership is measured.

Every deadline that decides whether this node may hold a VIP is read on `now()`: the Raft
lease (consensus/raft.py stamps heartbeats with it and compares acks against it), the
last-moment guard before a VIP is claimed (hostops), and pysyncobj's election deadlines,
which the pre-vote gate compares against it. They must all be one clock, or a deadline set
on one is compared with a reading of another: CLOCK_MONOTONIC and CLOCK_MONOTONIC_RAW were
0.2 s apart on the first machine measured, and drift further, enough for an election to slip
past the pre-vote gate or a lease to look longer than it is.

Other timing (the agent's tick pacing, gossip, health checks) may use time.monotonic(): it
never meets these deadlines.
"""

from __future__ import annotations

import time


def now() -> float:
    """Seconds on CLOCK_MONOTONIC_RAW: the clock of the lease and of pysyncobj's timers.

    RAW because pysyncobj 0.3.17 keeps its election deadlines on it (pysyncobj.monotonic),
    and because NTP does not slew it: it measures elapsed time as the hardware counts it, so
    a lease of L seconds is L seconds even while NTP corrects the wall clock.
    tests/unit/test_pysyncobj_compat.py checks that pysyncobj still uses this clock.
    """
    return time.clock_gettime(time.CLOCK_MONOTONIC_RAW)
