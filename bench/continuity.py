"""Continuity benchmark: do established connections survive a fault, per fault, per system.

    .venv/bin/python bench/continuity.py [--trials 3] [--faults poweroff,isolate,...]
        [--systems hacluster,hacluster-sync-off,keepalived+conntrackd] [--flows 20]
        [--duration 5] [--json-out FILE] [--raw-dir DIR]

A 3-server balanced lab (the lab's default algorithm for HTTP; its `hl7` service is
Maglev). Each trial: settle (one holder, every agent agrees, the client served; for
hacluster with the sync on, every agent reports its connection sync ok) ->
hacluster.lab.flows in the client namespace: `--flows` HTTP downloads (a line every 50 ms)
and one HL7 v2 MLLP connection (a message every 50 ms, each ACKed), all opened on backends
the fault will not take away, plus a new connection every 20 ms -> the fault, at a
recorded wall time, once they are settled -> the run ends -> the accounting
(hacluster.lab.continuity) -> the fault undone.

Figures per fault and system (medians over the trials): flows to surviving backends that
completed (%), the longest stall between two chunks on a completed flow (ms, the 50 ms
cadence included), the time from the fault until new connections stop failing (ms), and
the HL7 connection's reconnects, lost and duplicated messages.

Faults (as in bench/failover.py, whose inject/restore this reuses):
  poweroff             the holder: cable out, every process killed, addresses lost
  isolate              the holder's cable cut (it keeps running; its backend is unreachable)
  sigterm              SIGTERM of the holder's agent (its server and backend stay up)
  switchover           a planned move (`hacluster failover --to`; keepalived: SIGTERM of
                       the master, started again afterwards)
  nonholder-poweroff   a server that does not hold the VIP is powered off

Systems: hacluster (the lab's default: connection sync on once the agents run conntrackd),
hacluster-sync-off (`Lab(conntrack_sync="off")`, skipped while the lab has no such
option), keepalived+conntrackd (bench/_conntrackd.py: the classic setup over the table the
hacluster agents had applied; skipped unless keepalived and conntrackd are installed).

Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Benchmarks are programs, not asserts (STYLE.md §12).
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _conntrackd import KeepalivedConntrackdSystem
from _labkit import (
    FAILURES,
    BenchError,
    client_served,
    emit,
    foreign_labs,
    interrupt_on_sigterm,
    log,
    machine,
    med,
    mx,
    wait_quiet,
)
from _systems import HaclusterSystem, System
from failover import inject, repair, restore

from hacluster.lab.continuity import run_through, sync_state
from hacluster.lab.lab import Lab, LabNode, cli_argv, random_prefix
from hacluster.lab.wait import WaitTimeout, wait_until

FAULTS = ("poweroff", "isolate", "sigterm", "switchover", "nonholder-poweroff")
SYSTEMS = ("hacluster", "hacluster-sync-off", "keepalived+conntrackd")
SETTLE_TIMEOUT_S = 60.0
# the faults that take the target's backend away (flows are opened elsewhere)
TAKES_BACKEND = {"poweroff", "isolate", "nonholder-poweroff"}
TARGETS = {"poweroff_stall_ms": 500, "switchover_stall_ms": 250, "poweroff_new_conn_ms": 500,
           "nonholder_poweroff_new_conn_ms": 700, "survived_pct": 100}


def lab_has_sync_option() -> bool:
    return "conntrack_sync" in inspect.signature(Lab).parameters


def cli(system: System, node: LabNode, *args: str) -> str | None:
    """`hacluster ARGS` in `node`'s namespace with its config: stdout, None if it failed."""
    p = subprocess.run(cli_argv(node.netns, *args, "--timeout", "1", "--config", str(node.config),
                                python=system.lab.python), capture_output=True, text=True, timeout=15)
    return p.stdout if p.returncode == 0 else None


def all_committed_healthy(system: System, holder: LabNode) -> bool:
    """The leader has committed every server's backend healthy: a server that came back
    from the last trial's fault is a full member again (in gossip, Raft, and the table)."""
    out = cli(system, holder, "checks", "--json")
    if out is None:
        return False
    committed = {(c["node"], c["check"]): c["healthy"] for c in json.loads(out)["committed"]}
    return all(committed.get((n.name, "web")) is True for n in system.lab.nodes)


def settle(system: System, sync_on: bool) -> str:
    holder = system.settle(SETTLE_TIMEOUT_S)
    if isinstance(system, HaclusterSystem):
        wait_until(lambda: all_committed_healthy(system, system.lab.node(holder)), SETTLE_TIMEOUT_S,
                   "every backend committed healthy")
        holder = system.settle(SETTLE_TIMEOUT_S)
    names = {n.name for n in system.lab.nodes}
    try:
        wait_until(lambda: client_served(system.lab) in names, SETTLE_TIMEOUT_S,
                   "the client served via the VIP", interval=0.1)
    except WaitTimeout as e:
        raise BenchError(f"{e}; {diagnose(system.lab)}") from None
    if sync_on:
        for n in system.lab.nodes:
            wait_until(lambda n=n: sync_state(system.lab, n.name) == "ok", SETTLE_TIMEOUT_S,
                       f"{n.name}: connection sync ok")
    return holder


def diagnose(lab: Lab) -> str:
    """What the client sees when the VIP does not answer: its neighbour entry for the VIP,
    who holds it, and whether each backend answers directly."""
    def run(*cmd: str) -> str:
        p = subprocess.run(["ip", "netns", "exec", lab.client_ns, *cmd], capture_output=True, text=True,
                           timeout=10)
        return (p.stdout or p.stderr).strip()
    direct = {n.name: run("curl", "-s", "-m", "0.5", f"http://{n.ip}/") or None for n in lab.nodes}
    return (f"holders {lab.holders()}, client neighbours {run('ip', 'neigh')!r}, "
            f"backends directly {direct}")


def run_trial(system: System, fault: str, trial: int, workdir: Path, a: argparse.Namespace,
              sync_on: bool) -> dict[str, Any]:
    lab = system.lab
    others, waited = wait_quiet(lab.prefix, a.quiet_wait)
    holder = settle(system, sync_on)
    target = lab.node(holder)
    if fault == "nonholder-poweroff":
        target = next(n for n in lab.nodes if n.name != holder)
    base = "poweroff" if fault == "nonholder-poweroff" else fault
    dead = {target.name} if fault in TAKES_BACKEND else set()

    def after() -> None:
        if fault != "nonholder-poweroff":
            wait_until(lambda: [h for h in lab.holders() if h != holder], 10, "a new VIP holder",
                       interval=0.02)

    injected: list[bool] = []

    def fault_now() -> None:
        injected.append(True)
        inject(system, base, target)

    try:
        acc = run_through(lab, fault_now, workdir, dead=dead, avoid=dead, flows=a.flows,
                          duration=a.duration, after=after)
    finally:
        if injected and base == "switchover" and isinstance(system, HaclusterSystem):
            try:
                system.switchover_result()  # reaps the CLI
            except BenchError as e:
                log(f"switchover: {e}")
    raw = acc.pop("raw")
    if a.raw_dir:
        (Path(a.raw_dir) / f"{system.name}-{fault}-{trial}.json").write_text(json.dumps(raw))
    f, h, nc = acc["flows"], acc["hl7"], acc["new_connections"]
    rec = {"trial": trial, "holder": holder, "target": target.name, "new_holder": None,
           "other_labs": others, "waited_for_quiet_s": waited,
           "flows_to_surviving": f["to_surviving"], "survived_pct": f["survived_pct"],
           "longest_stall_ms": f["longest_stall_ms"], "broken": f["broken"][:5],
           "new_conn_failing_ms": nc["failing_ms"], "new_conn_recovered": nc["recovered"],
           "new_conn_failed": nc["failed"], "hl7_reconnects": h["reconnects"], "hl7_lost": h["lost"],
           "hl7_duplicates": h["duplicates"], "hl7_longest_ack_gap_ms": h["longest_ack_gap_ms"],
           "hl7_backend": h["backend"], "ready": acc["ready"], "new_conn_why": nc["why"],
           "client_max_lag_ms": acc["client_max_lag_ms"]}
    holders = lab.holders()
    rec["new_holder"] = holders[0] if len(holders) == 1 else holders
    restore(system, base, target)
    return rec


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [t for t in trials if "error" not in t]

    def vals(k: str) -> list[float]:
        return [t[k] for t in ok if t.get(k) is not None]

    return {
        "trials": trials, "errors": len(trials) - len(ok),
        "median_survived_pct": med(vals("survived_pct")),
        "min_survived_pct": min(vals("survived_pct"), default=None),
        "median_longest_stall_ms": med(vals("longest_stall_ms")),
        "max_longest_stall_ms": mx(vals("longest_stall_ms")),
        "median_new_conn_failing_ms": med(vals("new_conn_failing_ms")),
        "max_new_conn_failing_ms": mx(vals("new_conn_failing_ms")),
        "new_conn_unrecovered": sum(1 for t in ok if not t["new_conn_recovered"]),
        "hl7_reconnects": sum(vals("hl7_reconnects")), "hl7_lost": sum(vals("hl7_lost")),
        "hl7_duplicates": sum(vals("hl7_duplicates")),
        "median_hl7_longest_ack_gap_ms": med(vals("hl7_longest_ack_gap_ms")),
    }


def run_system(system: System, a: argparse.Namespace, faults: list[str], sync_on: bool) -> dict[str, Any]:
    workdir = system.lab.dir / "bench"
    results: dict[str, list[dict[str, Any]]] = {f: [] for f in faults}
    broken = False
    for trial in range(1, a.trials + 1):
        for fault in faults:  # round robin: machine noise spreads over every fault
            if broken:
                results[fault].append({"trial": trial, "error": "skipped: system broken"})
                continue
            t0 = time.monotonic()
            try:
                rec = run_trial(system, fault, trial, workdir, a, sync_on)
            except FAILURES as e:
                log(f"{system.name} {fault} #{trial}: FAILED: {e}")
                rec = {"trial": trial, "error": str(e)[:2000]}
                try:
                    repair(system)
                    if isinstance(system, KeepalivedConntrackdSystem):
                        for n in system.lab.nodes:
                            system.start_conntrackd(n)
                    settle(system, sync_on)
                except Exception as e2:  # noqa: BLE001 - give up on this system only
                    log(f"{system.name}: cannot repair ({e2}); skipping its remaining trials")
                    broken = True
            else:
                log(f"{system.name:22} {fault:18} #{trial}: survived {rec['survived_pct']}% of "
                    f"{rec['flows_to_surviving']}, stall {rec['longest_stall_ms']} ms, new conns "
                    f"failing {rec['new_conn_failing_ms']} ms, HL7 reconnects {rec['hl7_reconnects']} "
                    f"lost {rec['hl7_lost']} dup {rec['hl7_duplicates']} ({time.monotonic() - t0:.1f} s)")
            results[fault].append(rec)
    return {f: summarize(r) for f, r in results.items()}


def bench(name: str, a: argparse.Namespace, faults: list[str]) -> dict[str, Any]:
    kw: dict[str, Any] = {"conntrack_sync": "off"} if name == "hacluster-sync-off" else {}
    lab = Lab(random_prefix("bc"), 3, **kw)
    log(f"{name}: lab {lab.prefix} ({lab.net}.0/24, VIP {lab.vip}, HTTP algorithm {lab.algorithm})")
    system: System = HaclusterSystem(lab)
    try:
        if name == "keepalived+conntrackd":
            lab.up()
            system = KeepalivedConntrackdSystem(lab)
        system.up()
        sync_on = name == "hacluster" and lab_has_sync_option()
        return run_system(system, a, faults, sync_on)
    finally:
        system.stop()
        if a.raw_dir:
            dest = Path(a.raw_dir) / f"logs-{name}-{lab.prefix}"
            for f in lab.dir.glob("*/*.log"):
                (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / f.parent.name / f.name)
        log(f"{name}: tearing down {len(lab.down())} namespaces")


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.0f}" if isinstance(x, float) else str(x)


def table(doc: dict[str, Any], faults: list[str]) -> str:
    hdr = (f"{'fault':18} | {'system':22} | {'survived %':>10} {'min':>4} | {'stall ms':>8} | "
           f"{'new conns fail ms':>17} | {'HL7 reconn/lost/dup':>19}")
    lines = [hdr, "-" * len(hdr)]
    for f in faults:
        for name, s in doc["systems"].items():
            r = s.get(f)
            if not r:
                continue
            nc = _fmt(r["median_new_conn_failing_ms"]) + (f" ({r['new_conn_unrecovered']} never)"
                                                         if r["new_conn_unrecovered"] else "")
            hl7 = f"{r['hl7_reconnects']}/{r['hl7_lost']}/{r['hl7_duplicates']}"
            lines.append(f"{f:18} | {name:22} | {_fmt(r['median_survived_pct']):>10} "
                         f"{_fmt(r['min_survived_pct']):>4} | {_fmt(r['median_longest_stall_ms']):>8} | "
                         f"{nc:>17} | {hl7:>19}" + (f"  ({r['errors']} failed)" if r["errors"] else ""))
    lines.append("survived: completed flows to surviving backends (median, min over trials); stall: longest "
                 "gap between chunks on a completed flow, median (50 ms cadence included); new conns: from "
                 "the fault until they stop failing, median ('never': still failing at the end of a trial); "
                 "HL7: totals over the trials")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3, help="trials per fault and system (3)")
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset of %(default)s")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated subset of %(default)s (those that cannot be built here are skipped)")
    p.add_argument("--flows", type=int, default=20, help="HTTP flows held through each fault (20)")
    p.add_argument("--duration", type=float, default=5.0, help="s of traffic after the flows settle (5)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    p.add_argument("--raw-dir", metavar="DIR", help="keep every trial's client document and the logs here")
    p.add_argument("--quiet-wait", type=float, default=30.0, metavar="S",
                   help="before each trial, wait up to S s for other labs to go away (default 30)")
    a = p.parse_args(argv)
    faults = [f.strip() for f in a.faults.split(",") if f.strip()]
    names = [s.strip() for s in a.systems.split(",") if s.strip()]
    if not faults or any(f not in FAULTS for f in faults):
        p.error(f"faults: choose from {','.join(FAULTS)}")
    if not names or any(s not in SYSTEMS for s in names):
        p.error(f"systems: choose from {','.join(SYSTEMS)}")
    if not (1 <= a.trials <= 50 and 1 <= a.flows <= 200 and 1 <= a.duration <= 60):
        p.error("--trials 1-50, --flows 1-200, --duration 1-60")
    if a.raw_dir:
        Path(a.raw_dir).mkdir(parents=True, exist_ok=True)
    skipped = {}
    if "hacluster-sync-off" in names and not lab_has_sync_option():
        skipped["hacluster-sync-off"] = "the lab has no conntrack_sync option yet (no sync to turn off)"
    if "keepalived+conntrackd" in names and (why := KeepalivedConntrackdSystem.available()):
        skipped["keepalived+conntrackd"] = why
    interrupt_on_sigterm()
    doc: dict[str, Any] = {
        "benchmark": "continuity", "command": " ".join([".venv/bin/python", *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
        "params": {"trials": a.trials, "faults": faults, "flows": a.flows, "duration_s": a.duration,
                   "servers": 3, "chunk_ms": 50, "hl7_interval_ms": 50, "probe_interval_ms": 20,
                   "lab_sync_option": lab_has_sync_option()},
        "skipped": skipped, "targets": TARGETS, "other_labs_at_start": foreign_labs("-"), "systems": {},
    }
    t0 = time.monotonic()
    try:
        for name in names:
            if name not in skipped:
                doc["systems"][name] = bench(name, a, faults)
    except KeyboardInterrupt:
        log("interrupted: labs torn down; printing what was measured")
        doc["interrupted"] = True
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    print(table(doc, faults), file=sys.stderr)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    return emit(doc, a.json_out)


if __name__ == "__main__":
    sys.exit(main())
