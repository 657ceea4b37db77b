"""Client traffic through the VIP, and the outage it saw around a fault."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from hacluster.lab.lab import HTTP_PORT, Lab


@dataclass(frozen=True)
class Attempt:
    t: float  # wall-clock start
    ok: bool
    server: str | None


class Prober:
    """prober.py running in the lab's client namespace for `duration` seconds."""

    def __init__(self, lab: Lab, duration: float, interval: float = 0.01, timeout: float = 1.0):
        self.interval = interval
        cmd = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "hacluster.lab.prober",
               "--host", lab.vip, "--port", str(HTTP_PORT), "--interval", str(interval),
               "--duration", str(duration), "--timeout", str(timeout)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    ms: float  # client-seen outage: gap between successes around the fault, minus one interval
    before: str | None  # server that answered last before the fault
    after: str | None  # server that answered first after it
    failed_attempts: int
    recovered: bool


def outage(attempts: list[Attempt], fault_at: float, interval: float) -> Outage:
    before = [a for a in attempts if a.ok and a.t < fault_at]
    after = [a for a in attempts if a.ok and a.t >= fault_at]
    failed = sum(1 for a in attempts if not a.ok and a.t >= (before[-1].t if before else 0))
    if not before:
        return Outage(float("nan"), None, after[0].server if after else None, failed, bool(after))
    if not after:
        return Outage(float("inf"), before[-1].server, None, failed, False)
    # Successes that started after the fault but before the first failure still count as
    # "before": the first failure marks where service really stopped.
    first_fail = next((a for a in attempts if not a.ok and a.t >= before[-1].t), None)
    if first_fail is None:
        return Outage(0.0, before[-1].server, after[-1].server, 0, True)
    last_ok = max((a for a in attempts if a.ok and a.t < first_fail.t), key=lambda a: a.t)
    first_ok = next(a for a in attempts if a.ok and a.t > first_fail.t)
    gap = (first_ok.t - last_ok.t) * 1000 - interval * 1000
    return Outage(max(0.0, gap), last_ok.server, first_ok.server, failed, True)
