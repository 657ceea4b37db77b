"""What a process costs, read from /proc: CPU time, resident memory, threads (bench/idle.py).

Pure parsers of /proc text plus small readers that take the /proc root as a parameter, so
the unit tests feed them sample text from a temporary directory.

Two CPU clocks, because they disagree in ways worth seeing:
* /proc/PID/stat utime+stime: the whole thread group, including threads that exited, but in
  clock ticks (1/100 s here): an idle agent's 10 s window holds a handful of ticks.
* /proc/PID/task/TID/schedstat (first field): nanoseconds on the CPU, exact, but per thread.
  /proc/PID/schedstat alone is the *main thread* only (the kernel reads that one task), so
  the process figure is the sum over its tasks; a thread that exits inside a window takes its
  time with it (undercount), which is why the number of such threads is reported too.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from /proc/PID/stat. The command name (field 2) is in
    parentheses and may itself hold spaces or ')', so the fields are counted after the last
    ')'; utime and stime are fields 14 and 15 (1-based)."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): field N is rest[N - 3]
    return int(rest[11]), int(rest[12])


def parse_schedstat(text: str) -> int:
    """Nanoseconds spent on a CPU, the first of /proc/.../schedstat's three fields."""
    return int(text.split()[0])


def parse_status(text: str) -> dict[str, int | None]:
    """Threads, VmRSS (kB) and the parent's pid from /proc/PID/status (None when absent: a
    zombie has no VmRSS)."""
    out: dict[str, int | None] = {"threads": None, "rss_kb": None, "ppid": None}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "PPid":
            out["ppid"] = int(value.split()[0])
        elif key == "Threads":
            out["threads"] = int(value.split()[0])
        elif key == "VmRSS":
            out["rss_kb"] = int(value.split()[0])
    return out


@dataclass(frozen=True)
class Sample:
    """One look at a process: its CPU clocks, memory and threads at `t` (monotonic s)."""

    t: float
    ticks: int  # utime + stime, clock ticks, whole thread group
    task_ns: dict[int, int]  # TID -> ns on CPU (schedstat)
    threads: int | None
    rss_kb: int | None
    comm: dict[int, str] = field(default_factory=dict)  # TID -> comm (thread name)


def read_sample(pid: int, t: float, root: Path = PROC, comms: bool = False) -> Sample:
    """Read one Sample of `pid` (OSError if the process is gone). A thread that exits while
    its directory is being read is skipped."""
    base = root / str(pid)
    ut, st = parse_stat((base / "stat").read_text())
    status = parse_status((base / "status").read_text())
    task_ns: dict[int, int] = {}
    comm: dict[int, str] = {}
    for d in sorted((base / "task").iterdir())[:10_000]:
        try:
            task_ns[int(d.name)] = parse_schedstat((d / "schedstat").read_text())
            if comms:
                comm[int(d.name)] = (d / "comm").read_text().strip()
        except (OSError, ValueError):
            continue
    return Sample(t, ut + st, task_ns, status["threads"], status["rss_kb"], comm)


def window(before: Sample, after: Sample, clk_tck: int = CLK_TCK) -> dict[str, Any]:
    """One window's figures: CPU % of one CPU by schedstat (the main figure) and by stat
    ticks, RSS (MB) and threads at the end, and how many threads exited meanwhile."""
    secs = after.t - before.t
    if secs <= 0:
        raise ValueError(f"window of {secs} s")
    ns = sum(v - before.task_ns.get(tid, 0) for tid, v in after.task_ns.items())
    return {
        "seconds": round(secs, 3),
        "cpu_pct": round(100 * ns / 1e9 / secs, 3),
        "cpu_pct_ticks": round(100 * (after.ticks - before.ticks) / clk_tck / secs, 3),
        "rss_mb": None if after.rss_kb is None else round(after.rss_kb / 1024, 1),
        "threads": after.threads,
        "threads_exited": len(set(before.task_ns) - set(after.task_ns)),
    }


def combine(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' figures for the same window as one (keepalived's parent and VRRP
    child make one node's keepalived): CPU and RSS summed (RSS counts shared pages twice),
    threads summed."""
    def total(key: str) -> float | None:
        xs = [w[key] for w in windows]
        return None if not xs or any(x is None for x in xs) else round(sum(xs), 3)
    return {"seconds": max(w["seconds"] for w in windows),
            "cpu_pct": total("cpu_pct"), "cpu_pct_ticks": total("cpu_pct_ticks"),
            "rss_mb": total("rss_mb"), "threads": total("threads"),
            "threads_exited": sum(w["threads_exited"] for w in windows),
            "processes": len(windows)}


def thread_breakdown(before: Sample, after: Sample) -> list[dict[str, Any]]:
    """Per thread of one process over one window: TID, comm and CPU % of one CPU, busiest
    first (threads that exited meanwhile are not in it)."""
    secs = after.t - before.t
    rows = [{"tid": tid, "comm": after.comm.get(tid, before.comm.get(tid, "?")),
             "cpu_pct": round(100 * (ns - before.task_ns.get(tid, 0)) / 1e9 / secs, 3),
             "new": tid not in before.task_ns}
            for tid, ns in after.task_ns.items()]
    return sorted(rows, key=lambda r: (-r["cpu_pct"], r["tid"]))


def _median(xs: list[float | None], digits: int = 3) -> float | None:
    ys = [x for x in xs if x is not None]
    return round(statistics.median(ys), digits) if ys else None


def summarize(per_node: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per node the median over its windows; for the cluster the median over the nodes'
    medians (and the busiest node's)."""
    nodes = {}
    for name, ws in per_node.items():
        nodes[name] = {"cpu_pct": _median([w["cpu_pct"] for w in ws]),
                       "cpu_pct_ticks": _median([w["cpu_pct_ticks"] for w in ws]),
                       "rss_mb": _median([w["rss_mb"] for w in ws], 1),
                       "threads": _median([w["threads"] for w in ws], 0),
                       "windows": len(ws)}
    col = {k: [n[k] for n in nodes.values()] for k in ("cpu_pct", "cpu_pct_ticks", "rss_mb",
                                                       "threads")}
    cpus = [x for x in col["cpu_pct"] if x is not None]
    return {"nodes": nodes,
            "cpu_pct_median": _median(col["cpu_pct"]),
            "cpu_pct_max_node": max(cpus) if cpus else None,
            "cpu_pct_ticks_median": _median(col["cpu_pct_ticks"]),
            "rss_mb_median": _median(col["rss_mb"], 1),
            "threads_median": _median(col["threads"], 0)}


def ratio(a: float | None, b: float | None, digits: int = 1) -> float | None:
    """a / b, or None when either is unknown or b is 0."""
    return None if a is None or not b else round(a / b, digits)


def _cell(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def cpu_table(systems: dict[str, dict[str, Any] | None], ratio_cpu: float | None) -> str:
    """The human table: one row per system and node, then the cluster medians and the
    ratio. A system given as None (or with "installed": False) reads "not installed"."""
    hdr = (f"{'system':22} {'node':5} {'CPU % sched':>11} {'CPU % ticks':>11} "
           f"{'RSS MB':>7} {'threads':>7}")
    lines = [hdr, "-" * len(hdr)]
    for name, s in systems.items():
        if not s or not s.get("installed", True):
            lines.append(f"{name}: not installed")
            continue
        if s.get("error"):
            lines.append(f"{name}: failed: {s['error']}")
            continue
        for node, n in s["nodes"].items():
            lines.append(f"{name:22} {node:5} {_cell(n['cpu_pct'], '.2f'):>11} "
                         f"{_cell(n['cpu_pct_ticks'], '.2f'):>11} {_cell(n['rss_mb'], '.1f'):>7} "
                         f"{_cell(n['threads'], '.0f'):>7}")
        lines.append(f"{name:22} {'med':5} {_cell(s['cpu_pct_median'], '.2f'):>11} "
                     f"{_cell(s['cpu_pct_ticks_median'], '.2f'):>11} "
                     f"{_cell(s['rss_mb_median'], '.1f'):>7} "
                     f"{_cell(s['threads_median'], '.0f'):>7}")
    lines.append("ratio, hacluster CPU per agent / keepalived CPU per node (medians): "
                 + ("-" if ratio_cpu is None else f"{ratio_cpu:g}x"))
    lines.append("CPU %: of one CPU, median over windows (sched = schedstat ns summed over "
                 "threads, the main figure; ticks = /proc/PID/stat utime+stime)")
    return "\n".join(lines)
