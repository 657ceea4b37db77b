"""Membership benchmark: what a client sees while the cluster changes under it (issue 16).

    .venv/bin/python bench/membership.py [--trials 3] [--interval 0.02] [--json-out FILE]

A 3-server balanced lab (the lab's defaults: Maglev, connection sync). A client in the lab's
client namespace starts one HTTP request to the VIP every --interval (hacluster.lab.prober,
each with a 1 s timeout). Steps, in order, each timed:

  add-1, add-2      `hacluster lab add`'s work: a new server joined with `hacluster members
                    add`, then every agent reloads its file (the services gain its backend)
  remove-holder     `hacluster members remove` of the VIP holder (drained, leadership moved
                    away first, removed from Raft and from the membership), then its agent is
                    stopped and every other agent reloads
  reload-weight     every file changes one backend's weight; SIGHUP to every agent

Per step: how long it took, requests started during it, how many failed, the longest gap
between two successful answers (ms; the interval included), and whether two kernels ever
held the VIP at once (ms). No peer comparison: keepalived and Pacemaker change members by
editing their config and restarting or reloading each daemon (keepalived has no membership:
every VRRP instance names its peers; `pcs cluster node add` needs corosync's reload and
is not installed here).

Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Benchmarks are programs, not asserts (STYLE.md §12).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._labkit import emit, log, machine, med, mx  # noqa: E402
from hacluster.lab.grow import add_server, remove_server  # noqa: E402
from hacluster.lab.lab import HTTP_PORT, Lab, random_prefix  # noqa: E402
from hacluster.lab.monitor import HolderMonitor  # noqa: E402

STEPS = ("add-1", "add-2", "remove-holder", "reload-weight")


def _weigh(node: str):
    def change(doc: dict[str, Any]) -> None:
        for svc in doc.get("services", []):
            svc["backends"] = [{**b, "weight": 3} if b.get("node") == node else b for b in svc["backends"]]
    return change


def trial(interval: float) -> dict[str, Any]:
    lab = Lab(random_prefix("bm", 7), 3)
    marks: list[tuple[str, float, float]] = []
    try:
        lab.up()
        monitor = HolderMonitor.for_lab(lab)
        prober = subprocess.Popen(
            ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "hacluster.lab.prober",
             "--host", lab.vip, "--port", str(HTTP_PORT), "--interval", str(interval),
             "--duration", "300", "--timeout", "1.0"], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)  # a second of baseline requests before the first step
        try:
            for step in STEPS:
                t0 = time.time()
                if step.startswith("add"):
                    node = add_server(lab)
                    monitor.watch(node.name, node.netns)
                elif step == "remove-holder":
                    remove_server(lab, lab.wait_single_holder(10))
                else:
                    heavy = lab.nodes[0]
                    for n in lab.nodes:
                        lab.edit_config(n, _weigh(heavy.name))
                        lab.reload(n)
                t1 = time.time()
                marks.append((step, t0, t1))
                log(f"{lab.prefix}: {step} took {(t1 - t0) * 1000:.0f} ms")
                time.sleep(1.0)  # let a late effect show before the next step
        finally:
            prober.terminate()
            out, _ = prober.communicate(timeout=30)
            monitor.stop()
        rows = sorted((json.loads(line) for line in out.splitlines() if line.strip()), key=lambda r: r["t"])
        result: dict[str, Any] = {"requests": len(rows), "failed": sum(not r["ok"] for r in rows)}
        for step, t0, t1 in marks:
            during = [r for r in rows if t0 <= r["t"] <= t1 + 1.0]
            ok_times = [r["t"] for r in during if r["ok"]]
            gap = max((b - a for a, b in zip(ok_times, ok_times[1:], strict=False)), default=float("nan"))
            result[step] = {"ms": round((t1 - t0) * 1000), "requests": len(during),
                            "failed": sum(not r["ok"] for r in during),
                            # when each failed request started, from the step's start (ms)
                            "failed_at_ms": [round((r["t"] - t0) * 1000) for r in during if not r["ok"]],
                            "failed_after_ms": [round(r["ms"]) for r in during if not r["ok"]],
                            "longest_gap_ms": round(gap * 1000, 1),
                            "overlap_ms": round(sum(e - s for s, e, _ in monitor.overlaps()
                                                    if t0 <= s <= t1 + 1.0) * 1000, 1)}
        return result
    finally:
        lab.down()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3, choices=range(1, 11), metavar="1-10")
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--json-out")
    a = p.parse_args()
    doc: dict[str, Any] = {"bench": "membership", "machine": machine(), "interval_s": a.interval,
                           "trials": []}
    try:
        for i in range(a.trials):
            log(f"trial {i + 1}/{a.trials}")
            doc["trials"].append(trial(a.interval))
    except KeyboardInterrupt:
        doc["interrupted"] = True
    summary = {}
    for step in STEPS:
        xs = [t[step] for t in doc["trials"] if step in t]
        summary[step] = {"ms_median": med([x["ms"] for x in xs]),
                         "failed_total": sum(x["failed"] for x in xs),
                         "requests_total": sum(x["requests"] for x in xs),
                         "longest_gap_ms_max": mx([x["longest_gap_ms"] for x in xs]),
                         "overlap_ms_max": mx([x["overlap_ms"] for x in xs])}
    doc["summary"] = summary
    log(f"{'step':15} {'took (median ms)':>17} {'requests':>9} {'failed':>7} {'longest gap ms':>15} "
        f"{'two holders ms':>15}")
    for step, s in summary.items():
        log(f"{step:15} {s['ms_median']!s:>17} {s['requests_total']:>9} {s['failed_total']:>7} "
            f"{s['longest_gap_ms_max']!s:>15} {s['overlap_ms_max']!s:>15}")
    return emit(doc, a.json_out)


if __name__ == "__main__":
    sys.exit(main())
