"""Idle stability: a 3-server lab left alone; how often does leadership (or the VIP) move?

    .venv/bin/python bench/idle.py [--minutes 10] [--json-out FILE]

A healthy idle cluster should keep one leader and one VIP holder for ever: every leader
change is a client outage that no fault caused. The lab comes up, settles, and is then
watched without traffic for --minutes:

* each agent's Raft term from `hacluster status --agent --json` at the start and at the end,
* every `raft role ... -> leader` and `lease lost` line in the agent logs during the window,
* every gain/loss of the VIP in any server's kernel (address events), and any overlap.

Prints a short summary on stderr and the JSON document as the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _labkit import (
    FAILURES,
    PYTHON,
    foreign_labs,
    interrupt_on_sigterm,
    log,
    machine,
    start_monitor,
)
from _systems import HaclusterSystem

from hacluster.lab.lab import Lab, LabNode, cli_argv, random_prefix

_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
_TO_LEADER = re.compile(r"raft role \w+ -> leader \(term (\d+)\)")


def status(node: LabNode) -> dict[str, Any]:
    cmd = cli_argv(node.netns, "status", "--agent", "--json", "--config", str(node.config), python=PYTHON)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip()[-300:]}
    return json.loads(p.stdout)


def log_events(node: LabNode, since: float, until: float) -> dict[str, list[Any]]:
    """Leader wins, lease losses and VIP releases logged by node within [since, until]."""
    out: dict[str, list[Any]] = {"became_leader": [], "lease_lost": [], "released": []}
    try:
        lines = node.log.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        m = _TS.match(line)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1e3
        if not since <= t <= until:
            continue
        if lm := _TO_LEADER.search(line):
            out["became_leader"].append([round(t - since, 3), int(lm.group(1))])
        elif "lease lost" in line:
            out["lease_lost"].append(round(t - since, 3))
        elif "released VIP" in line:
            out["released"].append(round(t - since, 3))
    return out


def run(minutes: float) -> dict[str, Any]:
    lab = Lab(random_prefix("bi"), 3)
    log(f"idle: lab {lab.prefix} ({lab.net}.0/24, VIP {lab.vip}), {minutes:g} min")
    system = HaclusterSystem(lab)
    doc: dict[str, Any] = {"benchmark": "idle", "lab": lab.prefix, "minutes": minutes}
    mon = None
    try:
        system.up()
        holder_start = system.settle(60)
        doc["status_start"] = {n.name: status(n) for n in lab.nodes}
        mon = start_monitor(lab)
        t0 = time.time()
        end = time.monotonic() + minutes * 60
        samples = 0
        not_single = 0
        agents_died: list[str] = []
        other_labs: set[str] = set()
        # One look a second: the kernel events catch what happens in between.
        while time.monotonic() < end and samples < 100_000:
            samples += 1
            other_labs.update(foreign_labs(lab.prefix))
            if not_single < 1_000 and system.settled_holder() is None:
                not_single += 1
            dead = [n.name for n in lab.nodes if not system.agent_running(n)]
            if dead:
                agents_died = dead
                break
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        t1 = time.time()
        mon.stop()
        doc["window_s"] = round(t1 - t0, 1)
        doc["status_end"] = {n.name: status(n) for n in lab.nodes}
        events = {n.name: log_events(n, t0, t1) for n in lab.nodes}
        trans = [[round(t - t0, 3), n, p] for t, n, p in mon.transitions() if t >= t0]
        terms_start = [s.get("term") for s in doc["status_start"].values() if "term" in s]
        terms_end = [s.get("term") for s in doc["status_end"].values() if "term" in s]
        doc.update({
            "leader_changes": sum(len(e["became_leader"]) for e in events.values()),
            "term_start": max(terms_start) if terms_start else None,
            "term_end": max(terms_end) if terms_end else None,
            "holder_start": holder_start,
            "holder_end": next((s["node"] for s in doc["status_end"].values()
                                if s.get("role") == "leader"), None),
            "lease_losses": sum(len(e["lease_lost"]) for e in events.values()),
            "vip_transitions": trans,
            "overlap_ms": round(mon.overlap_s(until=t1) * 1000, 1),
            "unsettled_samples": not_single, "samples": samples,
            "agents_died": agents_died,
            "other_labs_seen": sorted(other_labs),
            "log_events": events,
        })
    finally:
        if mon is not None:
            mon.stop()
        log(f"idle: tearing down {len(lab.down())} namespaces")
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long to watch (10)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    a = p.parse_args(argv)
    if not 0 < a.minutes <= 24 * 60:
        p.error("--minutes must be in (0, 1440]")
    interrupt_on_sigterm()
    doc: dict[str, Any] = {"command": " ".join([".venv/bin/python", *sys.argv]),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "machine": machine()}
    try:
        doc.update(run(a.minutes))
    except KeyboardInterrupt:
        log("interrupted: lab torn down")
        doc["interrupted"] = True
    except FAILURES as e:
        log(f"failed: {e}")
        doc["error"] = str(e)
    if "leader_changes" in doc:
        log(f"idle {doc['window_s']} s: {doc['leader_changes']} leader change(s), term "
            f"{doc['term_start']} -> {doc['term_end']}, holder {doc['holder_start']} -> "
            f"{doc['holder_end']}, {doc['lease_losses']} lease loss(es), "
            f"{len(doc['vip_transitions'])} VIP transition(s), overlap {doc['overlap_ms']} ms")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return 0 if "leader_changes" in doc else 1


if __name__ == "__main__":
    sys.exit(main())
