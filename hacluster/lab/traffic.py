"""Client traffic through the VIP, and the outage it saw around a fault."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import IO

from hacluster.lab.lab import HTTP_PORT, Lab


@dataclass(frozen=True)
class Attempt:
    t: float  # wall-clock start
    ok: bool
    server: str | None


class Prober:
    """prober.py running in the lab's client namespace for `duration` seconds; its attempts
    go to `stdout` (a pipe that result() reads, or a file a subclass reads while it runs)."""

    def __init__(self, lab: Lab, duration: float, interval: float = 0.01, timeout: float = 1.0,
                 python: str = sys.executable, stdout: IO[str] | int = subprocess.PIPE):
        self.interval = interval
        cmd = ["ip", "netns", "exec", lab.client_ns, python, "-m", "hacluster.lab.prober",
               "--host", lab.vip, "--port", str(HTTP_PORT), "--interval", str(interval),
               "--duration", str(duration), "--timeout", str(timeout)]
        self.proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
        self.duration = duration

    def result(self) -> list[Attempt]:
        out, err = self.proc.communicate(timeout=self.duration + 30)
        if self.proc.returncode != 0:
            raise RuntimeError(f"prober failed ({self.proc.returncode}): {err.strip()}")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return sorted((Attempt(r["t"], r["ok"], r["server"]) for r in rows), key=lambda a: a.t)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@dataclass(frozen=True)
class Outage:
    ms: float  # client-seen outage: the sum of every gap in service after the fault
    before: str | None  # server that answered last before the fault
    after: str | None  # server that answered first once service was back for good
    failed_attempts: int
    recovered: bool


def outage_windows(attempts: list[Attempt], fault_at: float) -> list[tuple[float, float]]:
    """Every client-seen gap after the fault: (last success, next success) start times.

    A fault can make service flap, and a request already in flight at the fault instant can
    fail or succeed out of order, so every gap counts, not only the first. A run that ends
    while failing yields a gap ending at +inf.
    """
    before = [a for a in attempts if a.ok and a.t < fault_at]
    last_ok = before[-1].t if before else None
    gaps: list[tuple[float, float]] = []
    failing = False
    for a in attempts:
        if last_ok is not None and a.t <= last_ok:
            continue
        if not a.ok:
            failing = True
        elif failing:
            gaps.append((last_ok if last_ok is not None else a.t, a.t))
            failing = False
            last_ok = a.t
        else:
            last_ok = a.t
    if failing:
        gaps.append((last_ok if last_ok is not None else fault_at, float("inf")))
    return gaps


def outage(attempts: list[Attempt], fault_at: float, interval: float) -> Outage:
    """The time clients lost around a fault, with `interval` resolution."""
    before = [a for a in attempts if a.ok and a.t < fault_at]
    gaps = outage_windows(attempts, fault_at)
    since = before[-1].t if before else fault_at
    failed = sum(1 for a in attempts if not a.ok and a.t > since)
    recovered = not gaps or gaps[-1][1] != float("inf")
    if not recovered:
        ms = float("inf")
    else:
        ms = sum(max(0.0, (end - start) - interval) for start, end in gaps) * 1000
    back_at = gaps[-1][1] if gaps else fault_at
    after = next((a.server for a in attempts if a.ok and a.t >= back_at), None)
    return Outage(ms if before else float("nan"), before[-1].server if before else None,
                  after, failed, recovered and after is not None)
