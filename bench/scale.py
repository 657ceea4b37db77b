"""Scale benchmark: what one agent costs and how fast failures are seen, at 5, 10 and 25 servers.

    .venv/bin/python bench/scale.py [--sizes 5,10,25] [--idle 20] [--warmup 5] [--samples 5]
                                    [--voters 3] [--settle auto] [--logs-dir DIR]
                                    [--json-out FILE]

For each size N, one balanced namespace lab (hacluster.lab.Lab) with N servers of which the
first --voters vote in Raft and the others are non-voting members (`hacluster lab up
--voters K`). Each size in turn, alone (its lab is down before the next one comes up):

  settle     the lab is up (one VIP holder) and every agent's metrics say: N members
             alive, one leader, and (the leader's) every server's backend committed up;
             within --settle seconds (auto: max(60, 5 N)) or the size "did not settle"
             (what was seen is recorded) and the bench goes on with the next size
  idle       --warmup seconds (start-up's own work settles), then --idle seconds without
             anything asked of the cluster (nothing scrapes the agents meanwhile). Per agent:
             CPU % of one CPU (the sum of its threads' /proc/PID/task/*/schedstat run time;
             /proc/PID/stat utime+stime too, which also counts threads that ended), RSS
             (VmRSS), and bytes per second on its eth0 counted by nftables counters in the
             server's namespace (table inet hcscale, input/output hooks, no verdicts) by TCP
             port: gossip = the gRPC port 7101 (gossip and the admin API share it; nothing
             calls the admin API during the window), raft = 7100, all = every packet. The
             agents export no gossip byte counter of their own; IP bytes (headers included,
             Ethernet's not)
  commit     --samples `hacluster drain web/nX` + `undrain` calls to the leader, timed in one
             process in the client namespace (bench/_scale_probe.py): each returns once the
             change is committed through Raft and applied by the leader
  member     power-off (Lab.power_off: cable out, every process SIGKILLed, RAM addresses
             lost) of the last server, a non-voter whose backend serves every service.
             dead: per other agent, its log's `NODE is dead` line (ms stamps) from the
             fault; "everywhere" is the slowest agent. down: the leader's log's commit of
             `NODE/web=down` (every service's backend on it follows that check)
  holder     power-off of the VIP holder (the Raft leader, a voter): the time until another
             server's kernel holds the VIP (ip monitor address events), when the new leader
             logged its win, and its commit of the old leader's `NODE/web=down`

Agent log lines at WARNING or above are grouped by message (digits folded) and counted
before and after the first fault; idle false alarms (suspect/dead/leader change/lease loss
lines between settle and the first fault) are counted. Prints a table on stderr and the
JSON document as the last line of stdout (and to --json-out). Benchmarks are programs, not
asserts: nothing here fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _labkit import (  # noqa: E402
    FAILURES,
    PYTHON,
    emit,
    interrupt_on_sigterm,
    log,
    log_matches,
    machine,
    start_monitor,
    wait_quiet,
)

from hacluster.lab.lab import GRPC_PORT, METRICS_PORT, RAFT_PORT, Lab, LabNode, random_prefix  # noqa: E402
from hacluster.lab.netns import LabError, nft, run  # noqa: E402

BENCH = Path(__file__).resolve().parent
PROBE = BENCH / "_scale_probe.py"
COUNTERS = ("gossip_in", "gossip_out", "raft_in", "raft_out", "all_in", "all_out")
FAULT_WAIT_S = 30.0  # a verdict not seen within this is recorded as missing
POLL_S = 0.1
CLOCK_TICK = 100  # os.sysconf("SC_CLK_TCK") on Linux


# ------------------------------------------------------------------------ pure helpers


def counting_ruleset(gossip_port: int = GRPC_PORT, raft_port: int = RAFT_PORT) -> str:
    """An nftables table that only counts eth0's bytes by port (no verdict: it filters
    nothing, whatever its priority)."""
    def rules(direction: str, iface: str) -> str:
        return "\n".join(f"    {iface} \"eth0\" tcp {p} {port} counter name {name}_{direction}"
                         for name, port in (("gossip", gossip_port), ("raft", raft_port))
                         for p in ("sport", "dport")) + \
            f"\n    {iface} \"eth0\" counter name all_{direction}"
    counters = "\n".join(f"  counter {c} {{}}" for c in COUNTERS)
    return (f"table inet hcscale {{\n{counters}\n"
            f"  chain i {{\n    type filter hook input priority -300; policy accept;\n"
            f"{rules('in', 'iifname')}\n  }}\n"
            f"  chain o {{\n    type filter hook output priority -300; policy accept;\n"
            f"{rules('out', 'oifname')}\n  }}\n}}\n")


def parse_nft_counters(text: str) -> dict[str, int]:
    """`nft -j list counters table inet hcscale` -> {counter name: bytes}."""
    out = {}
    for item in json.loads(text).get("nftables", []):
        c = item.get("counter")
        if c and c.get("table") == "hcscale":
            out[c["name"]] = int(c["bytes"])
    return out


def parse_schedstat(text: str) -> int:
    """The first field of /proc/PID[/task/TID]/schedstat: nanoseconds on a CPU."""
    return int(text.split()[0])


def parse_stat_ticks(text: str) -> int:
    """utime + stime (clock ticks) of /proc/PID/stat; the command name may hold spaces."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def parse_rss_kb(text: str) -> int | None:
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line (idle and iowait are
    not busy)."""
    fields = [int(x) for x in text.splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - fields[3] - fields[4], total


def busy_pct(a: tuple[int, int], b: tuple[int, int]) -> float | None:
    """The machine's CPU busy % between two parse_proc_stat() readings (100 = every CPU)."""
    return round((b[0] - a[0]) / (b[1] - a[1]) * 100, 1) if b[1] > a[1] else None


def median(xs: list[float | None], digits: int = 1) -> float | None:
    ys = [x for x in xs if x is not None]
    return round(statistics.median(ys), digits) if ys else None


def maximum(xs: list[float | None], digits: int = 1) -> float | None:
    ys = [x for x in xs if x is not None]
    return round(max(ys), digits) if ys else None


_LABELS = re.compile(r'(\w+)="([^"]*)"')


def labels(key: str) -> dict[str, str]:
    return dict(_LABELS.findall(key))


def settle_view(scrapes: dict[str, dict[str, Any]], n: int) -> dict[str, Any]:
    """What the agents' metrics (node name -> a _scale_probe scrape) say about a lab of n
    servers: settled when every agent answers, sees n members alive, exactly one agent
    leads, and the leader has every server's web check committed up."""
    alive: dict[str, float | None] = {}
    leaders, unreachable = [], []
    for name, s in scrapes.items():
        if not s.get("ok"):
            unreachable.append(name)
            continue
        vals = s["values"]
        alive[name] = vals.get('hacluster_members{state="alive"}')
        if vals.get("hacluster_leader") == 1.0:
            leaders.append(name)
    committed_up: list[str] = []
    if len(leaders) == 1:
        for key, v in scrapes[leaders[0]]["values"].items():
            lb = labels(key)
            if key.startswith("hacluster_check_committed_up{") and lb.get("check") == "web" and v == 1.0:
                committed_up.append(lb.get("node", "?"))
    short = sorted(k for k, v in alive.items() if v != n)
    settled = (not unreachable and not short and len(leaders) == 1 and len(committed_up) == n)
    return {"settled": settled, "leaders": sorted(leaders), "unreachable": sorted(unreachable),
            "alive_short": {k: alive[k] for k in short},
            "committed_up": len(committed_up)}


def verdict_times(per_agent: dict[str, float | None], t0: float) -> dict[str, Any]:
    """Per agent wall time of a verdict (None: not seen) -> ms from t0: the slowest (the
    verdict is everywhere), the median, and the agents that never said it."""
    ms = {k: round((t - t0) * 1000, 1) for k, t in per_agent.items() if t is not None}
    missing = sorted(k for k, t in per_agent.items() if t is None)
    return {"everywhere_ms": None if missing or not ms else max(ms.values()),
            "median_ms": median(list(ms.values())), "first_ms": min(ms.values(), default=None),
            "missing": missing, "per_agent_ms": ms}


_PROBLEM = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (WARNING|ERROR|CRITICAL) (\S+): (.*)$")


def problem_key(level: str, logger: str, message: str) -> str:
    """A log line's message with its variable parts folded (numbers, node names, addresses)."""
    msg = re.sub(r"\b\d+(\.\d+)*\b", "#", message)
    msg = re.sub(r"\bn#\b|\bn\d+\b", "nX", msg)
    return f"{level} {logger}: {msg[:160]}"


def group_problems(lines: list[tuple[float, str, str]], split_at: float | None) -> list[dict[str, Any]]:
    """(wall time, node, log line) of WARNING+ lines -> groups by problem_key, most frequent
    first: how many before and after `split_at` (the first fault), on which nodes, an example."""
    groups: dict[str, dict[str, Any]] = {}
    for t, node, line in lines:
        m = _PROBLEM.match(line)
        if not m:
            continue
        g = groups.setdefault(problem_key(m.group(2), m.group(3), m.group(4)), {
            "before_faults": 0, "after_faults": 0, "nodes": set(), "example": line[:400]})
        g["after_faults" if split_at is not None and t >= split_at else "before_faults"] += 1
        g["nodes"].add(node)
    out = [{"key": k, **g, "nodes": sorted(g["nodes"], key=lambda s: (len(s), s))}
           for k, g in groups.items()]
    return sorted(out, key=lambda g: -(g["before_faults"] + g["after_faults"]))


def fmt(v: Any, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float | int) else str(v)


def unsettled_words(r: dict[str, Any]) -> str:
    """What a size that did not settle showed, in one line."""
    seen = r.get("seen") or {}
    words = []
    if "holders" in r:
        words.append(f"VIP holders {r['holders']}")
    if "leaders" in seen:
        short = seen.get("alive_short", {})
        words += [f"leaders {seen['leaders']}",
                  f"{len(short)} agent(s) see fewer than {r['n']} alive"
                  + (f" (fewest {min(v or 0 for v in short.values()):g})" if short else ""),
                  f"{seen.get('committed_up', 0)}/{r['n']} backends committed up",
                  f"unreachable {seen.get('unreachable')}"]
    elif seen.get("probe_error"):
        words.append(f"metrics: {seen['probe_error'][:80]}")
    if not words and r.get("error"):
        words.append(r["error"][:150])
    return "; ".join(words)


def table(results: list[dict[str, Any]]) -> list[str]:
    """The stderr table: one line per size."""
    head = (f"{'N':>3} {'voters':>6} {'settle s':>8} {'CPU % med/max':>14} {'RSS MB':>7} "
            f"{'gossip B/s out/in+out':>22} {'raft B/s ldr out':>16} {'commit ms adm/ldr':>17} "
            f"{'dead everywhere ms':>18} {'down ms':>8} {'VIP claim ms':>12} {'idle alarms':>11}")
    lines = [head]
    for r in results:
        if not r.get("settled"):
            lines.append(f"{r['n']:>3} {r.get('voters', '-'):>6} did not settle: "
                         f"{unsettled_words(r)}")
            continue
        i, c, m, h = r.get("idle", {}), r.get("commit", {}), r.get("member", {}), r.get("holder", {})
        ldr = c.get("leader_proposals") or {}
        lines.append(
            f"{r['n']:>3} {r['voters']:>6} {fmt(r.get('settle_s'), 1):>8} "
            f"{fmt(i.get('cpu_pct_median'), 2) + ' / ' + fmt(i.get('cpu_pct_max'), 2):>14} "
            f"{fmt(i.get('rss_mb_median'), 1):>7} "
            f"{fmt(i.get('gossip_out_Bps_median')) + ' / ' + fmt(i.get('gossip_inout_Bps_median')):>22} "
            f"{fmt(i.get('raft_out_Bps_leader')):>16} "
            f"{fmt(c.get('median_ms'), 1) + ' / ' + fmt(ldr.get('mean_ms'), 1):>17} "
            f"{fmt(m.get('dead', {}).get('everywhere_ms')):>18} {fmt(m.get('down_ms')):>8} "
            f"{fmt(h.get('claim_ms')):>12} {fmt(r.get('idle_alarms', {}).get('total')):>11}")
    return lines


# --------------------------------------------------------------------------- lab reads


def probe(lab: Lab, *args: str, timeout: float = 60) -> dict[str, Any]:
    """bench/_scale_probe.py run in the lab's client namespace: its JSON line."""
    p = subprocess.run(["ip", "netns", "exec", lab.client_ns, PYTHON, str(PROBE), *args],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise LabError(f"probe {args[0]} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def scrape_all(lab: Lab, nodes: list[LabNode]) -> dict[str, dict[str, Any]]:
    urls = {f"http://{n.ip}:{METRICS_PORT}/metrics": n.name for n in nodes}
    return {urls[u]: s for u, s in probe(lab, "metrics", *urls).items()}


def agent_sample(node: LabNode) -> dict[str, Any]:
    """The agent's CPU time (threads' schedstat sum, ns; stat ticks), RSS and nft byte
    counters, stamped (monotonic)."""
    assert node.agent is not None
    pid = node.agent.pid
    cpu_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu_ns += parse_schedstat((task / "schedstat").read_text())
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    counters = parse_nft_counters(run("ip", "netns", "exec", node.netns, "nft", "-j", "list",
                                      "counters", "table", "inet", "hcscale"))
    return {"t": time.monotonic(), "cpu_ns": cpu_ns,
            "ticks": parse_stat_ticks(Path(f"/proc/{pid}/stat").read_text()),
            "rss_kb": parse_rss_kb(Path(f"/proc/{pid}/status").read_text()), "bytes": counters}


def idle_figures(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                 leader: str | None) -> dict[str, Any]:
    """Per-agent rates over the idle window from two agent_sample()s per agent."""
    per: dict[str, dict[str, Any]] = {}
    for name, a in before.items():
        b = after[name]
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        rate = {c: round((b["bytes"].get(c, 0) - a["bytes"].get(c, 0)) / dt) for c in COUNTERS}
        per[name] = {"cpu_pct": round((b["cpu_ns"] - a["cpu_ns"]) / dt / 1e7, 3),
                     "cpu_pct_stat": round((b["ticks"] - a["ticks"]) / CLOCK_TICK / dt * 100, 3),
                     "rss_mb": None if b["rss_kb"] is None else round(b["rss_kb"] / 1024, 1),
                     "window_s": round(dt, 2),
                     **{f"{c}_Bps": v for c, v in rate.items()},
                     "gossip_inout_Bps": rate["gossip_in"] + rate["gossip_out"]}
    col = lambda k: [p[k] for p in per.values()]  # noqa: E731
    return {"cpu_pct_median": median(col("cpu_pct"), 3), "cpu_pct_max": maximum(col("cpu_pct"), 3),
            "cpu_pct_stat_median": median(col("cpu_pct_stat"), 3),
            "rss_mb_median": median(col("rss_mb")), "rss_mb_max": maximum(col("rss_mb")),
            "gossip_out_Bps_median": median(col("gossip_out_Bps"), 0),
            "gossip_inout_Bps_median": median(col("gossip_inout_Bps"), 0),
            "gossip_out_Bps_max": maximum(col("gossip_out_Bps"), 0),
            "raft_out_Bps_leader": per.get(leader or "", {}).get("raft_out_Bps"),
            "raft_in_Bps_median": median(col("raft_in_Bps"), 0),
            "all_out_Bps_median": median(col("all_out_Bps"), 0),
            "per_agent": per}


def first_line(node: LabNode, pattern: str, since: float) -> float | None:
    hits = log_matches(node.log, re.compile(pattern), since)
    return hits[0][0] if hits else None


# ------------------------------------------------------------------------------ phases


def settle(lab: Lab, deadline: float) -> tuple[bool, dict[str, Any]]:
    """Poll the agents' metrics (about once a second) until settle_view says settled or the
    monotonic deadline passes; (settled, the last view)."""
    view: dict[str, Any] = {}
    for _ in range(1000):
        try:
            view = settle_view(scrape_all(lab, lab.nodes), lab.n)
        except (LabError, subprocess.TimeoutExpired, ValueError) as e:
            view = {"settled": False, "probe_error": str(e)[:300]}
        if view["settled"] or time.monotonic() > deadline:
            return view["settled"], view
        time.sleep(1.0)
    return False, view


def commit_latency(lab: Lab, leader: LabNode, samples: int) -> dict[str, Any]:
    """The admin calls' times (each on a fresh TLS channel, as the CLI makes them), and the
    leader's own figure over the same span: hacluster_raft_commit_latency_seconds, from its
    proposals (each drain makes it propose a table generation) to their commit."""
    # without the balancing table there is no service: the member form commits its flag
    target = f"web/{lab.nodes[-2].name}" if lab.balance else lab.nodes[-2].name
    hist0 = scrape_all(lab, [leader])[leader.name]
    got = probe(lab, "commits", "--config", str(leader.config), "--target", target,
                "--samples", str(samples), timeout=30 + 25 * samples)
    hist1 = scrape_all(lab, [leader])[leader.name]
    all_ms = got["drain_ms"] + got["undrain_ms"]
    return {"target": target, "via": leader.name, "median_ms": median(all_ms),
            "max_ms": maximum(all_ms), "leader_proposals": histogram_mean(hist0, hist1), **got}


def histogram_mean(a: dict[str, Any], b: dict[str, Any],
                   name: str = "hacluster_raft_commit_latency_seconds") -> dict[str, Any]:
    """Observations and their mean (ms) of a histogram between two scrapes."""
    if not (a.get("ok") and b.get("ok")):
        return {"count": None, "mean_ms": None}
    va, vb = a["values"], b["values"]
    count = vb.get(f"{name}_count", 0.0) - va.get(f"{name}_count", 0.0)
    total = vb.get(f"{name}_sum", 0.0) - va.get(f"{name}_sum", 0.0)
    return {"count": int(count), "mean_ms": round(total / count * 1000, 1) if count > 0 else None}


def power_off_member(lab: Lab, victim: LabNode, leader: LabNode) -> dict[str, Any]:
    others = [n for n in lab.nodes if n is not victim and n.agent and n.agent.poll() is None]
    dead_re = rf"\b{victim.name} is dead\b"
    down_re = rf"\b{victim.name}/web=down\b"
    t0 = time.time()
    lab.power_off(victim)
    took = round((time.time() - t0) * 1000, 1)
    end = time.monotonic() + FAULT_WAIT_S
    dead: dict[str, float | None] = {}
    down = None
    for _ in range(int(FAULT_WAIT_S / POLL_S) + 10):
        dead = {n.name: dead.get(n.name) or first_line(n, dead_re, t0) for n in others}
        down = down or first_line(leader, down_re, t0)
        if (down is not None and all(dead.values())) or time.monotonic() > end:
            break
        time.sleep(POLL_S)
    suspect = {n.name: first_line(n, rf"\b{victim.name} is suspect\b", t0) for n in others}
    return {"victim": victim.name, "voter": victim.voter, "leader": leader.name,
            "power_off_call_ms": took, "dead": verdict_times(dead, t0),
            "suspect": verdict_times(suspect, t0),
            "down_ms": None if down is None else round((down - t0) * 1000, 1)}


def power_off_holder(lab: Lab, holder: LabNode) -> dict[str, Any]:
    mon = start_monitor(lab)
    try:
        t0 = time.time()
        lab.power_off(holder)
        end = time.monotonic() + FAULT_WAIT_S
        claim = None
        for _ in range(int(FAULT_WAIT_S / 0.05) + 10):
            claim = next(((t, n) for t, n, held in mon.transitions()
                          if held and n != holder.name and t >= t0), None)
            if claim or time.monotonic() > end:
                break
            time.sleep(0.05)
        overlap_ms = round(mon.overlap_s(until=time.time()) * 1000, 1)
    finally:
        mon.stop()
    out: dict[str, Any] = {"victim": holder.name, "claim_ms": None, "new_holder": None,
                           "overlap_ms": overlap_ms}
    if claim is None:
        return out
    new = lab.node(claim[1])
    won = first_line(new, r"raft role \w+ -> leader", t0)
    down = None
    for _ in range(int(15 / POLL_S)):
        down = first_line(new, rf"\b{holder.name}/web=down\b", t0)
        if down is not None:
            break
        time.sleep(POLL_S)
    ms = lambda t: None if t is None else round((t - t0) * 1000, 1)  # noqa: E731
    out.update(claim_ms=ms(claim[0]), new_holder=new.name, elected_ms=ms(won), down_ms=ms(down))
    return out


def log_review(lab: Lab, since: float, idle_from: float | None, faults_at: float | None) -> dict[str, Any]:
    """WARNING+ lines of every agent log grouped; idle false alarms between idle_from and
    the first fault."""
    problems: list[tuple[float, str, str]] = []
    alarms: dict[str, int] = {"suspect": 0, "dead": 0, "leader": 0, "lease_lost": 0}
    alarm_re = {"suspect": r" is suspect ", "dead": r" is dead ", "leader": r"raft role \w+ -> leader",
                "lease_lost": r"lease lost"}
    for n in lab.nodes:
        for t, m in log_matches(n.log, re.compile(r"^.* (WARNING|ERROR|CRITICAL) .*$"), since):
            problems.append((t, n.name, m.group(0)))
        if idle_from is not None:
            for key, pat in alarm_re.items():
                alarms[key] += len(log_matches(n.log, re.compile(pat), idle_from,
                                               faults_at or float("inf")))
    return {"problems": group_problems(problems, faults_at)[:25],
            "idle_alarms": {**alarms, "total": sum(alarms.values())}}


def machine_cpu() -> tuple[int, int]:
    return parse_proc_stat(Path("/proc/stat").read_text())


class KeptLab(Lab):
    """A Lab whose down() does nothing while `keep` is set: Lab.up() tears a lab that did
    not settle down at once, and the agents' logs (what was seen) would go with it."""

    keep = True

    def down(self) -> list[str]:
        return [] if self.keep else super().down()


def one_size(n: int, voters: int, idle_s: float, samples: int, settle_s: float,
             logs_dir: Path | None, warmup_s: float = 5.0, balance: bool = True) -> dict[str, Any]:
    lab = KeptLab(random_prefix("bs"), n, python=PYTHON, voters=min(voters, n), balance=balance)
    r: dict[str, Any] = {"n": n, "voters": min(voters, n), "lab": lab.prefix, "settled": False,
                         "balance": balance}
    t_start, t_mono, cpu0 = time.time(), time.monotonic(), machine_cpu()
    deadline = t_mono + settle_s
    idle_from = faults_at = None
    log(f"N={n}: lab {lab.prefix} up ({r['voters']} voters, settle within {settle_s:.0f} s)")
    try:
        try:
            lab.up(wait_s=settle_s)
        except LabError as e:  # the lab is kept (KeptLab): what its agents say
            r["error"] = "no single VIP holder: " + str(e)[-1500:]
            r["holders"] = lab.holders()
            r["seen"] = settle(lab, 0)[1]
            r["machine_busy_pct_settle"] = busy_pct(cpu0, machine_cpu())
            log(f"N={n}: did not settle within {settle_s:.0f} s: holders {r['holders']}, "
                f"{r['seen']}")
            return r
        r["up_s"] = round(time.monotonic() - t_mono, 1)
        for node in lab.nodes:
            nft(node.netns, counting_ruleset())
        settled, view = settle(lab, deadline)
        r["seen"] = view
        r["machine_busy_pct_settle"] = busy_pct(cpu0, machine_cpu())
        if not settled:
            log(f"N={n}: did not settle within {settle_s:.0f} s: {view}")
            return r
        r.update(settled=True, settle_s=round(time.monotonic() - t_mono, 1))
        leader = lab.node(view["leaders"][0])
        log(f"N={n}: settled after {r['settle_s']} s, leader {leader.name}; idle {idle_s:g} s "
            f"after {warmup_s:g} s")
        idle_from = time.time()  # false alarms are counted from here
        time.sleep(warmup_s)  # start-up's own work (first checks, commits) out of the window
        cpu1, load1 = machine_cpu(), os.getloadavg()
        before = {x.name: agent_sample(x) for x in lab.nodes}
        time.sleep(idle_s)  # the measuring window itself, not a wait for a condition
        after = {x.name: agent_sample(x) for x in lab.nodes}
        r["idle"] = idle_figures(before, after, leader.name)
        r["idle"].update(machine_busy_pct=busy_pct(cpu1, machine_cpu()),
                         loadavg_1m_before_after=[load1[0], os.getloadavg()[0]])
        log(f"N={n}: idle {r['idle']['cpu_pct_median']} % CPU, "
            f"gossip {r['idle']['gossip_out_Bps_median']} B/s out; {samples} commit pairs")
        r["commit"] = commit_latency(lab, leader, samples)
        log(f"N={n}: commit median {r['commit']['median_ms']} ms; power-off of {lab.nodes[-1].name}")
        faults_at = time.time()
        r["member"] = power_off_member(lab, lab.nodes[-1], leader)
        log(f"N={n}: member: dead everywhere {r['member']['dead']['everywhere_ms']} ms, down "
            f"{r['member']['down_ms']} ms; power-off of the holder")
        holder = lab.holders()
        r["holder"] = power_off_holder(lab, lab.node(holder[0]) if holder else leader)
        log(f"N={n}: holder: VIP claimed after {r['holder']['claim_ms']} ms by "
            f"{r['holder']['new_holder']}")
    except FAILURES + (LabError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as e:
        r["error"] = f"{type(e).__name__}: {str(e)[-2000:]}"
        log(f"N={n}: failed: {r['error'][:300]}")
    finally:
        if lab.dir.exists():
            r.update(log_review(lab, t_start, idle_from, faults_at))
            if logs_dir is not None:
                for x in lab.nodes:
                    dst = logs_dir / lab.prefix / f"{x.name}.log"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if x.log.exists():
                        shutil.copyfile(x.log, dst)
        lab.keep = False
        log(f"N={n}: tearing down {len(lab.down())} namespaces")
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="5,10,25", help="server counts, 4-25 each (5,10,25)")
    p.add_argument("--voters", type=int, default=3, choices=range(1, 8), metavar="1-7")
    p.add_argument("--idle", type=float, default=20.0, help="idle window, seconds (20)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds between settling and the idle window (5)")
    p.add_argument("--samples", type=int, default=5, choices=range(1, 51), metavar="1-50",
                   help="drain+undrain pairs timed per size (5)")
    p.add_argument("--settle", type=float, default=None, help="seconds to settle (max(60, 5 N))")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="wait at most this long for other labs to go before each size (60)")
    p.add_argument("--logs-dir", type=Path, help="copy every agent log here before teardown")
    p.add_argument("--no-balance", action="store_true",
                   help="labs without the balancing table (no nftables table, no conntrackd): "
                        "at 25 servers on 2 CPUs, 25 table applies at once starve the voters")
    p.add_argument("--json-out")
    a = p.parse_args(argv)
    try:
        sizes = [int(s) for s in a.sizes.split(",")]
    except ValueError:
        p.error("--sizes: comma-separated integers")
    if not sizes or any(not a.voters < s <= 25 for s in sizes):
        p.error(f"--sizes: each in {a.voters + 1}-25 (a non-voter is powered off)")
    if not 1 <= a.idle <= 600 or not 0 <= a.warmup <= 600:
        p.error("--idle: 1-600 seconds; --warmup: 0-600")
    interrupt_on_sigterm()
    doc: dict[str, Any] = {"bench": "scale", "command": " ".join([".venv/bin/python", *sys.argv]),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                           "idle_s": a.idle, "warmup_s": a.warmup, "samples": a.samples,
                           "voters": a.voters, "balance": not a.no_balance,
                           "results": []}
    try:
        for n in sizes:
            others, waited = wait_quiet("bs", a.quiet_wait)
            if others:
                log(f"N={n}: other labs still up after {waited} s: {others}")
            r = one_size(n, a.voters, a.idle, a.samples, a.settle or max(60.0, 5.0 * n),
                         a.logs_dir, a.warmup, balance=not a.no_balance)
            r["other_labs"] = others
            doc["results"].append(r)
    except KeyboardInterrupt:
        log("interrupted: the lab was torn down")
        doc["interrupted"] = True
    for line in table(doc["results"]):
        log(line)
    log("(CPU % of one CPU per agent over the idle window; gossip/raft: bytes/s on eth0 by TCP "
        "port, per agent; commit: drain/undrain admin call to the leader (median; fresh TLS "
        "channel each) / the leader's own proposal-to-commit mean; dead everywhere: the "
        "slowest agent's `is dead` line after a non-voter's power-off; down: the leader's commit "
        "of its backends down; VIP claim: after the holder's power-off)")
    return emit(doc, a.json_out)


if __name__ == "__main__":
    sys.exit(main())
