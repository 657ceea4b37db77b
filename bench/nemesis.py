"""Fault suite (issue 15): faults beyond bench/failover.py's, and what each does to I1 and I2.

    .venv/bin/python bench/nemesis.py [--faults raft-flood,disk-full,...] [--trials 1]
                                      [--json-out FILE] [--quiet-wait 15] [--seed N]

A 3-server lab (hacluster only: a robustness suite, not a comparison). Each trial: settle
(every agent up, one holder, all agree) -> markers: admin changes made through the real
CLI (`hacluster weight`, for cold-start also `hacluster drain`) and acknowledged by it,
then seen in every node's committed table -> the holder monitor (every kernel's address
events) and a systemd-like supervisor (an agent that exits by itself is a crash, started
again 2 s later, as Restart=on-failure does) -> the fault, with up to three more weight
changes through a majority-side node's CLI while it lasts -> the fault undone -> settle
again (60 s at most) -> every acknowledged change looked for in every node's committed
table (`hacluster backends --json`, 20 s at most), each node's Raft port still listening
(an agent whose port stays closed is restarted after the trial, as an operator would, so
that one fault's lasting damage is not charged to the next).

Faults (the target is the VIP holder, which is the Raft leader, unless said otherwise):
  raft-flood      from a follower's namespace (a member address: the Raft guard lets it
                  through), 4 connections to each member's Raft port, each sending a frame
                  header announcing 0x7fffffff bytes then junk as fast as it is taken, 10 s
  fd-exhaustion   the holder's agent gets an fd limit of 512 (pysyncobj accepts about 100
                  connections a second here, so 10 s reach it; the kernel's usual 1024 only
                  just not; the production unit sets 65536), then 2000 idle TCP connections to
                  its Raft port from a follower's namespace, held 10 s; the limit is restored
  disk-full       the holder's data_dir filled to ENOSPC, 10 s, then freed. This fault runs in
                  a lab of its own whose data dirs are each on a 16 MiB tmpfs mounted for it
                  (hclab-PREFIX-NODE, on the node's own data_dir): the lab's usual data dirs
                  are on the machine's shared disk, which the suite must not fill
  oneway-in       the holder hears nothing from the other servers (lab.partition one_way=in), 10 s
  oneway-out      the holder's packets to the other servers are lost (one_way=out), 10 s
  link-flap       the holder's cable cut and restored every 300 ms for 20 s
  leader-restart  SIGKILL + start of the agent holding the VIP, 5 times, ~2 s apart (each time
                  the node holding it then, waiting up to 5 s for a holder other than the one
                  just killed)
  cold-start      every agent SIGKILLed, then started again in random order with random delays
                  (0-1.5 s each, --seed); before it, a drain and two weights through the CLI;
                  after it, every node's committed table equal to the one before, and the
                  replicated generation not behind (`status --agent --json`)

Per fault: the longest time with no holder, the total time with two or more (I1: must be
0), and commits lost (I2: acknowledged changes missing from any node's committed table after
recovery). The outcome is FAILED when any of these holds: two holders at any time, a commit
lost, no settled single holder within 60 s after the fault, an agent that exited by itself, a
Raft port not listening after recovery, a committed table not applied, a generation gone
back, (cold start) a table that changed, the VIP moved by a fault that should move nothing
(raft-flood, fd-exhaustion), or no holder for longer than the fault's budget (BUDGET_MS:
about one failover where the fault should move nothing, more where it kills).

Prints the table on stderr and the JSON document as the last line of stdout (and to
--json-out). Every fault is bounded in time, so the run always ends, whatever main does.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _labkit import (
    FAILURES,
    BenchError,
    emit,
    foreign_labs,
    interrupt_on_sigterm,
    log,
    machine,
    start_monitor,
    wait_quiet,
)
from _nemesis import (
    Marker,
    Supervisor,
    TmpfsLab,
    Weights,
    agent_look,
    backends_everywhere,
    check_markers,
    cli,
    cli_json,
    holder_figures,
    listening_everywhere,
    set_marker,
    table_rows,
)
from _nemesis_faults import (
    COLD_DELAY_MAX_S,
    DATA_MB,
    FAULT_RUN,
    FAULTS,
    FD_COUNT,
    FD_LIMIT,
    FLAP_EVERY_S,
    FLAP_S,
    FLOOD_CONNS,
    HOLD_S,
    RESTART_EVERY_S,
    RESTARTS,
    TMPFS_FAULTS,
    Trial,
)
from _systems import HaclusterSystem
from failover import repair

from hacluster.lab.lab import Lab, LabNode, random_prefix
from hacluster.lab.netns import LabError

SETTLE_TIMEOUT_S = 60.0
CHECK_TIMEOUT_S = 20.0
# Longest tolerated time without a holder. Where the fault should move nothing (a flood, idle
# connections) a failover at worst (~0.3 s here, see docs/benchmarks.md); where it takes the
# leader away, one failover plus its VIP lifetime (2 s) with a margin; a cold start restarts
# three Python agents on a loaded 2-CPU machine.
BUDGET_MS = {"raft-flood": 1000, "fd-exhaustion": 1000, "disk-full": 3000, "oneway-in": 3000,
             "oneway-out": 3000, "link-flap": 3000, "leader-restart": 3000,
             "cold-start": 15000}
# Faults that do not take the leader away: the VIP should not move at all (issue 15's goal
# for the flood: "changes neither leader nor holder").
NO_MOVE_FAULTS = {"raft-flood", "fd-exhaustion"}


def generation(lab: Lab, node: LabNode) -> int | None:
    st = cli_json(lab, node, "status", "--agent")
    return None if st is None else st.get("generation")


def table_changes(lab: Lab, before: dict[str, dict[str, list[Any]]],
                  timeout: float) -> dict[str, list[str]]:
    """Wait (bounded) until every node's committed table is the one it had before; return
    what still differs per node ({} when nothing does)."""
    deadline = time.monotonic() + timeout
    diff: dict[str, list[str]] = {}
    for _ in range(60):
        now = backends_everywhere(lab)
        diff = {}
        for name, rows in before.items():
            t = now.get(name)
            cur = table_rows(t) if t is not None else {}
            d = [f"{k}: {rows.get(k)} -> {cur.get(k)}" for k in sorted(set(rows) | set(cur))
                 if rows.get(k) != cur.get(k)]
            if t is None or d:
                diff[name] = d or ["no answer"]
        if not diff or time.monotonic() >= deadline:
            return diff
        time.sleep(1.0)
    return diff


def set_markers(lab: Lab, fault: str, holder: LabNode, followers: list[LabNode],
                weights: Weights) -> list[Marker]:
    """The changes made before the fault, through two nodes' CLIs (one forwarded by a
    follower to the leader); for the cold start also a drain of a follower."""
    a, b = followers
    markers = [Marker("weight", f"web/{a.name}", weights.next(f"web/{a.name}"), holder.name, "before"),
               Marker("weight", f"hl7/{holder.name}", weights.next(f"hl7/{holder.name}"), b.name,
                      "before")]
    if fault == "cold-start":
        markers.append(Marker("drain", a.name, None, b.name, "before"))
    for m in markers:
        if not set_marker(lab, m).acked:
            raise BenchError(f"{m.kind} {m.target} via {m.via} not acknowledged before the "
                             f"fault: {m.answer}")
    return markers


def run_trial(system: HaclusterSystem, fault: str, trial: int, rng: random.Random,
              weights: Weights, quiet_wait: float) -> dict[str, Any]:
    lab = system.lab
    others, waited = wait_quiet(lab.prefix, quiet_wait)
    holder = lab.node(system.settle(SETTLE_TIMEOUT_S))
    followers = [n for n in lab.nodes if n is not holder]
    rec: dict[str, Any] = {"trial": trial, "holder": holder.name, "other_labs": others,
                           "waited_for_quiet_s": waited}
    markers = set_markers(lab, fault, holder, followers, weights)
    pre = check_markers(lab, markers, CHECK_TIMEOUT_S)
    if pre["lost"] or pre["unanswered_nodes"]:
        raise BenchError(f"the markers are not in every node's table before the fault: "
                         f"{[(m.target, m.missing_on) for m in markers if m.missing_on]}")
    before = {n: table_rows(t) for n, t in pre["tables"].items() if t is not None}
    gen_before = max(g for n in lab.nodes if (g := generation(lab, n)) is not None)
    tr = Trial(lab, Supervisor(lab), rng, weights, holder, followers)
    tr.looks["before"] = {n.name: agent_look(n) for n in lab.nodes}
    rec["loadavg1"] = round(os.getloadavg()[0], 2)
    mon = start_monitor(lab)
    try:
        with tr.sup:
            tr.t_fault = time.time()
            rec["fault_at"] = round(tr.t_fault, 3)  # wall clock: *_ms figures count from it
            rec["fault"] = FAULT_RUN[fault](tr)
            rec["fault_ms"] = round((time.time() - tr.t_fault) * 1000)
            t_undone = time.monotonic()
            try:
                rec["holder_after"] = system.settle(SETTLE_TIMEOUT_S)
                rec["recovered"], rec["recovery_s"] = True, round(time.monotonic() - t_undone, 2)
            except BenchError as e:
                rec["recovered"], rec["recovery_error"] = False, str(e)[-600:]
            tr.join_writes()
        rec["crashes"] = tr.sup.report()
        rec["listening"] = listening_everywhere(lab, 15)
        tr.looks["after"] = {n.name: agent_look(n) for n in lab.nodes}
        if not rec["recovered"] or not all(system.agent_running(n) for n in lab.nodes):
            repair(system)  # so that what was committed can still be read everywhere
            rec["recovered_after_repair"] = system.settle(SETTLE_TIMEOUT_S) is not None
        check = check_markers(lab, markers + tr.during, CHECK_TIMEOUT_S)
        gens = {n.name: generation(lab, n) for n in lab.nodes}
        if fault == "cold-start":
            rec["table_changes"] = table_changes(lab, before, CHECK_TIMEOUT_S)
        t_end = time.time()
    finally:
        mon.stop()
    rec.update(holder_figures(mon.timeline(), tr.t_fault, t_end))
    rec["monitor_restarts"] = mon.restarts
    rec["markers"] = [asdict(m) for m in markers + tr.during]
    rec["commits_lost"] = check["lost"]
    rec["not_applied"] = check["not_applied"] + check["unanswered_nodes"]
    rec["generation"] = {"before": gen_before, "after": gens}
    rec["agents"] = tr.looks
    rec["why"] = verdict(fault, rec)
    rec["outcome"] = "FAILED" if rec["why"] else "ok"
    return rec


def _signal_name(rc: int | None) -> str:
    if rc is None or rc >= 0:
        return f"exit {rc}"
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def verdict(fault: str, rec: dict[str, Any]) -> list[str]:
    """Why the trial FAILED ([] = ok): the invariants first, then the budgets."""
    why = []
    if rec["two_holders_ms"] > 0:
        why.append(f"two holders for {rec['two_holders_ms']:g} ms")
    if rec["commits_lost"]:
        why.append(f"{rec['commits_lost']} acknowledged change(s) lost")
    if not rec["recovered"]:
        why.append(f"no settled single holder within {SETTLE_TIMEOUT_S:.0f} s")
    for c in rec["crashes"]:
        why.append(f"{c['node']} agent died ({_signal_name(c['returncode'])})")
    if fault in NO_MOVE_FAULTS and rec["moves"]:
        why.append(f"VIP moved {rec['moves']} time(s)")
    if rec["longest_no_holder_ms"] > BUDGET_MS[fault]:
        why.append(f"no holder for {rec['longest_no_holder_ms'] / 1000:.1f} s "
                   f"(budget {BUDGET_MS[fault] / 1000:g} s)")
    closed = [n for n, up in rec["listening"].items() if not up]
    if closed:
        why.append(f"Raft port not listening on {','.join(closed)}")
    if rec["not_applied"]:
        why.append(f"table not applied/answered on {','.join(rec['not_applied'])}")
    after = [g for g in rec["generation"]["after"].values() if g is not None]
    if after and min(after) < rec["generation"]["before"]:
        why.append("replicated generation went back")
    if rec.get("table_changes"):
        why.append(f"committed table changed on {','.join(rec['table_changes'])}")
    return sorted(set(why), key=why.index)


# ------------------------------------------------------------------------------ runs


def run_lab(lab: Lab, faults: list[str], trials: int, rng: random.Random,
            quiet_wait: float) -> dict[str, list[dict[str, Any]]]:
    """Every trial of `faults` in one lab (round robin over the faults); the caller owns it."""
    system = HaclusterSystem(lab)
    system.up()
    weights = Weights(rng)
    results: dict[str, list[dict[str, Any]]] = {f: [] for f in faults}
    broken = False
    for trial in range(1, trials + 1):
        for fault in faults:
            if broken:
                results[fault].append({"trial": trial, "error": "skipped: lab broken",
                                       "outcome": "FAILED", "why": ["not run: lab broken"]})
                continue
            t0 = time.monotonic()
            try:
                rec = run_trial(system, fault, trial, rng, weights, quiet_wait)
            except (*FAILURES, LabError) as e:
                log(f"{fault} #{trial}: trial error: {e}")
                rec = {"trial": trial, "error": str(e)[-800:], "outcome": "FAILED",
                       "why": [f"trial error: {str(e).splitlines()[0][:120]}"]}
                try:
                    repair(system)
                    system.settle(SETTLE_TIMEOUT_S)
                except Exception as e2:  # noqa: BLE001 - give up on this lab only
                    log(f"cannot repair the lab ({e2}); skipping its remaining trials")
                    broken = True
            closed = [n for n, up in rec.get("listening", {}).items() if not up]
            if closed and not broken:  # lasting damage: restart those agents, as an operator
                rec["restarted_after_trial"] = closed  # would, so the next fault starts clean
                broken = not restart_agents(system, closed)
            if fault == "cold-start" and not broken:
                drained = [m["target"] for m in rec.get("markers", []) if m["kind"] == "drain"]
                undrain(system, drained if "markers" in rec else [n.name for n in lab.nodes])
            log(f"{fault:14} #{trial}: {rec['outcome']}"
                f"{' (' + '; '.join(rec['why']) + ')' if rec['why'] else ''}, longest no holder "
                f"{rec.get('longest_no_holder_ms')} ms, two holders {rec.get('two_holders_ms')} ms, "
                f"commits lost {rec.get('commits_lost')} ({time.monotonic() - t0:.0f} s)")
            results[fault].append(rec)
    return results


def restart_agents(system: HaclusterSystem, names: list[str]) -> bool:
    """`systemctl restart` of these agents (SIGTERM, SIGKILL after 15 s, start), then settle;
    False if the lab does not settle."""
    lab = system.lab
    for name in names:
        node = lab.node(name)
        log(f"{name}: Raft port closed after the trial: restarting its agent")
        if system.agent_running(node):
            lab.signal_agent(node, signal.SIGTERM)
            try:
                lab.wait_agent_exit(node, 15)
            except subprocess.TimeoutExpired:
                lab.signal_agent(node, signal.SIGKILL)
                lab.wait_agent_exit(node, 10)
        lab.start_agent(node)
    try:
        system.settle(SETTLE_TIMEOUT_S)
    except BenchError as e:
        log(f"the lab did not settle after the restart: {e}")
        return False
    return True


def undrain(system: HaclusterSystem, names: list[str]) -> None:
    """Put the cold start's drained server back in service (best effort)."""
    lab = system.lab
    for name in names:
        rc, out = cli(lab, lab.nodes[0], "undrain", name, "--json", timeout=40)
        if rc != 0:
            log(f"undrain {name}: {out[-200:]}")


def bench(faults: list[str], trials: int, rng: random.Random, quiet_wait: float,
          raw_dir: Path | None) -> dict[str, list[dict[str, Any]]]:
    """The faults in labs of their kind, one lab at a time (a TmpfsLab for disk-full)."""
    from failover import keep_logs

    out: dict[str, list[dict[str, Any]]] = {}
    for tmpfs in (False, True):
        group = [f for f in faults if (f in TMPFS_FAULTS) == tmpfs]
        if not group:
            continue
        lab = (TmpfsLab(random_prefix("nd"), 3, data_mb=DATA_MB) if tmpfs
               else Lab(random_prefix("nm"), 3))
        log(f"lab {lab.prefix} ({lab.net}.0/24, VIP {lab.vip})"
            f"{f', data dirs on {DATA_MB} MiB tmpfs each' if tmpfs else ''}: {', '.join(group)}")
        try:
            out.update(run_lab(lab, group, trials, rng, quiet_wait))
        finally:
            keep_logs(lab, raw_dir)
            log(f"tearing down lab {lab.prefix}: {len(lab.down())} namespaces")
    return out


# ------------------------------------------------------------------------------ report


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    def worst(key: str) -> float | None:
        xs = [t[key] for t in trials if t.get(key) is not None]
        return max(xs) if xs else None
    return {
        "outcome": "ok" if trials and all(t["outcome"] == "ok" for t in trials) else "FAILED",
        "longest_no_holder_ms": worst("longest_no_holder_ms"),
        "two_holders_ms": worst("two_holders_ms"),
        "commits_lost": sum(t.get("commits_lost") or 0 for t in trials),
        "why": list(dict.fromkeys(w for t in trials for w in t.get("why", []))),
        "trials": trials,
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    def num(x: float | None) -> str:
        return "-" if x is None else (f"{x:.1f}" if 0 < x < 10 else f"{x:.0f}")
    hdr = (f"{'fault':14} | {'outcome':7} | {'longest no-holder ms':>20} | {'two-holders ms':>14} | "
           f"{'commits lost':>12} | why")
    lines = [hdr, "-" * len(hdr)]
    for f, s in results.items():
        lines.append(f"{f:14} | {s['outcome']:7} | {num(s['longest_no_holder_ms']):>20} | "
                     f"{num(s['two_holders_ms']):>14} | {s['commits_lost']:>12} | "
                     f"{'; '.join(s['why']) or '-'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset of %(default)s")
    p.add_argument("--trials", type=int, default=1, help="trials per fault (1)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    p.add_argument("--quiet-wait", type=float, default=15.0, metavar="S",
                   help="before each trial, wait up to S s for other labs on this machine to go "
                        "away (default 15; 0 = do not wait)")
    p.add_argument("--seed", type=int, help="seed of the cold start's order and delays and of "
                   "the weights (default: random, recorded in the JSON)")
    p.add_argument("--raw-dir", metavar="DIR", help="keep the agents' logs in DIR")
    a = p.parse_args(argv)
    faults = [f.strip() for f in a.faults.split(",") if f.strip()]
    bad = [f for f in faults if f not in FAULTS]
    if bad or not faults:
        p.error(f"unknown fault(s) {bad}; choose from {','.join(FAULTS)}")
    if not 1 <= a.trials <= 50:
        p.error("--trials must be 1-50")
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    interrupt_on_sigterm()
    doc: dict[str, Any] = {
        "benchmark": "nemesis", "command": " ".join([".venv/bin/python", *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
        "params": {"faults": faults, "trials": a.trials, "seed": seed, "servers": 3,
                   "hold_s": HOLD_S, "flood_conns_per_member": FLOOD_CONNS,
                   "fd_connections": FD_COUNT, "fd_limit": FD_LIMIT, "flap_s": FLAP_S,
                   "flap_every_ms": FLAP_EVERY_S * 1000, "restarts": RESTARTS,
                   "restart_every_s": RESTART_EVERY_S, "cold_delay_max_s": COLD_DELAY_MAX_S,
                   "disk_full_tmpfs_mb": DATA_MB, "budget_ms": BUDGET_MS},
        "other_labs_at_start": foreign_labs("-"),
        "faults": {},
    }
    t0 = time.monotonic()
    raw: dict[str, list[dict[str, Any]]] = {}
    try:
        raw = bench(faults, a.trials, random.Random(seed), a.quiet_wait,
                    Path(a.raw_dir) if a.raw_dir else None)
    except KeyboardInterrupt:
        log("interrupted: labs torn down; printing what was measured")
        doc["interrupted"] = True
    doc["faults"] = {f: summarize(raw[f]) for f in faults if f in raw}
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    print(table(doc["faults"]), file=sys.stderr)
    return emit(doc, a.json_out)


if __name__ == "__main__":
    sys.exit(main())
