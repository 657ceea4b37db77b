"""Host load for gossip: CPU busy % since the previous sample, memory % in use.

Memory "in use" is MemTotal - MemAvailable: the kernel's own estimate of what could be
handed out without swapping, so page cache does not count as used.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hacluster.model import Load


def _cpu_times(text: str) -> tuple[int, int]:
    """(busy, total) jiffies from the aggregate `cpu` line of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            # user nice system idle iowait irq softirq steal guest guest_nice; guest time is
            # already inside user/nice, so it is left out of the total.
            values = [int(v) for v in line.split()[1:9]]
            values += [0] * (8 - len(values))
            idle = values[3] + values[4]
            total = sum(values)
            return total - idle, total
    raise ValueError("no aggregate cpu line in /proc/stat")


def _mem_percent(text: str) -> float:
    info = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            info[name] = int(parts[0])
    total = info.get("MemTotal", 0)
    if total <= 0 or "MemAvailable" not in info:
        return 0.0
    return round(100.0 * (total - info["MemAvailable"]) / total, 1)


class LoadSampler:
    """sample() -> Load. The first sample covers the time since construction."""

    def __init__(self, proc: str | Path = "/proc"):
        self._stat = Path(proc) / "stat"
        self._meminfo = Path(proc) / "meminfo"
        self._lock = threading.Lock()
        self._last = self._read_cpu()
        self._cpu = 0.0

    def _read_cpu(self) -> tuple[int, int] | None:
        try:
            return _cpu_times(self._stat.read_text())
        except (OSError, ValueError):
            return None

    def sample(self) -> Load:
        with self._lock:
            now = self._read_cpu()
            if now is not None and self._last is not None:
                busy, total = now[0] - self._last[0], now[1] - self._last[1]
                # Two samples within one clock tick: keep the previous figure, not 0 %.
                if total > 0:
                    self._cpu = round(min(100.0, max(0.0, 100.0 * busy / total)), 1)
                    self._last = now
            elif now is not None:
                self._last = now
            cpu = self._cpu
        try:
            mem = _mem_percent(self._meminfo.read_text())
        except (OSError, ValueError):
            mem = 0.0
        return Load(cpu_percent=cpu, mem_percent=mem)
