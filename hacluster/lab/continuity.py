"""Do established connections survive a fault? hacluster.lab.flows run in the lab's client
namespace (FlowRun), and the accounting of what it saw (account, problems).

    run = FlowRun(lab, workdir / "flows.jsonl", flows=20, avoid=[holder])
    run.wait_ready()            # every flow streaming, HL7 ACKing, new connections served
    fault_at = time.time(); lab.power_off(lab.node(holder))
    acc = account(run.result(), fault_at, dead={holder})
    assert not problems(acc)

"A flow to a surviving backend" is one served by a backend whose server the fault did not
take away (`dead`: the server powered off or cut off; nobody for a SIGTERM or a planned
switchover, where every backend lives on). The issue's demand (issue 14) is that every such
flow completes, and that the one HL7 connection sees no reconnect, no lost message and no
duplicate.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hacluster.lab.backend import MLLP_PORT
from hacluster.lab.lab import HTTP_PORT, Lab, cli_argv
from hacluster.lab.netns import LabError
from hacluster.lab.wait import wait_until


def _ms(t: float | None, since: float) -> float | None:
    return None if t is None else round((t - since) * 1000, 1)


def new_connections(probes: list[list[Any]], since: float, interval_s: float,
                    hold_s: float = 1.0) -> dict[str, Any]:
    """When new connections failed after `since` (the fault): each probe is [start, ok].

    failing_ms is the time from `since` until new connections stop failing: the start of the
    first success after the last failure (0 when none failed). The run must have gone on
    without a failure for `hold_s` after that last failure to say so; otherwise new
    connections count as still failing (recovered False, failing_ms None): a share of them
    failing until the end (a dead backend left in a table) is not a recovery.
    failed_span_ms runs from the first failure to that success.
    """
    after = sorted((p[0], p[1]) for p in probes if p[0] >= since)
    failed = [t for t, ok in after if not ok]
    why = Counter(p[2] for p in probes if p[0] >= since and not p[1] and len(p) > 2)
    out: dict[str, Any] = {"attempts": len(after), "failed": len(failed), "failing_ms": 0.0,
                           "failed_span_ms": 0.0, "recovered": True, "why": dict(why)}
    if not failed:
        return out
    back = next((t for t, ok in after if ok and t > failed[-1]), None)
    if back is None or after[-1][0] - failed[-1] < hold_s:
        back = None
    out["recovered"] = back is not None
    out["failing_ms"] = _ms(back, since)
    out["failed_span_ms"] = None if back is None else round((back - failed[0]) * 1000, 1)
    out["first_failure_ms"] = _ms(failed[0], since)
    out["last_failure_ms"] = _ms(failed[-1], since)
    out["interval_ms"] = round(interval_s * 1000, 1)
    return out


def account(doc: dict[str, Any], fault_at: float | None, dead: Iterable[str] = ()) -> dict[str, Any]:
    """What one flows.py run says about a fault at `fault_at` (wall clock; None: no fault,
    measured from ready) that took the servers `dead` away."""
    dead = set(dead)
    since = fault_at if fault_at is not None else (doc.get("ready_at") or doc["t0"])
    flows = doc["flows"]
    established = [f for f in flows if f["backend"] is not None]
    surviving = [f for f in established if f["backend"] not in dead]
    completed = [f for f in surviving if f["outcome"] == "completed"]
    broken = [f for f in surviving if f["outcome"] != "completed"]
    h = doc["hl7"]
    setup = [c for c in h["connects"] if c["setup"]]
    later = [c for c in h["connects"] if not c["setup"]]
    return {
        "ready": doc.get("ready_at") is not None,
        "dead": sorted(dead),
        "flows": {
            "requested": len(flows), "established": len(established),
            "to_dead": len(established) - len(surviving), "to_surviving": len(surviving),
            "survived": len(completed),
            "survived_pct": round(100 * len(completed) / len(surviving), 1) if surviving else None,
            "broken": [{"backend": f["backend"], "error": f["error"], "lines": f["lines"],
                        "ended_ms": _ms(f["ended"], since)} for f in broken],
            # the longest client stall on an established flow that lived through the fault
            "longest_stall_ms": max((f["max_gap_ms"] for f in completed), default=None),
            "chunk_ms": doc["params"]["chunk_ms"],
        },
        "hl7": {
            "backend": setup[-1]["backend"] if setup else None,
            "to_dead": bool(setup) and setup[-1]["backend"] in dead,
            "sent": h["sent"], "acked": h["acked"], "reconnects": len(later),
            "reconnect_reasons": [c["reason"] for c in later][:10],
            "lost": len(h["unacked"]), "duplicates": h["received"]["duplicates"],
            "acked_not_received": len(h["received"]["acked_not_received"]),
            "unreadable_records": h["received"]["unreadable"],
            "resent": h["transmissions"] - h["sent"], "mismatched_acks": h["mismatched_acks"],
            "longest_ack_gap_ms": h["max_ack_gap_ms"], "interval_ms": doc["params"]["hl7_interval"] * 1000,
        },
        "new_connections": new_connections(doc["probes"], since, doc["params"]["probe_interval"]),
        # the client's own worst stall: a figure above far exceeding it is the network's
        "client_max_lag_ms": doc.get("client_max_lag_ms"),
    }


def problems(acc: dict[str, Any], min_flows: int = 1) -> list[str]:
    """Everything in `acc` that breaks the issue's demand, in words (empty: all kept)."""
    out = []
    f, h = acc["flows"], acc["hl7"]
    if not acc["ready"]:
        out.append("the client never settled before the fault")
    if f["to_surviving"] < min_flows:
        out.append(f"only {f['to_surviving']} flows to surviving backends (wanted >= {min_flows})")
    for b in f["broken"]:
        out.append(f"flow to surviving {b['backend']} broke {b['ended_ms']} ms after the fault "
                   f"at line {b['lines']}: {b['error']}")
    if h["reconnects"]:
        out.append(f"HL7: {h['reconnects']} reconnect(s): {h['reconnect_reasons']}")
    if h["lost"]:
        out.append(f"HL7: {h['lost']} message(s) never ACKed")
    if h["duplicates"]:
        out.append(f"HL7: {h['duplicates']} message(s) received more than once")
    if h["acked_not_received"] or h["unreadable_records"]:
        out.append(f"HL7: {h['acked_not_received']} ACKed message(s) no backend recorded "
                   f"(unreadable records: {h['unreadable_records']})")
    return out


class FlowRun:
    """hacluster.lab.flows in the lab's client namespace; stdout to `path` (read while it
    runs, for the ready line), stderr beside it."""

    def __init__(self, lab: Lab, path: Path, flows: int = 20, duration: float = 6.0,
                 avoid: Iterable[str] = (), setup: float = 4.0, extra: Iterable[str] = ()):
        self.path, self.setup, self.duration = path, setup, duration
        path.parent.mkdir(parents=True, exist_ok=True)
        self._err_path = path.with_suffix(".stderr")
        seen = [f"--seen={n.name}={n.log.with_name('backend.log')}" for n in lab.nodes + lab.externals]
        cmd = ["ip", "netns", "exec", lab.client_ns, lab.python, "-m", "hacluster.lab.flows",
               "--host", lab.vip, "--http-port", str(HTTP_PORT), "--mllp-port", str(MLLP_PORT),
               "--flows", str(flows), "--duration", str(duration), "--setup", str(setup),
               *(f"--avoid={name}" for name in avoid), *seen, *extra]
        with open(path, "w") as out, open(self._err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def _lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # being written
        return out

    def _fail(self, what: str) -> LabError:
        self.kill()
        return LabError(f"flows: {what}; stderr:\n{self._err_path.read_text()[-2000:]}")

    def wait_ready(self) -> float:
        """Wait until the client is settled; return when it said so (wall clock)."""
        lines = wait_until(lambda: self._lines() or self.proc.poll() is not None, self.setup + 10,
                           "the flows client's ready line", interval=0.02)
        if lines is True or not lines or lines[0].get("ready") is None:
            raise self._fail(f"not settled within {self.setup:g} s (exit {self.proc.poll()})")
        return float(lines[0]["ready"])

    def result(self) -> dict[str, Any]:
        try:
            self.proc.wait(self.setup + self.duration + 30)
        except subprocess.TimeoutExpired:
            raise self._fail("did not end in time") from None
        lines = self._lines()
        if self.proc.returncode != 0 or not lines or "flows" not in lines[-1]:
            raise self._fail(f"exited {self.proc.returncode} without its document")
        return lines[-1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def sync_state(lab: Lab, name: str) -> str | None:
    """The connection sync's state on server `name` as its agent reports it (`hacluster
    status --agent --json`): "ok", "down", "off", or None when it did not answer."""
    node = lab.node(name)
    try:
        proc = subprocess.run(cli_argv(node.netns, "status", "--agent", "--json", "--timeout", "1",
                                       "--config", str(node.config)),
                              capture_output=True, text=True, timeout=15)
        sync = json.loads(proc.stdout).get("connection_sync") if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None
    return sync.get("state") if isinstance(sync, dict) else None


def run_through(lab: Lab, fault: Any, workdir: Path, dead: Iterable[str] = (), avoid: Iterable[str] = (),
                flows: int = 20, duration: float = 6.0, after: Any = None) -> dict[str, Any]:
    """Flows through the VIP, `fault()` once they are settled, `after()` (e.g. wait for the
    new holder) while they run; the accounting of the run (its raw document under "raw")."""
    run = FlowRun(lab, workdir / f"flows-{time.monotonic_ns()}.jsonl", flows, duration, avoid)
    try:
        run.wait_ready()
        fault_at = time.time()
        fault()
        if after is not None:
            after()
        doc = run.result()
    finally:
        run.kill()
    acc = account(doc, fault_at, dead)
    acc["fault_at"] = fault_at
    acc["raw"] = doc
    return acc


__all__ = ["FlowRun", "account", "new_connections", "problems", "run_through", "sync_state"]
