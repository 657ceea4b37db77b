"""CPU starvation benchmark: how late a starved member's Raft acks and gossip get, and whether
the leader ever commits its backend down (a false "down").

    .venv/bin/python bench/starvation.py [--trials 3] [--seconds 30] [--percent 10,5]
                                         [--burners 1] [--json-out FILE]

A 3-server namespace lab (balanced, the lab's HTTP check on every server). Each trial puts
one follower's agent and backend, with `burners` busy loops beside them, in a cgroup that
gets `percent` of one CPU (hacluster.lab.cgroup; the lab test
tests/lab/test_health_gossip.py::test_cpu_starved_server_is_not_declared_dead starves at 10 %
with one burner), for `seconds`. Afterwards it reads the agents' logs (ms stamps):

  raft silence  the longest time the leader went without a heartbeat ack from the starved
                member (the quantity health.corroborate_ms is compared with), from the
                leader's "heartbeat acks lagged" lines (consensus/acklag.py: one line per 5 s
                per member whose acks came after more than 3 heartbeats); the other
                follower's figure is the control
  tcp silence   meanwhile, the longest the starved server's kernel left our Raft traffic
                unacknowledged (TCP_INFO): a verdict needs this silent for corroborate_ms too
  suspicions    how often the leader's gossip marked the starved member SUSPECT, and the
                longest SUSPECT episode (until "is alive"); deaths: DEAD verdicts
  false downs   `NODE/web=down` committed during the trial for any member, except the starved
                one within 3 s after its own check failed (the target: 0); those are
                counted apart as check downs: its backend, starved too, timed out
  leader moves  leader elections seen in any agent's log

Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Benchmarks are programs, not asserts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _labkit import PYTHON, interrupt_on_sigterm, log, log_matches, machine, med, mx  # noqa: E402

from hacluster.consensus.acklag import REPORT_S  # noqa: E402
from hacluster.lab.lab import Lab, LabNode, random_prefix  # noqa: E402
from hacluster.lab.wait import wait_until  # noqa: E402

LAG = re.compile(r"hacluster\.raft: (\S+)'s heartbeat acks lagged: longest silence (\d+) ms, "
                 r"(\d+) ack.*?(?:TCP acks: longest wait (\d+) ms)?$")
GOSSIP = re.compile(r"hacluster\.gossip: (\S+) is (suspect|alive|dead)\b")
VERDICTS = re.compile(r"health (.*)")
VERDICT = re.compile(r"([A-Za-z0-9_.-]+)/web=(up|down)")
ELECTED = re.compile(r"raft role \S+ -> leader")
CHECK_FAILING = re.compile(r"check web: passing -> failing")
CHECK_GRACE_S = 3.0  # a verdict this soon after the member's own check failed follows from it


def leader(lab: Lab) -> LabNode:
    return lab.node(wait_until(lambda: (h := lab.holders()) and h[0], 30, "a VIP holder",
                               interval=0.05))


def verdicts(lab: Lab, since: float, until: float = float("inf")) -> list[tuple[float, str, str]]:
    """(time, node, up|down) of every web verdict any agent logged (leaders log their
    commits; a line may hold several), in time order."""
    out = []
    for n in lab.nodes:
        for t, m in log_matches(n.log, VERDICTS, since, until):
            out += [(t, v.group(1), v.group(2)) for v in VERDICT.finditer(m.group(1))]
    return sorted(out)


def all_up(lab: Lab) -> bool:
    """Every member's backend committed up (the last verdict logged for each)."""
    last = {node: state for _, node, state in verdicts(lab, 0)}
    return all(last.get(n.name) == "up" for n in lab.nodes)


def throttled(group: Path) -> int:
    stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])


def suspicions(lead: LabNode, victim: str, t0: float, t1: float) -> dict[str, Any]:
    episodes: list[float] = []
    start: float | None = None
    count = deaths = 0
    for t, m in log_matches(lead.log, GOSSIP, t0, t1):
        if m.group(1) != victim:
            continue
        state = m.group(2)
        if state == "suspect":
            count += 1
            start = t if start is None else start
        elif state == "dead":
            deaths += 1
        elif start is not None:
            episodes.append(t - start)
            start = None
    if start is not None:
        episodes.append(t1 - start)
    return {"suspicions": count, "longest_suspect_ms": round(max(episodes) * 1000) if episodes
            else 0, "deaths": deaths}


def trial(lab: Lab, victim: LabNode, percent: float, seconds: float,
          burners: int) -> dict[str, Any]:
    wait_until(lambda: all_up(lab), 60, "every backend committed up", interval=0.2)
    lead = leader(lab)
    control = next(n for n in lab.nodes if n is not lead and n is not victim)
    t0 = time.time()
    with lab.starve(victim, percent, burners) as group:
        holders: set[str] = set()
        while time.time() - t0 < seconds:
            holders.update(lab.holders())
            time.sleep(0.5)
        periods = throttled(group)
    t1 = time.time()
    time.sleep(REPORT_S + 1.0)  # the leader's lag line for the last window
    t2 = time.time()
    lags: dict[str, list[tuple[int, int, int | None]]] = {}
    for _, m in log_matches(lead.log, LAG, t0, t2):
        tcp = int(m.group(4)) if m.group(4) is not None else None
        lags.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(3)), tcp))

    def silence(node: LabNode) -> dict[str, Any]:
        rows = lags.get(node.name, [])
        return {"longest_ms": max((r[0] for r in rows), default=None),
                "late_acks": sum(r[1] for r in rows), "windows": len(rows),
                "tcp_longest_ms": max((r[2] for r in rows if r[2] is not None), default=None)}

    # A down that follows the starved server's own check failing (its backend is starved too
    # and times out) is the check doing its job; any other down is a false one.
    failing = [t for t, _ in log_matches(victim.log, CHECK_FAILING, t0, t2)]
    downs, check_downs = set(), set()
    for t, node, state in verdicts(lab, t0, t2):
        if state != "down":
            continue
        own_check = node == victim.name and any(0 <= t - f <= CHECK_GRACE_S for f in failing)
        (check_downs if own_check else downs).add(node)
    return {"percent": percent, "burners": burners, "seconds": seconds, "victim": victim.name,
            "leader": lead.name, "throttled_periods": periods,
            "raft_silence": silence(victim), "raft_silence_control": silence(control),
            **suspicions(lead, victim.name, t0, t1),
            "false_downs": sorted(downs), "check_downs": sorted(check_downs),
            "check_failures": len(failing), "holders_seen": sorted(holders),
            "elections": sum(len(log_matches(n.log, ELECTED, t0, t2)) for n in lab.nodes)}


def reconfigure(lab: Lab, health: dict[str, int]) -> None:
    """Give every agent these health settings: rewrite its config, restart it (one at a
    time, waiting for a single VIP holder between restarts)."""
    for n in lab.nodes:
        doc = yaml.safe_load(n.config.read_text())
        doc["health"] = {**(doc.get("health") or {}), **health}
        n.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        lab.signal_agent(n, signal.SIGTERM)
        lab.wait_agent_exit(n, 15)
        lab.start_agent(n)
        lab.wait_single_holder(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3, choices=range(1, 51), metavar="1-50")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--percent", default="10", help="CPU quota(s) of one CPU, comma-separated")
    p.add_argument("--burners", type=int, default=1, choices=range(0, 5), metavar="0-4")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--health", action="append", default=[], metavar="KEY=VALUE",
                   help="override a health setting in every agent's config (e.g. "
                        "silence_probe_ms=0), for A/B runs; repeatable")
    p.add_argument("--keep-logs", type=Path, metavar="DIR",
                   help="copy the agents' logs to DIR before the lab is torn down")
    args = p.parse_args()
    levels = [float(x) for x in args.percent.split(",") if x.strip()]
    if not levels or any(not 1 <= x <= 100 for x in levels) or not 5 <= args.seconds <= 600:
        p.error("--percent: 1-100 each; --seconds: 5-600")
    try:
        health = {k: int(v) for k, _, v in (h.partition("=") for h in args.health)}
    except ValueError:
        p.error("--health: KEY=INTEGER")
    interrupt_on_sigterm()
    lab = Lab(random_prefix("bs"), 3, python=PYTHON)
    rows: list[dict[str, Any]] = []
    try:
        log(f"lab {lab.prefix}: up")
        lab.up()
        if health:
            reconfigure(lab, health)
            log(f"agents restarted with health {health}")
        for i in range(args.trials):
            for percent in levels:
                lead = leader(lab)
                followers = [n for n in lab.nodes if n is not lead]
                victim = followers[i % len(followers)]
                row = trial(lab, victim, percent, args.seconds, args.burners)
                log(f"{percent:g}% #{i + 1}: {row}")
                rows.append(row)
    finally:
        if args.keep_logs is not None:
            for n in lab.nodes:
                (args.keep_logs / n.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(n.log, args.keep_logs / n.name / n.log.name)
        lab.down()
    summary = {}
    for percent in levels:
        rs = [r for r in rows if r["percent"] == percent]
        summary[f"{percent:g}"] = {
            "trials": len(rs),
            "raft_silence_ms": {"median": med([r["raft_silence"]["longest_ms"] or 0 for r in rs]),
                                "max": mx([r["raft_silence"]["longest_ms"] or 0 for r in rs])},
            "raft_silence_control_max_ms": mx([r["raft_silence_control"]["longest_ms"] or 0
                                               for r in rs]),
            "tcp_silence_max_ms": mx([r["raft_silence"]["tcp_longest_ms"] or 0 for r in rs]),
            "late_acks": sum(r["raft_silence"]["late_acks"] for r in rs),
            "suspicions": sum(r["suspicions"] for r in rs),
            "longest_suspect_ms": mx([r["longest_suspect_ms"] for r in rs]),
            "deaths": sum(r["deaths"] for r in rs),
            "false_downs": sum(len(r["false_downs"]) for r in rs),
            "check_downs": sum(len(r["check_downs"]) for r in rs),
            "elections": sum(r["elections"] for r in rs),
        }
    print(f"{'cpu %':>6} {'trials':>6} {'raft silence med/max':>21} {'tcp max':>8} {'control max':>12} "
          f"{'late acks':>10} {'suspicions':>10} {'longest suspect':>16} {'deaths':>7} "
          f"{'false downs':>12} {'check downs':>12} {'elections':>10}", file=sys.stderr)
    for level, s in summary.items():
        rsm = s["raft_silence_ms"]
        silence = f"{rsm['median']:.0f} / {rsm['max']:.0f}"
        print(f"{level:>6} {s['trials']:>6} {silence:>21} {s['tcp_silence_max_ms'] or 0:>8.0f} "
              f"{s['raft_silence_control_max_ms'] or 0:>12.0f} {s['late_acks']:>10} "
              f"{s['suspicions']:>10} {s['longest_suspect_ms'] or 0:>16.0f} {s['deaths']:>7} "
              f"{s['false_downs']:>12} {s['check_downs']:>12} {s['elections']:>10}", file=sys.stderr)
    print("(ms; raft silence: the longest time the leader had no heartbeat ack from the starved "
          "member; tcp: the longest its kernel left our Raft traffic unacked meanwhile; "
          "control: the other follower; late acks: acks after > 3 heartbeats; false downs: "
          "trials with a backend committed down for no failing check of its own; check downs: "
          "trials where the starved server's own check timed out, then its backend went down)",
          file=sys.stderr)
    doc = {"bench": "starvation", "command": " ".join([".venv/bin/python", *sys.argv]),
           "trials": args.trials, "health_overrides": health, "machine": machine(),
           "summary": summary, "rows": rows}
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
