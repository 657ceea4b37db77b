"""Idle cost and idle stability: a 3-server lab left alone, keepalived side by side.

    .venv/bin/python bench/idle.py [--mode cpu|stability|both] [--json-out FILE]
        cpu:       [--warmup 10] [--windows 3] [--cpu-seconds 10] [--threads] [--no-balance]
                   [--peer auto|none]
        stability: [--minutes 10]

Mode cpu (the default): what an idle agent costs. A 3-server lab comes up and settles
(balanced, as in production, unless --no-balance), is left alone for --warmup seconds, then
for --windows windows of --cpu-seconds each every agent (the `hacluster.daemon` process of
each server namespace, the one Lab started; its children are not counted, only listed) is
read from /proc: CPU % of one CPU from schedstat (ns summed over its threads: the main
figure) and from /proc/PID/stat utime+stime (clock ticks), RSS (VmRSS) and threads. Per
agent the median over windows, for the cluster the median over agents. Then, in the same
lab and the same run, the hacluster agents are stopped and keepalived (the tuned variant of
bench/failover.py: VRRPv3, advert_int 0.1, unicast peers) runs one instance per server
namespace and is measured the same way; a node's keepalived is its parent and VRRP child
together (CPU and RSS summed). The ratio is hacluster CPU per agent / keepalived CPU per
node. --threads adds a per-thread breakdown (TID, comm, CPU %) of the VIP holder's agent
over the last window. Without keepalived installed the bench still runs and says
"keepalived: not installed" (null figures).

Mode stability (the default when --minutes is given without --mode): how often does
leadership (or the VIP) move? A healthy idle cluster should keep one leader and one VIP
holder for ever: every leader change is a client outage that no fault caused. The lab comes
up, settles, and is then watched without traffic for --minutes:

* each agent's Raft term from `hacluster status --agent --json` at the start and at the end,
* every `raft role ... -> leader` and `lease lost` line in the agent logs during the window,
* every gain/loss of the VIP in any server's kernel (address events), and any overlap.

Mode both runs cpu, then stability, each in its own lab. Prints a table on stderr and the
JSON document as the last line of stdout (and to --json-out). Benchmarks are programs, not
asserts: nothing here fails on a high figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _labkit import (
    FAILURES,
    PYTHON,
    BenchError,
    emit,
    foreign_labs,
    interrupt_on_sigterm,
    log,
    machine,
    start_monitor,
)
from _proc import (
    Sample,
    combine,
    cpu_table,
    parse_status,
    ratio,
    read_sample,
    summarize,
    thread_breakdown,
    window,
)
from _systems import HaclusterSystem, KeepalivedSystem, System

from hacluster.lab.lab import Lab, LabNode, cli_argv, random_prefix
from hacluster.lab.netns import netns_pids

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


def run_stability(minutes: float) -> dict[str, Any]:
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



# ------------------------------------------------------------------------------ cpu mode


def agent_pid(node: LabNode) -> int:
    """The pid of the hacluster agent Lab started in node's namespace (`ip netns exec` execs
    its command, so the Popen's pid is the daemon itself: checked on its command line)."""
    if node.agent is None or node.agent.poll() is not None:
        raise BenchError(f"{node.name}: agent not running")
    pid = node.agent.pid
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError as e:
        raise BenchError(f"{node.name}: agent pid {pid} gone: {e}") from None
    if b"hacluster.daemon" not in argv:
        raise BenchError(f"{node.name}: pid {pid} is not the agent: {argv[:4]}")
    return pid


def children(ns: str, pid: int) -> dict[int, str]:
    """pid -> comm of pid's child processes in namespace ns (conntrackd in a balanced lab)."""
    out = {}
    for c in netns_pids(ns)[:1000]:
        try:
            if parse_status(Path(f"/proc/{c}/status").read_text())["ppid"] == pid:
                out[c] = Path(f"/proc/{c}/comm").read_text().strip()
        except OSError:
            continue
    return out


def _sample_all(pids: list[int], comms_of: int | None, side: list[int]) -> dict[int, Sample]:
    """A Sample of every pid (one that is gone fails the measurement) and of every side pid
    still there (a side process may come and go: its node's side figure then lacks it)."""
    out = {}
    for pid in pids:
        try:
            out[pid] = read_sample(pid, time.monotonic(), comms=pid == comms_of)
        except OSError as e:
            raise BenchError(f"pid {pid} vanished during the measurement: {e}") from None
    for pid in side:
        try:
            out[pid] = read_sample(pid, time.monotonic())
        except OSError:
            continue
    return out


def measure(system: System, pids: dict[str, list[int]], warmup: float, windows: int,
            seconds: float, threads_of: int | None = None,
            side: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """--windows windows of --cpu-seconds after --warmup s; per node the figures of its
    processes together. A process that is gone, or a VIP that moved, is recorded. `side`:
    other processes per node measured in the same windows but reported apart ("side")."""
    holder = system.settled_holder()
    log(f"{system.name}: settled on {holder}; warming up {warmup:g} s")
    time.sleep(warmup)
    side = {n: ps for n, ps in (side or {}).items() if ps}
    per_node: dict[str, list[dict[str, Any]]] = {n: [] for n in pids}
    per_side: dict[str, list[dict[str, Any]]] = {n: [] for n in side}
    main = [p for ps in pids.values() for p in ps]
    extra = [p for ps in side.values() for p in ps]
    loads, labs_seen, breakdown = [], set(), None
    for i in range(windows):
        last = i == windows - 1
        before = _sample_all(main, threads_of if last else None, extra)
        time.sleep(seconds)
        after = _sample_all(main, threads_of if last else None, extra)
        loads.append([round(x, 2) for x in os.getloadavg()])
        labs_seen.update(foreign_labs(system.lab.prefix))
        for node, plist in pids.items():
            per_node[node].append(combine([window(before[p], after[p]) for p in plist]))
        for node, plist in side.items():
            both = [window(before[p], after[p]) for p in plist if p in before and p in after]
            if both:
                per_side[node].append(combine(both))
        if last and threads_of is not None:
            breakdown = thread_breakdown(before[threads_of], after[threads_of])
        log(f"{system.name}: window {i + 1}/{windows}: CPU % "
            + ", ".join(f"{n} {w[-1]['cpu_pct']:.2f}" for n, w in per_node.items()))
    out = summarize(per_node)
    out.update({"installed": True, "holder_start": holder,
                "holder_end": system.settled_holder(),
                "windows": per_node, "loadavg_per_window": loads,
                "other_labs_seen": sorted(labs_seen)})
    if breakdown is not None:
        out["threads_breakdown"] = breakdown
    if any(per_side.values()):
        out["side"] = summarize({n: ws for n, ws in per_side.items() if ws})
    return out


def run_cpu(doc: dict[str, Any], warmup: float, windows: int, seconds: float, threads: bool,
            balance: bool, with_ka: bool) -> None:
    """Fill doc (so that what was measured survives a later failure) with both systems."""
    lab = Lab(random_prefix("bi"), 3, balance=balance)
    log(f"idle cpu: lab {lab.prefix} ({lab.net}.0/24, VIP {lab.vip}), balance={balance}, "
        f"{windows} x {seconds:g} s after {warmup:g} s")
    doc.update({"lab": lab.prefix, "balance": balance, "warmup_s": warmup, "windows": windows,
                "cpu_seconds": seconds, "other_labs_at_start": foreign_labs(lab.prefix)})
    systems = doc.setdefault("systems", {})
    ka: KeepalivedSystem | None = None
    try:
        hc = HaclusterSystem(lab)
        hc.up()
        holder = hc.settle(60)
        pids = {n.name: [agent_pid(n)] for n in lab.nodes}
        threads_of = pids[holder][0] if threads else None
        kids = {n.name: children(n.netns, pids[n.name][0]) for n in lab.nodes}
        r = measure(hc, pids, warmup, windows, seconds, threads_of,
                    side={n: sorted(k) for n, k in kids.items()})
        r["pids"] = pids
        # not in the agent's figures (the brief: the agent alone); their cost is in "side"
        r["children"] = {n: [f"{p} {c}" for p, c in sorted(k.items())] for n, k in kids.items()}
        if threads_of is not None:
            r["threads_of"] = {"node": holder, "pid": threads_of}
        systems["hacluster"] = r
        if with_ka:
            try:
                ka = KeepalivedSystem(lab, "tuned")
                ka.up()  # stops the hacluster agents first
                ka.settle(30)
                kpids = {n.name: sorted(ka.pids(n)) for n in lab.nodes}
                r = measure(ka, kpids, warmup, windows, seconds)
                r["pids"] = kpids
                r["variant"] = "tuned: VRRPv3, advert_int 0.1, unicast peers, nopreempt"
                systems["keepalived"] = r
            except FAILURES as e:
                log(f"keepalived: failed: {e}")
                systems["keepalived"] = {"installed": True, "error": str(e)}
    finally:
        if ka is not None:
            ka.stop()
        log(f"idle cpu: tearing down {len(lab.down())} namespaces")


def not_installed() -> dict[str, Any]:
    return {"installed": False, "nodes": {}, "cpu_pct_median": None, "cpu_pct_max_node": None,
            "cpu_pct_ticks_median": None, "rss_mb_median": None, "threads_median": None}


def cpu_ratios(doc: dict[str, Any]) -> dict[str, float | None]:
    hc, ka = doc["systems"].get("hacluster") or {}, doc["systems"].get("keepalived") or {}
    return {"cpu": ratio(hc.get("cpu_pct_median"), ka.get("cpu_pct_median")),
            # the busiest node of each: the Raft leader / the VRRP master, as a rule
            "cpu_busiest_node": ratio(hc.get("cpu_pct_max_node"), ka.get("cpu_pct_max_node")),
            "rss": ratio(hc.get("rss_mb_median"), ka.get("rss_mb_median"))}


def side_line(hc: dict[str, Any]) -> str:
    comms = sorted({c.split()[1] for cs in hc["children"].values() for c in cs})
    side = hc["side"]
    return (f"not in hacluster's figures: its agents' children ({', '.join(comms)}), per node "
            f"CPU % {side['cpu_pct_median']}, RSS MB {side['rss_mb_median']} (medians)")


def threads_table(r: dict[str, Any], top: int = 15) -> str:
    who = r["threads_of"]
    lines = [f"threads of {who['node']}'s agent (pid {who['pid']}), last window, busiest first:",
             f"{'tid':>8} {'comm':16} {'CPU %':>7}"]
    for row in r["threads_breakdown"][:top]:
        lines.append(f"{row['tid']:>8} {row['comm']:16} {row['cpu_pct']:>7.2f}"
                     + (" (new)" if row["new"] else ""))
    rest = r["threads_breakdown"][top:]
    if rest:
        lines.append(f"... {len(rest)} more, {sum(x['cpu_pct'] for x in rest):.2f} % together")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("cpu", "stability", "both"),
                   help="cpu (default), stability (default if --minutes is given), both")
    p.add_argument("--minutes", type=float, help="stability: how long to watch (10)")
    p.add_argument("--warmup", type=float, default=10.0, help="cpu: settling s (10)")
    p.add_argument("--windows", type=int, default=3, help="cpu: measurement windows (3)")
    p.add_argument("--cpu-seconds", type=float, default=10.0, help="cpu: s per window (10)")
    p.add_argument("--threads", action="store_true",
                   help="cpu: per-thread CPU of the holder's agent over the last window")
    p.add_argument("--no-balance", action="store_true",
                   help="cpu: a lab without the balancing table (the VIP alone)")
    p.add_argument("--peer", choices=("auto", "none"), default="auto",
                   help="cpu: also measure keepalived in the same lab (auto = if installed)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    a = p.parse_args(argv)
    mode = a.mode or ("stability" if a.minutes is not None else "cpu")
    minutes = 10.0 if a.minutes is None else a.minutes
    if not 0 < minutes <= 24 * 60:
        p.error("--minutes must be in (0, 1440]")
    if not 1 <= a.windows <= 100 or not 1 <= a.cpu_seconds <= 600 or not 0 <= a.warmup <= 600:
        p.error("--windows 1-100, --cpu-seconds 1-600, --warmup 0-600")
    have_ka = shutil.which("keepalived") is not None
    interrupt_on_sigterm()
    doc: dict[str, Any] = {"benchmark": "idle", "mode": mode,
                           "command": " ".join([".venv/bin/python", *sys.argv]),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "machine": machine()}
    failed = False
    try:
        if mode in ("cpu", "both"):
            doc["cpu"] = {"keepalived_installed": have_ka, "systems": {}}
            if not have_ka:
                doc["cpu"]["systems"]["keepalived"] = not_installed()
            try:
                run_cpu(doc["cpu"], a.warmup, a.windows, a.cpu_seconds, a.threads,
                        not a.no_balance, a.peer == "auto" and have_ka)
            except FAILURES as e:
                log(f"cpu: failed: {e}")
                doc["cpu"]["error"] = str(e)
                failed = True
        if mode in ("stability", "both"):
            try:
                doc.update(run_stability(minutes))
            except FAILURES as e:
                log(f"stability: failed: {e}")
                doc["error"] = str(e)
                failed = True
    except KeyboardInterrupt:
        log("interrupted: lab torn down")
        doc["interrupted"] = True
    cpu = doc.get("cpu", {})
    if cpu.get("systems"):
        cpu["ratios"] = cpu_ratios(cpu)
        shown = {k: cpu["systems"][k] for k in ("hacluster", "keepalived") if k in cpu["systems"]}
        print(cpu_table(shown, cpu["ratios"]["cpu"]), file=sys.stderr)
        hc = cpu["systems"].get("hacluster") or {}
        if hc.get("side"):
            print(side_line(hc), file=sys.stderr)
        if hc.get("threads_breakdown"):
            print(threads_table(hc), file=sys.stderr)
    if "leader_changes" in doc:
        log(f"idle {doc['window_s']} s: {doc['leader_changes']} leader change(s), term "
            f"{doc['term_start']} -> {doc['term_end']}, holder {doc['holder_start']} -> "
            f"{doc['holder_end']}, {doc['lease_losses']} lease loss(es), "
            f"{len(doc['vip_transitions'])} VIP transition(s), overlap {doc['overlap_ms']} ms")
    return emit(doc, a.json_out) or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
