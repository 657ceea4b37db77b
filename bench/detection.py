"""Health detection benchmark: how long until a failed backend leaves the balancing view.

    .venv/bin/python bench/detection.py [--trials 5] [--faults backend,poweroff,holder]
                                        [--peer haproxy|none|auto] [--json-out FILE]

A 3-server namespace lab whose servers each check their own HTTP backend (interval 500 ms,
timeout 300 ms, rise 2, fall 2: the lab's defaults), balanced round-robin through the VIP.
Each trial fails one server at a recorded wall time (a follower, or for `holder` the VIP
holder) and measures, from the agents' logs (millisecond stamps):

  local     the failing server's own check turns FAILING (its fall count reached)
  dead      (poweroff) the leader's gossip declares the server dead
  commit    the leader commits `node/web=down` to the replicated state (what the
            balancing table follows); every member then applies it within one Raft round.
            For a powered-off server this comes before `dead`: gossip's suspicion plus
            a window without Raft heartbeat acks is enough (health.corroborate_ms); for the
            holder, the new leader's epoch entry itself ("suspect by election")
  newconn   what a client sees: one new HTTP connection to the VIP every 20 ms
            (hacluster.lab.prober, 1 s timeout); the time from the fault until new
            connections stop failing (the start of the final unbroken run of successes),
            and how many failed. Round-robin sends every third new flow to the failed
            backend until the table without it is programmed on the VIP holder; for the
            holder, the VIP must move too

Faults:
  backend   the HTTP backend process is stopped; the server and its agent stay up
  poweroff  Lab.power_off of a follower: cable out, every process killed. The server cannot
            report its own failure: the verdict comes from gossip (probe, suspicion,
            Lifeguard timeout) or gossip's suspicion plus Raft's silence
  holder    Lab.power_off of the VIP holder (the Raft leader): a new leader is elected,
            claims the VIP, and the dead server's backend must leave the table with it

With HAProxy installed (--peer auto), the same three backends are checked by HAProxy 2.6
from the client namespace with the same settings (`check inter 500 fall 2 rise 2`,
`timeout check 300`), running during the same trials; its figure is the time until its
stats socket shows the server DOWN. HAProxy runs one process that checks every backend
itself; hacluster's figure includes gossip, the leader's settle time (500 ms) and a Raft
commit, i.e. the price of every member agreeing on the verdict.

Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Benchmarks are programs, not asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _labkit import (  # noqa: E402
    POLL_S,
    PYTHON,
    FileProber,
    interrupt_on_sigterm,
    log,
    machine,
    med,
    mx,
)

from hacluster.lab.lab import HTTP_PORT, Lab, LabNode, random_prefix  # noqa: E402
from hacluster.lab.wait import wait_until  # noqa: E402

NEWCONN_INTERVAL_S = 0.02  # the client's new connections (the figure is at 20 ms)
NEWCONN_TIMEOUT_S = 1.0
NEWCONN_STABLE_S = 2.0  # successes this long after the last failure: failures are over
NEWCONN_MAX_S = 10.0  # the client runs at most this long after the fault
FAULTS = ("backend", "poweroff", "holder")

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_lines_after(path: Path, t0: float, pattern: str) -> float | None:
    """Wall time of the first log line at or after t0 that contains `pattern`."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        m = STAMP.match(line)
        if not m or pattern not in line:
            continue
        t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
        if t >= t0 - 0.001:
            return t
    return None


class Haproxy:
    """HAProxy in the client namespace, health-checking the lab's backends."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.dir = lab.dir / "haproxy"
        self.sock = self.dir / "stats.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"    server {n.name} {n.ip}:{HTTP_PORT} check inter 500 fall 2 rise 2"
            for n in self.lab.nodes)
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(f"""global
    stats socket {self.sock} mode 600 level admin
defaults
    mode http
    timeout connect 300ms
    timeout check 300ms
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:18080
    default_backend servers
backend servers
    option httpchk GET /
{servers}
""")
        with open(self.dir / "haproxy.log", "ab") as f:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.client_ns, "haproxy", "-db", "-f", str(cfg)],
                stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self.sock.exists() and self.states() is not None, 10, "haproxy up",
                   interval=POLL_S)

    def states(self) -> dict[str, str] | None:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(str(self.sock))
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return None
        lines = data.decode().splitlines()
        if not lines or not lines[0].startswith("# "):
            return None
        head = lines[0][2:].split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(head, line.split(","), strict=False))
            if row.get("pxname") == "servers" and row.get("svname") not in ("BACKEND", None):
                out[row["svname"]] = row.get("status", "")
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def leader(lab: Lab) -> LabNode:
    name = wait_until(lambda: (h := lab.holders()) and h[0], 30, "a VIP holder", interval=POLL_S)
    return lab.node(name)


def committed_up(lab: Lab, node: LabNode, since: float, lead: LabNode) -> bool:
    return log_lines_after(lead.log, since, f"{node.name}/web=up") is not None


def newconn(attempts: list[Any], t0: float) -> dict[str, Any]:
    """New connections around the fault: until when they failed, and how many did."""
    window = [a for a in attempts if a.t >= t0 - NEWCONN_TIMEOUT_S]
    failed = [a for a in window if not a.ok]
    if not failed:
        return {"newconn_ms": 0.0, "newconn_failed": 0, "newconn_first_fail_ms": None}
    last = max(a.t for a in failed)
    back = next((a.t for a in window if a.t > last and a.ok), None)
    return {"newconn_ms": None if back is None else round((back - t0) * 1000, 1),
            "newconn_failed": len(failed),
            "newconn_first_fail_ms": round((min(a.t for a in failed) - t0) * 1000, 1),
            "newconn_failed_at_ms": [round((a.t - t0) * 1000) for a in failed]}


def client_settled(prober: FileProber) -> bool:
    """The client has seen NEWCONN_STABLE_S of successes since its last failure (longer
    than its timeout: an attempt still hanging then would have been reported by now)."""
    return prober.good_for() >= NEWCONN_STABLE_S


def trial(lab: Lab, fault: str, hap: Haproxy | None) -> dict[str, Any]:
    lead = leader(lab)
    victim = lead if fault == "holder" else next(n for n in lab.nodes if n is not lead)
    if hap is not None:
        wait_until(lambda: (hap.states() or {}).get(victim.name, "").startswith("UP"), 30,
                   "haproxy sees the victim UP", interval=POLL_S)
    prober = FileProber(lab, 1.0 + NEWCONN_MAX_S + 2.0, lab.dir / f"newconn-{time.time():.0f}.jsonl",
                        NEWCONN_INTERVAL_S, NEWCONN_TIMEOUT_S)
    try:
        wait_until(lambda: prober.good_for() >= 1.0, 15, "a second of good client traffic",
                   interval=0.05)
        t0 = time.time()
        if fault == "backend":
            lab.stop_backend(victim)
        else:
            lab.power_off(victim)
        if fault == "holder":  # the verdicts are the new leader's
            lead = lab.node(wait_until(lambda: (h := [x for x in lab.holders()
                                                      if x != victim.name]) and h[0],
                                       10, "a new VIP holder", interval=POLL_S))
        hap_seen: list[float] = []  # when HAProxy first said DOWN

        def verdicts() -> tuple[float, float] | None:
            if hap is not None and not hap_seen and \
                    (hap.states() or {}).get(victim.name, "").startswith("DOWN"):
                hap_seen.append(time.time())
            commit = log_lines_after(lead.log, t0, f"{victim.name}/web=down")
            dead = log_lines_after(lead.log, t0, f"gossip: {victim.name} is dead") \
                if fault != "backend" else 0.0
            done = commit is not None and dead is not None and (hap is None or hap_seen)
            return (commit, dead) if done else None

        commit, dead = wait_until(verdicts, 30, f"{fault}: every verdict", interval=POLL_S)
        wait_until(lambda: client_settled(prober) or time.time() - t0 > NEWCONN_MAX_S, 30,
                   "new connections succeeding again", interval=0.1)
    finally:
        prober.kill()
    conns = newconn(prober.attempts(), t0)
    hap_down = hap_seen[0] if hap_seen else None
    local = log_lines_after(victim.log, t0, "check web: passing -> failing") \
        if fault == "backend" else None
    dead = dead if fault != "backend" else None

    def ms(t: float | None) -> float | None:
        return None if t is None else round((t - t0) * 1000, 1)

    row = {"fault": fault, "victim": victim.name, "leader": lead.name, "local_ms": ms(local),
           "dead_ms": ms(dead), "commit_ms": ms(commit), "haproxy_down_ms": ms(hap_down), **conns}
    # undo, and wait until everything is back up before the next trial
    t1 = time.time()
    if fault == "backend":
        lab.start_backend(victim)
    else:
        lab.power_on(victim)
    wait_until(lambda: committed_up(lab, victim, t1, leader(lab)), 60, "committed up again",
               interval=0.1)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5, choices=range(1, 51), metavar="1-50")
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--peer", choices=("auto", "haproxy", "none"), default="auto")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    faults = args.faults.split(",")
    if not faults or any(f not in FAULTS for f in faults):
        p.error(f"--faults: a comma-separated subset of {','.join(FAULTS)}")
    use_hap = args.peer == "haproxy" or (args.peer == "auto" and shutil.which("haproxy"))
    if args.peer == "haproxy" and not shutil.which("haproxy"):
        p.error("--peer haproxy: haproxy is not installed (apt-get install haproxy)")
    interrupt_on_sigterm()
    lab = Lab(random_prefix("bd"), 3, python=PYTHON)
    hap = Haproxy(lab) if use_hap else None
    rows: list[dict[str, Any]] = []
    try:
        log(f"lab {lab.prefix}: up")
        lab.up()
        if hap is not None:
            hap.start()
        wait_until(lambda: all(committed_up(lab, n, 0, leader(lab)) for n in lab.nodes), 30,
                   "every backend committed up", interval=0.1)
        for fault in faults:
            for i in range(args.trials):
                row = trial(lab, fault, hap)
                log(f"{fault} #{i + 1}: {row}")
                rows.append(row)
    finally:
        if hap is not None:
            hap.stop()
        lab.down()
    summary = {}
    for fault in faults:
        rs = [r for r in rows if r["fault"] == fault]
        summary[fault] = {k: {"median": med([r[k] for r in rs if r[k] is not None]),
                              "max": mx([r[k] for r in rs if r[k] is not None])}
                          for k in ("local_ms", "dead_ms", "commit_ms", "haproxy_down_ms",
                                    "newconn_ms", "newconn_failed")}
        hm, cm = summary[fault]["haproxy_down_ms"]["median"], summary[fault]["commit_ms"]["median"]
        summary[fault]["commit_vs_haproxy"] = round(cm / hm, 2) if hm and cm else None
    print(f"{'fault':<10} {'local':>14} {'dead':>14} {'commit':>14} {'haproxy DOWN':>14} "
          f"{'ratio':>6} {'new conns fail':>15} {'failed':>9}", file=sys.stderr)
    def cell(s: dict[str, Any], k: str) -> str:
        v = s[k]
        return "-" if v["median"] is None else f"{v['median']:.0f} / {v['max']:.0f}"

    for fault, s in summary.items():
        print(f"{fault:<10} {cell(s, 'local_ms'):>14} {cell(s, 'dead_ms'):>14} "
              f"{cell(s, 'commit_ms'):>14} {cell(s, 'haproxy_down_ms'):>14} "
              f"{s['commit_vs_haproxy'] or '-':>6} {cell(s, 'newconn_ms'):>15} "
              f"{cell(s, 'newconn_failed'):>9}", file=sys.stderr)
    print("(median / max in ms from the fault; ratio = hacluster commit / haproxy DOWN; new "
          "conns fail = until new connections through the VIP stop failing; failed = how many "
          "of them failed, one every 20 ms)", file=sys.stderr)
    doc = {"bench": "detection", "command": " ".join([".venv/bin/python", *sys.argv]),
           "trials": args.trials, "machine": machine(),
           "summary": summary, "rows": rows}
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
