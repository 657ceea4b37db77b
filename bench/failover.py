"""Failover benchmark: client-seen outage and VIP holder overlap per fault, per system.

    .venv/bin/python bench/failover.py [--trials 5] [--faults poweroff,isolate,...]
                                       [--peer keepalived|none|auto] [--json-out FILE]

A 3-server namespace lab; a client in its own namespace starts one HTTP request to the VIP
every 10 ms (hacluster.lab.prober); every server's kernel address events are watched
(hacluster.lab.monitor) so that two holders at once are seen however short. Each trial:
settle (all agents up, one holder, all agree) -> monitor + client -> one second of good
traffic -> fault on the holder at a recorded wall time -> wait for a new holder -> client
run ends -> outage (traffic.outage: the gap between the last success before the failure
and the first success after it, minus one interval) and overlap (sum of the times two or
more kernels held the VIP within the client run) -> undo the fault.

Faults, always on the current VIP holder:
  poweroff   Lab.power_off: cable out, every process killed, addresses lost
  isolate    Lab.cut_link: cable out, the server keeps running (must drop the VIP itself)
  partition  Lab.partition: server <-> servers dropped, client path up; the outage is the
             time until the majority side serves
  kill9      SIGKILL of the agent (the kernel keeps the VIP until its lifetime ends)
  sigstop    SIGSTOP of the agent for 3 s, then SIGCONT
  sigterm    SIGTERM of the agent (graceful handoff)
  switchover a planned move: `hacluster failover --to OTHER` run in the holder's namespace
             (the CLI's own start-up, ~0.3 s of Python, is not part of the outage: the
             client measures the gap in service). keepalived has no such command: its
             graceful move is stopping the master (SIGTERM: it sends priority 0 at once),
             which is what it gets here, then it is started again

With keepalived installed (--peer auto), the same lab topology and faults run against
keepalived 2.2.7 in two configurations: default (VRRPv2, advert_int 1) and tuned (VRRPv3,
advert_int 0.1). The systems run one after the other, each in its own lab, so that one
system's idle agents never load the machine while the other is measured.

Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Benchmarks are programs, not asserts: nothing here fails on a slow figure.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _labkit import (
    FAILURES,
    POLL_S,
    BenchError,
    FileProber,
    emit,
    foreign_labs,
    interrupt_on_sigterm,
    log,
    machine,
    med,
    mx,
    outage_windows,
    start_monitor,
    wait_client_served,
    wait_quiet,
)
from _systems import HaclusterSystem, KeepalivedSystem, System

from hacluster.lab.lab import Lab, LabNode, random_prefix
from hacluster.lab.netns import LabError, holds
from hacluster.lab.traffic import outage
from hacluster.lab.wait import WaitTimeout, wait_until

FAULTS = ("poweroff", "isolate", "partition", "kill9", "sigstop", "sigterm", "switchover")
FREEZE_S = 3.0  # sigstop: how long the agent stays frozen
INTERVAL_S = 0.01  # client: one new request every 10 ms
GOOD_TRAFFIC_S = 1.0  # unbroken successes before the fault
TAIL_S = 2.0  # client keeps probing this long past the expected recovery
SETTLE_TIMEOUT_S = 60.0
PROMPT_S = 0.1  # an answer within this long counts as prompt service

# The targets for hacluster (docs/benchmarks.md says which were met).
TARGETS = {
    "poweroff_median_ms": 400, "poweroff_max_ms": 800, "sigterm_median_ms": 150,
    "switchover_median_ms": 150,
    "partition_majority_serving_ms": 800, "overlap_ms": 0,
}  # and 0 leader changes in 10 idle minutes: bench/idle.py


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 1)


# ------------------------------------------------------------------------------ faults


def inject(system: System, fault: str, node: LabNode) -> None:
    lab = system.lab
    if fault == "poweroff":
        lab.power_off(node)
    elif fault == "isolate":
        lab.cut_link(node)
    elif fault == "partition":
        lab.partition(node)
    elif fault == "kill9":
        system.signal_agent(node, signal.SIGKILL)
    elif fault == "sigstop":
        system.signal_agent(node, signal.SIGSTOP)
    elif fault == "sigterm":
        system.signal_agent(node, signal.SIGTERM)
    elif fault == "switchover":
        system.switchover(node)
    else:
        raise ValueError(fault)


def restore(system: System, fault: str, node: LabNode) -> None:
    """Undo the fault: the server is back as a healthy member (not necessarily holder)."""
    lab = system.lab
    if fault == "poweroff":
        system.power_on(node)
    elif fault == "isolate":
        lab.restore_link(node)
    elif fault == "partition":
        lab.heal(node)
    elif fault == "sigstop":
        if system.agent_running(node):
            system.signal_agent(node, signal.SIGCONT)  # idempotent; the trial sent it
    elif fault in ("kill9", "sigterm"):
        system.wait_agent_exit(node, 15)
        system.start_agent(node)
    elif fault == "switchover":
        system.after_switchover(node)


def repair(system: System) -> None:
    """After a failed trial: undo every fault everywhere, restart what is not running."""
    lab = system.lab
    for n in lab.nodes:
        for step in (lambda n=n: lab.restore_link(n), lambda n=n: lab.heal(n)):
            try:
                step()
            except LabError:
                pass  # nothing to undo
        if system.agent_running(n):
            system.signal_agent(n, signal.SIGCONT)
            continue
        try:
            system.wait_agent_exit(n, 10)
        except Exception:  # noqa: BLE001 - a stuck agent: SIGKILL, then start afresh
            try:
                system.signal_agent(n, signal.SIGKILL)
                system.wait_agent_exit(n, 10)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if n.backend is None or n.backend.poll() is not None:
            lab.start_backend(n)
        system.start_agent(n)


# ------------------------------------------------------------------------------ trials


def post_fault_s(system: System, fault: str) -> float:
    """How long the client keeps probing after the fault."""
    if fault == "sigstop":
        return FREEZE_S + max(TAIL_S, system.expected_recovery_s)
    extra = 2.0 if fault == "kill9" and system.name == "hacluster" else 0.0  # VIP lifetime
    return max(3.0, system.expected_recovery_s + extra + TAIL_S)


def run_trial(system: System, fault: str, trial: int, workdir: Path,
              quiet_wait: float) -> dict[str, Any]:
    lab = system.lab
    others, waited = wait_quiet(lab.prefix, quiet_wait)
    holder = lab.node(settle_and_serve(system))
    post = post_fault_s(system, fault)
    mon = start_monitor(lab)
    prober = FileProber(lab, GOOD_TRAFFIC_S + post + 1.0,
                        workdir / f"{system.name}-{fault}-{trial}.jsonl", INTERVAL_S)
    rec: dict[str, Any] = {"trial": trial, "old_holder": holder.name,
                           "other_labs": others, "waited_for_quiet_s": waited,
                           "loadavg1": round(os.getloadavg()[0], 2)}
    try:
        wait_until(lambda: prober.good_for() >= GOOD_TRAFFIC_S or prober.proc.poll() is not None,
                   15, "a second of good client traffic before the fault", interval=0.05)
        if prober.proc.poll() is not None:
            raise BenchError(f"prober ended early: {prober.proc.returncode}")
        window_start = min(a.t for a in prober.attempts())
        fault_at = time.time()
        inject(system, fault, holder)
        rec["fault_at"] = round(fault_at, 6)  # wall clock, as the raw attempts' "t"
        rec["inject_ms"] = round((time.time() - fault_at) * 1000, 1)
        new_holders = lambda: [h for h in lab.holders() if h != holder.name]  # noqa: E731
        if fault == "sigstop":
            time.sleep(max(0.0, fault_at + FREEZE_S - time.time()))  # the freeze itself
            system.signal_agent(holder, signal.SIGCONT)
            wait_until(lambda: len(lab.holders()) == 1, 15, "one holder after SIGCONT", interval=POLL_S)
        else:
            wait_until(new_holders, max(10.0, 4 * system.expected_recovery_s), "a new VIP holder",
                       interval=POLL_S)
        rec["new_holder_poll_ms"] = round((time.time() - fault_at) * 1000, 1)
        if fault == "switchover":
            rec["switchover"] = system.switchover_result()
        if fault == "isolate" and system.name == "hacluster":
            # I4: cut off from the majority, it must drop the VIP by itself, within the lease.
            try:
                wait_until(lambda: not holds(holder.netns, lab.vip), 5, "isolated node's release",
                           interval=POLL_S)
            except WaitTimeout:
                pass  # recorded below as old_holds_at_end
        attempts = prober.result()
        durations = prober.durations()
        window_end = max(a.t for a in attempts) + INTERVAL_S
    finally:
        prober.kill()
        mon.stop()
    rec["old_holds_at_end"] = holds(holder.netns, lab.vip)
    rec.update(_measure(mon, attempts, fault_at, window_start, window_end, holder.name))
    # When did another server (the majority side, for a partition) serve the client? The
    # first prompt answer from a server other than the old holder; an attempt that only
    # got through on a SYN retransmit a second later does not count as prompt.
    other = next((a.t for a in attempts if a.ok and a.t >= fault_at and a.server
                  and a.server != holder.name and durations.get(a.t, 1.0) < PROMPT_S), None)
    rec["other_serving_ms"] = round((other - fault_at) * 1000, 1) if other else None
    rec["monitor_restarts"] = mon.restarts
    # Undo the fault and time how long until the cluster is settled and the client is
    # served again: a system can hurt clients on the way back too (e.g. a demoted holder
    # whose MAC the client still has in its ARP cache).
    t_restore = time.monotonic()
    restore(system, fault, holder)
    try:
        settle_and_serve(system)
        rec["restore_to_served_s"] = round(time.monotonic() - t_restore, 2)
    except BenchError as e:
        rec["restore_to_served_s"] = None
        rec["restore_error"] = str(e)
    return rec


def settle_and_serve(system: System) -> str:
    holder = system.settle(SETTLE_TIMEOUT_S)
    wait_client_served(system.lab, holder, SETTLE_TIMEOUT_S)
    return holder


def _measure(mon: Any, attempts: list[Any], fault_at: float, window_start: float,
             window_end: float, old: str) -> dict[str, Any]:
    """Client-seen outage and holder overlap of one trial.

    outage_ms is the client's lost time: the sum of every gap between successes after the
    fault (each gap minus one probe interval). traffic.outage() measures the first gap only
    (first_gap_ms), and an attempt that was in flight when the fault hit fails on its own
    while later-started ones still succeed, so that first gap can be a few ms before the
    real outage: see docs/benchmarks.md.
    """
    gaps = outage_windows(attempts, fault_at)
    lost = sum(max(0.0, e - s - INTERVAL_S) for s, e in gaps) * 1000
    try:
        o = outage(attempts, fault_at, INTERVAL_S)
        first_gap, failed, after = o.ms, o.failed_attempts, o.after
    except StopIteration:  # traffic.outage(): no success after its first failure
        first_gap, failed, after = float("nan"), -1, None
    recovered = not gaps or math.isfinite(gaps[-1][1])
    overlap = 0.0
    open_at_end = False
    for s, e, _ in mon.overlaps(until=window_end):
        overlap += max(0.0, min(e, window_end) - max(s, window_start))
        open_at_end |= e >= window_end
    trans = [(t, n, p) for t, n, p in mon.transitions() if t >= window_start]
    release = next((t for t, n, p in trans if t >= fault_at and n == old and not p), None)
    claim = next(((t, n) for t, n, p in trans if t >= fault_at and n != old and p), None)
    ms = lambda t: round((t - fault_at) * 1000, 1)  # noqa: E731
    return {
        "outage_ms": _finite(lost) if recovered else None, "recovered": recovered,
        "first_gap_ms": _finite(first_gap), "gaps": len(gaps),
        "gaps_ms": [[ms(s), None if not math.isfinite(e) else ms(e)] for s, e in gaps],
        "span_ms": _finite((gaps[-1][1] - gaps[0][0] - INTERVAL_S) * 1000) if gaps else 0.0,
        "failed_attempts": sum(1 for a in attempts if not a.ok and a.t >= window_start),
        "failed_attempts_outage_fn": failed, "served_after": after,
        "overlap_ms": round(overlap * 1000, 1), "overlap_open_at_end": open_at_end,
        "old_release_ms": ms(release) if release else None,
        "new_claim_ms": ms(claim[0]) if claim else None,
        "new_holder": claim[1] if claim else None,
        "vip_transitions_ms": [[ms(t), n, p] for t, n, p in trans],
        "attempts": len(attempts),
    }


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [t for t in trials if "error" not in t]
    outages = [t["outage_ms"] for t in ok if t["outage_ms"] is not None]
    overlaps = [t["overlap_ms"] for t in ok]
    return {
        "trials": trials,
        "outage_ms": [t["outage_ms"] for t in ok],
        "overlap_ms": overlaps,
        "median_outage_ms": med(outages), "max_outage_ms": mx(outages),
        "max_overlap_ms": mx(overlaps), "median_overlap_ms": med(overlaps),
        "unrecovered": sum(1 for t in ok if not t["recovered"]),
        "errors": len(trials) - len(ok),
        "trials_with_other_labs": sum(1 for t in ok if t.get("other_labs")),
        "overlap_open_at_end": sum(1 for t in ok if t["overlap_open_at_end"]),
        "median_new_claim_ms": med([t["new_claim_ms"] for t in ok
                                    if t.get("new_claim_ms") is not None]),
        "median_old_release_ms": med([t["old_release_ms"] for t in ok
                                      if t.get("old_release_ms") is not None]),
        "max_restore_to_served_s": mx([t["restore_to_served_s"] for t in ok
                                       if t.get("restore_to_served_s") is not None]),
        "restore_errors": sum(1 for t in ok if t.get("restore_error")),
        "median_other_serving_ms": med([t["other_serving_ms"] for t in ok
                                        if t.get("other_serving_ms") is not None]),
        "max_other_serving_ms": mx([t["other_serving_ms"] for t in ok
                                    if t.get("other_serving_ms") is not None]),
        "median_first_gap_ms": med([t["first_gap_ms"] for t in ok
                                    if t.get("first_gap_ms") is not None]),
    }


def run_system(system: System, faults: list[str], trials: int,
               raw_dir: Path | None, quiet_wait: float) -> dict[str, Any]:
    """All trials of one system; the caller owns (and tears down) its lab."""
    workdir = raw_dir or system.lab.dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {f: [] for f in faults}
    broken = False
    for trial in range(1, trials + 1):
        for fault in faults:  # round robin: machine noise spreads over every fault
            if broken:
                results[fault].append({"trial": trial, "error": "skipped: system broken"})
                continue
            t0 = time.monotonic()
            try:
                rec = run_trial(system, fault, trial, workdir, quiet_wait)
            except FAILURES as e:
                log(f"{system.name} {fault} #{trial}: FAILED: {e}")
                rec = {"trial": trial, "error": str(e)}
                try:
                    repair(system)
                    settle_and_serve(system)
                except Exception as e2:  # noqa: BLE001 - give up on this system only
                    log(f"{system.name}: cannot repair ({e2}); skipping its remaining trials")
                    broken = True
            else:
                log(f"{system.name:18} {fault:9} #{trial}: outage {rec['outage_ms']} ms, "
                    f"overlap {rec['overlap_ms']} ms, {rec['old_holder']} -> "
                    f"{rec['new_holder']} ({time.monotonic() - t0:.1f} s)")
            results[fault].append(rec)
    if raw_dir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return {f: summarize(r) for f, r in results.items()}


def keep_logs(lab: Lab, raw_dir: Path | None) -> None:
    """Copy the lab's agent/keepalived logs to raw_dir before the lab (and its dir) goes."""
    if raw_dir is None:
        return
    dest = raw_dir / f"logs-{lab.prefix}"
    for f in lab.dir.glob("*/*.log"):
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / f.parent.name / f.name)


def bench_hacluster(faults: list[str], trials: int, raw_dir: Path | None,
                    quiet_wait: float) -> dict[str, Any]:
    lab = Lab(random_prefix("bf"), 3, balance=False)
    log(f"hacluster: lab {lab.prefix} ({lab.net}.0/24, VIP {lab.vip})")
    try:
        system = HaclusterSystem(lab)
        system.up()
        return run_system(system, faults, trials, raw_dir, quiet_wait)
    finally:
        keep_logs(lab, raw_dir)
        log(f"hacluster: tearing down {len(lab.down())} namespaces")


def bench_keepalived(faults: list[str], trials: int, raw_dir: Path | None,
                     quiet_wait: float) -> dict[str, dict[str, Any]]:
    lab = Lab(random_prefix("bk"), 3, balance=False)
    log(f"keepalived: lab {lab.prefix} ({lab.net}.0/24, VIP {lab.vip})")
    out = {}
    systems: list[KeepalivedSystem] = []
    try:
        lab.up()  # namespaces, backends; its hacluster agents are stopped by up() below
        for variant in ("default", "tuned"):
            system = KeepalivedSystem(lab, variant)
            systems.append(system)
            system.up()
            out[system.name] = run_system(system, faults, trials, raw_dir, quiet_wait)
            system.stop()
        return out
    finally:
        for s in systems:
            s.stop()
        keep_logs(lab, raw_dir)
        log(f"keepalived: tearing down {len(lab.down())} namespaces")


# ------------------------------------------------------------------------------ report


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def ratios(doc: dict[str, Any], faults: list[str]) -> dict[str, float | None]:
    out = {}
    hc = doc["systems"].get("hacluster", {})
    kt = doc["systems"].get("keepalived-tuned", {})
    for f in faults:
        a = hc.get(f, {}).get("median_outage_ms")
        b = kt.get(f, {}).get("median_outage_ms")
        out[f] = round(b / a, 2) if a and b is not None else None
    return out


def table(doc: dict[str, Any], faults: list[str]) -> str:
    s = doc["systems"]
    hdr = (f"{'fault':10} | {'hacluster med/max outage':>24} {'overlap':>8} | "
           f"{'ka-default med':>14} {'overlap':>8} | {'ka-tuned med':>12} {'overlap':>8} | "
           f"{'tuned/hc':>8}")
    lines = [hdr, "-" * len(hdr)]
    for f in faults:
        hc = s.get("hacluster", {}).get(f, {})
        kd = s.get("keepalived-default", {}).get(f, {})
        kt = s.get("keepalived-tuned", {}).get(f, {})
        r = doc["ratios"].get(f)

        def ov(x: dict[str, Any]) -> str:
            if not x or x.get("max_overlap_ms") is None:
                return "-"
            v = x["max_overlap_ms"]
            # Any overlap breaks I1: never let a fraction of a millisecond print as "0".
            text = "0" if v == 0 else (f"{v:.1f}" if v < 10 else f"{v:.0f}")
            return text + ("+" if x.get("overlap_open_at_end") else "")

        lines.append(
            f"{f:10} | {_fmt(hc.get('median_outage_ms')) + ' / ' + _fmt(hc.get('max_outage_ms')):>24}"
            f" {ov(hc):>8} | {_fmt(kd.get('median_outage_ms')):>14} {ov(kd):>8} | "
            f"{_fmt(kt.get('median_outage_ms')):>12} {ov(kt):>8} | "
            f"{'-' if r is None else f'{r:.2f}x':>8}")
    lines.append("outage: client-seen ms (median, max over trials); overlap: max ms two kernels "
                 "held the VIP within the client run ('+': still two holders when it ended)")
    return "\n".join(lines)


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    hc = doc["systems"].get("hacluster", {})

    def get(f: str, k: str) -> Any:
        return hc.get(f, {}).get(k)

    def le(v: float | None, limit: float) -> bool | None:
        return None if v is None else v <= limit

    overl = [x for f in hc.values() for x in f["overlap_ms"]]
    lim = TARGETS
    return {
        "poweroff_median_ms": {"value": get("poweroff", "median_outage_ms"),
                               "limit": lim["poweroff_median_ms"],
                               "met": le(get("poweroff", "median_outage_ms"),
                                         lim["poweroff_median_ms"])},
        "poweroff_max_ms": {"value": get("poweroff", "max_outage_ms"),
                            "limit": lim["poweroff_max_ms"],
                            "met": le(get("poweroff", "max_outage_ms"), lim["poweroff_max_ms"])},
        "sigterm_median_ms": {"value": get("sigterm", "median_outage_ms"),
                              "limit": lim["sigterm_median_ms"],
                              "met": le(get("sigterm", "median_outage_ms"),
                                        lim["sigterm_median_ms"])},
        "switchover_median_ms": {"value": get("switchover", "median_outage_ms"),
                                 "limit": lim["switchover_median_ms"],
                                 "met": le(get("switchover", "median_outage_ms"),
                                           lim["switchover_median_ms"])},
        # From the fault until a majority-side server answers the client (max over trials);
        # the client's own outage is shorter, as the old holder serves until its lease ends.
        "partition_majority_serving_ms": {
            "value": get("partition", "max_other_serving_ms"),
            "median": get("partition", "median_other_serving_ms"),
            "client_outage_median_ms": get("partition", "median_outage_ms"),
            "client_outage_max_ms": get("partition", "max_outage_ms"),
            "limit": lim["partition_majority_serving_ms"],
            "met": le(get("partition", "max_other_serving_ms"),
                      lim["partition_majority_serving_ms"])},
        "overlap_ms": {"value": max(overl) if overl else None, "limit": lim["overlap_ms"],
                       "met": (max(overl) <= lim["overlap_ms"]) if overl else None},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=5, help="trials per fault and system (5)")
    p.add_argument("--faults", default=",".join(FAULTS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--peer", choices=("keepalived", "none", "auto"), default="auto",
                   help="also run keepalived (default and tuned) in the same run; auto = "
                        "if installed")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    p.add_argument("--quiet-wait", type=float, default=30.0, metavar="S",
                   help="before each trial, wait up to S s for other labs on this machine "
                        "to go away (default 30; 0 = do not wait)")
    p.add_argument("--raw-dir", metavar="DIR",
                   help="keep every trial's client attempts (JSON lines) in DIR")
    a = p.parse_args(argv)
    faults = [f.strip() for f in a.faults.split(",") if f.strip()]
    bad = [f for f in faults if f not in FAULTS]
    if bad or not faults:
        p.error(f"unknown fault(s) {bad}; choose from {','.join(FAULTS)}")
    if not 1 <= a.trials <= 200:
        p.error("--trials must be 1-200")
    have_ka = shutil.which("keepalived") is not None
    if a.peer == "keepalived" and not have_ka:
        p.error("--peer keepalived: keepalived is not installed (apt-get install keepalived)")
    with_ka = a.peer == "keepalived" or (a.peer == "auto" and have_ka)

    interrupt_on_sigterm()
    doc: dict[str, Any] = {
        "benchmark": "failover", "command": " ".join([".venv/bin/python", *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
        "params": {"trials": a.trials, "faults": faults, "client_interval_ms": INTERVAL_S * 1000,
                   "good_traffic_before_fault_s": GOOD_TRAFFIC_S, "sigstop_freeze_s": FREEZE_S,
                   "servers": 3, "keepalived": "state BACKUP, nopreempt, unicast peers, "
                   "priorities 150/100/50; default = VRRPv2 advert_int 1; "
                   "tuned = VRRPv3 advert_int 0.1" if with_ka else None},
        "other_labs_at_start": foreign_labs("-"),
        "systems": {},
    }
    t0 = time.monotonic()
    try:
        raw = Path(a.raw_dir) if a.raw_dir else None
        doc["systems"]["hacluster"] = bench_hacluster(faults, a.trials, raw, a.quiet_wait)
        if with_ka:
            doc["systems"].update(bench_keepalived(faults, a.trials, raw, a.quiet_wait))
    except KeyboardInterrupt:
        log("interrupted: labs torn down; printing what was measured")
        doc["interrupted"] = True
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    doc["ratios"] = {"keepalived_tuned_over_hacluster_median": ratios(doc, faults)}
    doc["ratios_note"] = "keepalived-tuned median outage / hacluster median outage, per fault"
    doc["targets"] = targets(doc) if doc["systems"].get("hacluster") else {}
    print(table({**doc, "ratios": doc["ratios"]["keepalived_tuned_over_hacluster_median"]},
                faults), file=sys.stderr)
    return emit(doc, a.json_out)


if __name__ == "__main__":
    sys.exit(main())
