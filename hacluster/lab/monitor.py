"""Watch which servers hold a VIP, from the kernel's own address events (I1 checks).

One `ip -o -ts monitor address dev eth0` per server namespace records every add, renew and
delete of the VIP with a microsecond wall-clock timestamp, including deletions by the
kernel when a lifetime expires. overlaps() then finds every interval during which two or
more servers held the VIP at once.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from hacluster.lab.netns import OBSERVER_PIDS

if TYPE_CHECKING:
    from hacluster.lab.lab import Lab

_LINE = re.compile(r"^\[(?P<ts>[^\]]+)\]\s+(?P<deleted>Deleted\s+)?\d+:\s+\S+\s+inet\s+(?P<addr>[\d.]+)/")


def parse_line(line: str, vip: str) -> tuple[float, bool] | None:
    """(timestamp, present) for a monitor line about vip, else None."""
    m = _LINE.match(line)
    if not m or m.group("addr") != vip:
        return None
    ts = dt.datetime.fromisoformat(m.group("ts")).timestamp()  # ip prints local time
    return ts, m.group("deleted") is None


@dataclass
class HolderMonitor:
    vip: str
    netns: dict[str, str]  # node name -> namespace
    events: list[tuple[float, str, bool]] = field(default_factory=list)
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_lab(cls, lab: Lab) -> Self:
        """A monitor of every server of `lab`, started from the holders the kernels report now."""
        monitor = cls(lab.vip, {n.name: n.netns for n in lab.nodes})
        holders = lab.holders()
        monitor.start({n.name: n.name in holders for n in lab.nodes})
        return monitor

    def start(self, initial: dict[str, bool]) -> None:
        """Start watching; `initial` says who holds the VIP now (read just before)."""
        now = time.time()
        for name, present in initial.items():
            self.events.append((now, name, present))
        for name, ns in self.netns.items():
            self._watch(name, ns)

    def watch(self, name: str, ns: str) -> None:
        """Watch one more server from now on (a server added while the monitor runs: it
        holds nothing when it joins)."""
        self.netns[name] = ns
        with self._lock:
            self.events.append((time.time(), name, False))
        self._watch(name, ns)

    def _watch(self, name: str, ns: str) -> None:
        # Real-time priority: `ip -ts` stamps an event when it reads it, so a monitor left
        # waiting for a CPU would misdate events and invent (or hide) overlaps.
        rt = ["chrt", "-f", "20"] if shutil.which("chrt") else []
        cmd = [*rt, "ip", "-n", ns, "-o", "-ts", "monitor", "address", "dev", "eth0"]
        p = subprocess.Popen(cmd,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        OBSERVER_PIDS.add(p.pid)
        t = threading.Thread(target=self._read, args=(name, p), daemon=True)
        t.start()
        self._procs.append(p)
        self._threads.append(t)

    def _read(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            ev = parse_line(line, self.vip)
            if ev is not None:
                with self._lock:
                    self.events.append((ev[0], name, ev[1]))

    def stop(self) -> None:
        for p in self._procs:
            OBSERVER_PIDS.discard(p.pid)
            p.terminate()
        for p in self._procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in self._threads:
            t.join(2)
        self._procs.clear()

    def __enter__(self) -> HolderMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def timeline(self) -> list[tuple[float, frozenset[str]]]:
        """[(time, holders from then on)] in time order."""
        with self._lock:
            evs = sorted(self.events)
        holding: set[str] = set()
        out: list[tuple[float, frozenset[str]]] = []
        for ts, name, present in evs:
            (holding.add if present else holding.discard)(name)
            out.append((ts, frozenset(holding)))
        return out

    def overlaps(self, until: float | None = None) -> list[tuple[float, float, frozenset[str]]]:
        """Every interval (start, end, holders) with two or more holders."""
        tl = self.timeline()
        end_all = until if until is not None else time.time()
        out = []
        for i, (ts, holders) in enumerate(tl):
            if len(holders) >= 2:
                end = tl[i + 1][0] if i + 1 < len(tl) else end_all
                if end > ts:
                    out.append((ts, end, holders))
        return out

    def overlap_s(self, until: float | None = None) -> float:
        return sum(e - s for s, e, _ in self.overlaps(until))

    def holders_ever(self) -> set[str]:
        with self._lock:
            return {name for _, name, present in self.events if present}
