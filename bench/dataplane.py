"""Data plane benchmark: requests/s through the VIP, direct to a backend, and via HAProxy.

    .venv/bin/python bench/dataplane.py [--rounds 3] [--duration 10] [--connections 32]
                                        [--threads 2] [--peer haproxy|none|auto]
                                        [--quiet-wait 20] [--json-out FILE]

Needs wrk and nginx (apt-get install wrk nginx-light; exit 2 without them); HAProxy is
measured when installed.

The issue's targets, same run: through the VIP >= 0.7x direct-to-backend requests/s with
keep-alive, >= 1.2x HAProxy with keep-alive and >= 2x HAProxy with a new connection per
request.

A 3-server namespace lab whose VIP (port 80) is balanced by the agents' nftables table
(`Lab(balance=True, algorithm="round-robin")`: DNAT to the three servers' backends, SNAT
towards them). The lab's own backends (a Python http.server) are replaced by nginx, one per
server namespace, bound to the server's address on port 80: one worker, `access_log off`,
a fixed small body with the server's name (the lab's "web" health check keeps passing, so
all three stay in the table). From the client namespace, wrk measures three targets:

  vip      http://VIP/: the kernel data plane on the VIP holder (nftables DNAT over the
           three nginx, conntrack, SNAT; a third of the flows stay on the holder)
  direct   http://SERVER/: one nginx directly (a server that does not hold the VIP)
  haproxy  http://HOLDER:8080/: HAProxy 2.6 in the VIP holder's namespace (where the
           kernel data plane runs), `mode http`, `balance roundrobin` over the same three
           nginx, `option http-keep-alive`, its default thread count (one per CPU), its
           server connections from an address of their own (see Haproxy); skipped
           (peer: none) when haproxy is not installed

in two modes: keep-alive (wrk's default: -c connections reused for every request) and
close (wrk -H 'Connection: close': one TCP connection per request; HAProxy then opens one
server connection per request too, as its default `http-reuse safe` never reuses a server
connection for a session's first request). nginx's keepalive_requests is raised so that no
keep-alive connection is closed by the server during a run. Every measurement runs
`--rounds` times, interleaved (vip, direct, haproxy, vip, ... per mode, both modes per
round) so that machine noise spreads over every target; the report is the median
requests/s and latency p50/p99 over the rounds, and the ratios vip/direct and vip/haproxy
per mode next to the issue's targets.

Caveat: this machine has 2 CPUs; wrk, the three agents, the three nginx, HAProxy and the
kernel's softirq work (forwarding, NAT) all share them, so each figure is a whole-system
throughput under CPU contention, not a property of one component; the ratios are what to
compare between machines. wrk runs 2 threads by default: with one, its thread pegged one
CPU while the machine stayed ~17 % idle, so vip and direct measured wrk, not the data
path (the `wrk` column, CPUs used by the load generator, shows which side set the pace).
Each measurement records the machine's CPU busy fraction, the
other labs present (other people's tests compete for the same CPUs) and kernel counters of
the lab's namespaces (SYN retransmits, listen-queue drops, conntrack drops): in close mode
a SYN that is retransmitted costs its connection >= 1 s, which wrk's latency (measured from
the request's write, after the connect) does not show but requests/s does.

Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Benchmarks are programs, not asserts: nothing here fails on a slow figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _labkit import (  # noqa: E402
    FAILURES,
    POLL_S,
    PYTHON,
    BenchError,
    client_get,
    foreign_labs,
    interrupt_on_sigterm,
    log,
    machine,
    wait_quiet,
)
from _servers import HAPROXY_PORT, SOURCE_HOST, Haproxy, Nginx  # noqa: E402

from hacluster.lab.lab import HTTP_PORT, Lab, random_prefix  # noqa: E402
from hacluster.lab.wait import wait_until  # noqa: E402

WARMUP_S = 1  # unrecorded wrk run per target before the first round
MODES = ("keepalive", "close")
NPROC = os.cpu_count() or 1
TARGETS = ("vip", "direct", "haproxy")
# (mode, numerator, denominator) -> the issue's minimum ratio of requests/s
GOALS: dict[tuple[str, str, str], float | None] = {
    ("keepalive", "vip", "direct"): 0.7,
    ("keepalive", "vip", "haproxy"): 1.2,
    ("close", "vip", "direct"): None,  # reported, no target
    ("close", "vip", "haproxy"): 2.0,
}

# wrk prints its own summary; done() adds one exact JSON line (latencies in microseconds).
WRK_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRKJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,' ..
    '"status_errors":%.0f,"timeouts":%.0f,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"mean_us":%.1f,"max_us":%.0f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


# ------------------------------------------------------------------------------ probing


def spread(lab: Lab, url: str, tries: int = 6) -> list[str | None]:
    return [client_get(lab, url, 1) for _ in range(tries)]


def wait_spread(lab: Lab, url: str, what: str, timeout: float = 20,
                alive: Callable[[], None] | None = None) -> list[str | None]:
    """Wait until consecutive new connections to `url` reach every server's nginx;
    `alive` raises BenchError (with the reason) if the server under test has exited."""
    want = {n.name for n in lab.nodes}

    def cond() -> list[str | None] | None:
        if alive is not None:
            alive()
        s = spread(lab, url)
        return s if set(s) == want else None
    return wait_until(cond, timeout, f"{what} reaching all of {sorted(want)}", interval=0.2)


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


def tcp_counters(ns: str) -> dict[str, int]:
    """Kernel counters of namespace `ns` that explain lost throughput: SYN retransmits and
    listen-queue drops (TCP MIB), and conntrack's invalid/insert_failed/drop (summed over
    CPUs; only there when conntrack is loaded in that namespace)."""
    p = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                        "cat /proc/net/netstat /proc/net/snmp; echo CT; "
                        "cat /proc/net/stat/nf_conntrack 2>/dev/null"],
                       capture_output=True, text=True, timeout=10)
    mib, _, ct = p.stdout.partition("CT\n")
    out: dict[str, int] = {}
    lines = mib.splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        prefix, _, names = head.partition(":")
        for k, v in zip(names.split(), vals.partition(":")[2].split(), strict=False):
            if f"{prefix}.{k}" in ("TcpExt.TCPSynRetrans", "TcpExt.ListenDrops",
                                   "TcpExt.ListenOverflows"):
                out[k] = int(v)
    rows = [r.split() for r in ct.splitlines() if r.strip()]
    if rows:
        cols = rows[0]
        for k in ("invalid", "insert_failed", "drop"):
            if k in cols:
                i = cols.index(k)
                out["ct_" + k] = sum(int(r[i], 16) for r in rows[1:] if len(r) > i)
    return out


def counters(lab: Lab) -> dict[str, dict[str, int]]:
    return {"client": tcp_counters(lab.client_ns),
            **{n.name: tcp_counters(n.netns) for n in lab.nodes}}


def counter_deltas(before: dict[str, dict[str, int]],
                   after: dict[str, dict[str, int]]) -> dict[str, int]:
    """What a run added: client SYN retransmits, servers' listen drops, conntrack drops."""
    def total(side: dict[str, dict[str, int]], names: list[str], key: str) -> int:
        return sum(side.get(n, {}).get(key, 0) for n in names)
    servers = [n for n in after if n != "client"]
    out = {"client_syn_retrans": total(after, ["client"], "TCPSynRetrans")
           - total(before, ["client"], "TCPSynRetrans"),
           "servers_syn_retrans": total(after, servers, "TCPSynRetrans")
           - total(before, servers, "TCPSynRetrans"),
           "servers_listen_drops": total(after, servers, "ListenDrops")
           - total(before, servers, "ListenDrops")}
    for k in ("ct_invalid", "ct_insert_failed", "ct_drop"):
        out["servers_" + k] = total(after, servers, k) - total(before, servers, k)
    return out


def wrk(lab: Lab, url: str, mode: str, a: argparse.Namespace, script: Path) -> dict[str, Any]:
    cmd = ["ip", "netns", "exec", lab.client_ns, "wrk", f"-t{a.threads}", f"-c{a.connections}",
           f"-d{a.duration}s", "--latency", "-s", str(script)]
    if mode == "close":
        cmd += ["-H", "Connection: close"]
    cmd.append(url)
    b0, t0 = cpu_times()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk {url} did not finish within {a.duration + 30} s") from None
    b1, t1 = cpu_times()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # wrk is our (waited-for) child through `ip netns exec`, which execs it
    client_cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    line = next((x for x in p.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        raise BenchError(f"wrk {url} failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
    r = json.loads(line[len("WRKJSON "):])
    secs = r["duration_us"] / 1e6
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors",
                                "status_errors", "timeouts"))
    return {
        "rps": round(r["requests"] / secs, 1) if secs > 0 else None,
        "requests": int(r["requests"]), "seconds": round(secs, 3),
        "p50_ms": round(r["p50_us"] / 1000, 3), "p90_ms": round(r["p90_us"] / 1000, 3),
        "p99_ms": round(r["p99_us"] / 1000, 3), "mean_ms": round(r["mean_us"] / 1000, 3),
        "max_ms": round(r["max_us"] / 1000, 3), "errors": int(errors),
        "error_detail": {k: int(r[k]) for k in ("connect_errors", "read_errors",
                                                "write_errors", "status_errors", "timeouts")
                         if r[k]},
        "cpu_busy": round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else None,
        # CPUs the load generator kept busy: near --threads means wrk, not the target,
        # set the pace
        "client_cpus": round(client_cpu / secs, 2) if secs > 0 else None,
        # machine CPU time per request (everything: wrk, nginx, the balancer, the agents)
        "cpu_us_per_request": round((b1 - b0) / (t1 - t0) * NPROC * secs / r["requests"] * 1e6, 1)
        if t1 > t0 and r["requests"] else None,
    }


# ------------------------------------------------------------------------------ report


def median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        out[mode] = {}
        for target in TARGETS:
            rs = [r for r in runs if r["mode"] == mode and r["target"] == target
                  and "error" not in r]
            if not rs:
                continue

            def m(k: str, nd: int, rs: list[dict[str, Any]] = rs) -> float | None:
                v = median([r[k] for r in rs])
                return None if v is None else round(v, nd)
            out[mode][target] = {
                "rps_median": m("rps", 1), "p50_ms_median": m("p50_ms", 3),
                "p99_ms_median": m("p99_ms", 3), "rps_rounds": [r["rps"] for r in rs],
                "errors": sum(r["errors"] for r in rs),
                # SYNs the kernel sent again (client -> target, and HAProxy -> nginx): each
                # one is a connection that waited >= 1 s, lost throughput in close mode
                "syn_retrans": sum(r.get("kernel", {}).get("client_syn_retrans", 0)
                                   + r.get("kernel", {}).get("servers_syn_retrans", 0)
                                   for r in rs),
                "requests": sum(r["requests"] for r in rs),
                "cpu_busy_median": m("cpu_busy", 3), "rounds": len(rs),
                "cpu_us_per_request_median": m("cpu_us_per_request", 1) if all(
                    r.get("cpu_us_per_request") is not None for r in rs) else None,
                "client_cpus_median": m("client_cpus", 2) if all(
                    r.get("client_cpus") is not None for r in rs) else None,
            }
    return out


def balancer_cost(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per mode, the CPU a request costs the machine through each balancer beyond what it
    costs direct to a backend (µs, medians): the balancer's own price per request, with
    wrk's and nginx's share taken out. A complement to the req/s ratios, which on a
    machine that also runs the load generator and the backends dilute the balancer's cost
    in theirs."""
    out: dict[str, dict[str, float | None]] = {}
    for mode, targets in summary.items():
        base = targets.get("direct", {}).get("cpu_us_per_request_median")
        row: dict[str, float | None] = {}
        for t in ("vip", "haproxy"):
            v = targets.get(t, {}).get("cpu_us_per_request_median")
            row[t + "_extra_us"] = None if v is None or base is None else round(v - base, 1)
        a, b = row.get("vip_extra_us"), row.get("haproxy_extra_us")
        row["haproxy_over_vip"] = round(b / a, 2) if a and b and a > 0 else None
        out[mode] = row
    return out


def ratios(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for (mode, num, den), goal in GOALS.items():
        a = summary.get(mode, {}).get(num, {}).get("rps_median")
        b = summary.get(mode, {}).get(den, {}).get("rps_median")
        value = round(a / b, 2) if a and b else None
        out.append({"mode": mode, "ratio": f"{num}/{den}", "value": value, "target": goal,
                    "met": None if goal is None or value is None else value >= goal})
    return out


def table(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    names = {"vip": f"vip {doc['lab'].get('vip', '')}",
             "direct": f"direct {doc['lab'].get('direct_backend', '')}",
             "haproxy": f"haproxy@{doc['lab'].get('holder', '')}"}
    hdr = (f"{'mode':10} {'target':22} {'req/s med':>10} {'p50 ms':>8} {'p99 ms':>8} "
           f"{'errors':>7} {'syn rtx':>7} {'cpu':>5} {'wrk':>5}  req/s per round")
    lines = [hdr, "-" * len(hdr)]
    for mode in MODES:
        for t in TARGETS:
            x = s.get(mode, {}).get(t)
            if x is None:
                why = "no result"
                if t == "haproxy" and doc["params"]["peer"] == "none":
                    why = "not installed (peer: none)" if \
                        doc["versions"]["haproxy"] == "not installed" else "not measured " \
                        "(--peer none)"
                lines.append(f"{mode:10} {names[t]:22} {'-':>10}  {why}")
                continue

            def f(v: float | None, spec: str) -> str:
                return "-" if v is None else format(v, spec)
            lines.append(
                f"{mode:10} {names[t]:22} {f(x['rps_median'], '.0f'):>10} "
                f"{f(x['p50_ms_median'], '.3f'):>8} {f(x['p99_ms_median'], '.3f'):>8} "
                f"{x['errors']:>7} {x['syn_retrans']:>7} {f(x['cpu_busy_median'], '.2f'):>5} "
                f"{f(x.get('client_cpus_median'), '.2f'):>5}  "
                + " ".join(f"{v:.0f}" for v in x["rps_rounds"]))
    lines.append("")
    lines.append(f"{'ratio (req/s medians)':32} {'value':>7} {'target':>8}  verdict")
    for r in doc["ratios"]:
        tgt = "-" if r["target"] is None else f">= {r['target']}"
        val = "-" if r["value"] is None else f"{r['value']:.2f}x"
        verdict = {True: "met", False: "NOT met", None: "-"}[r["met"]]
        lines.append(f"{r['mode'] + ' ' + r['ratio']:32} {val:>7} {tgt:>8}  {verdict}")
    cost = doc.get("balancer_cost") or {}
    if cost:
        lines.append("")
        lines.append("balancer CPU per request beyond direct (median µs): " + "; ".join(
            f"{mode} vip {c['vip_extra_us']} haproxy {c['haproxy_extra_us']}"
            + (f" ({c['haproxy_over_vip']}x)" if c.get("haproxy_over_vip") else "")
            for mode, c in cost.items()))
    lines.append(f"(wrk -t{doc['params']['threads']} -c{doc['params']['connections']} "
                 f"-d{doc['params']['duration_s']}s, {doc['params']['rounds']} rounds "
                 "interleaved; close = one connection per request; errors and syn rtx "
                 "(SYN retransmits, client and servers) summed over rounds; cpu = machine "
                 f"busy fraction, {doc['machine']['nproc']} CPUs shared by everything; wrk = CPUs "
                 "the load generator used)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def missing_tools() -> list[str]:
    return [t for t in ("wrk", "nginx", "curl") if shutil.which(t) is None]


def run(a: argparse.Namespace, doc: dict[str, Any]) -> None:
    lab = Lab(random_prefix("bp"), 3, balance=True, algorithm="round-robin", python=PYTHON)
    nginxes: list[Nginx] = []
    hap: Haproxy | None = None
    doc["lab"] = {"prefix": lab.prefix, "vip": lab.vip, "subnet": f"{lab.net}.0/24"}
    log(f"lab {lab.prefix} ({lab.net}.0/24, VIP {lab.vip}): up")
    try:
        lab.up()
        for node in lab.nodes:
            lab.stop_backend(node)
            ng = Nginx(lab, node)
            nginxes.append(ng)
            ng.start()
        for ng in nginxes:
            wait_until(lambda ng=ng: ng.check_running() or
                       client_get(lab, f"http://{ng.node.ip}:{HTTP_PORT}/", 1) == ng.node.name,
                       10, f"nginx on {ng.node.name}", interval=POLL_S)
        holder = lab.node(lab.wait_single_holder(30))
        direct = next(n for n in lab.nodes if n is not holder)
        doc["lab"].update({"holder": holder.name, "direct_backend": direct.name})
        targets = {"vip": f"http://{lab.vip}:{HTTP_PORT}/",
                   "direct": f"http://{direct.ip}:{HTTP_PORT}/"}
        # Every nginx must be in the table (the health check passed again after the swap).
        doc["lab"]["vip_spread"] = wait_spread(lab, targets["vip"], "the VIP")
        if a.peer == "haproxy":
            hap = Haproxy(lab, holder)
            hap.start()
            targets["haproxy"] = f"http://{holder.ip}:{HAPROXY_PORT}/"
            doc["lab"]["haproxy_spread"] = wait_spread(lab, targets["haproxy"], "HAProxy",
                                                       alive=hap.check_running)
        doc["lab"]["targets"] = targets
        script = lab.dir / "wrk-report.lua"
        script.write_text(WRK_LUA)

        others, waited = wait_quiet(lab.prefix, a.quiet_wait)
        doc["quiet_wait"] = {"waited_s": waited, "other_labs_still_there": others}
        if others:
            log(f"other labs still running after {waited} s: {others} (they share the CPUs)")
        # One unrecorded second per target first (page cache, conntrack and ARP warm), so
        # that the first recorded round is not the only cold one.
        for url in targets.values():
            wrk(lab, url, "keepalive", argparse.Namespace(**{**vars(a), "duration": WARMUP_S}),
                script)
        n_runs = a.rounds * len(MODES) * len(targets)
        log(f"{n_runs} measurements of {a.duration} s: ~{n_runs * (a.duration + 1)} s")
        i = 0
        for rnd in range(1, a.rounds + 1):
            for mode in MODES:
                for target, url in targets.items():
                    i += 1
                    rec: dict[str, Any] = {"round": rnd, "mode": mode, "target": target,
                                           "other_labs": foreign_labs(lab.prefix),
                                           "loadavg_before": float(Path("/proc/loadavg")
                                                                   .read_text().split()[0])}
                    try:
                        before = counters(lab)
                        rec.update(wrk(lab, url, mode, a, script))
                        rec["kernel"] = counter_deltas(before, counters(lab))
                    except BenchError as e:
                        rec["error"] = str(e)
                        log(f"[{i}/{n_runs}] round {rnd} {mode:9} {target:7}: FAILED: {e}")
                    else:
                        log(f"[{i}/{n_runs}] round {rnd} {mode:9} {target:7}: "
                            f"{rec['rps']:8.0f} req/s  p50 {rec['p50_ms']:.3f} ms  "
                            f"p99 {rec['p99_ms']:.3f} ms  errors {rec['errors']}  "
                            f"cpu {rec['cpu_busy']}")
                    holders = lab.holders()
                    if holders != [holder.name]:
                        rec["holder_changed"] = holders
                        log(f"VIP holders now {holders} (was {holder.name})")
                    doc["runs"].append(rec)
    finally:
        if hap is not None:
            hap.stop()
        for ng in nginxes:
            ng.stop()
        log(f"tearing down {len(lab.down())} namespaces")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="measurements per target and mode, "
                   "interleaved (3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--threads", type=int, default=2,
                   help="wrk threads (2: one wrk thread pegs a CPU first and measures wrk)")
    p.add_argument("--peer", choices=("haproxy", "none", "auto"), default="auto",
                   help="also measure HAProxy in the same run; auto = if installed")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                   help="before the first measurement, wait up to S s for other labs on "
                        "this machine to go away (default 20; 0 = do not wait)")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    a = p.parse_args(argv)
    if not 1 <= a.rounds <= 20:
        p.error("--rounds must be 1-20")
    if not 1 <= a.duration <= 120:
        p.error("--duration must be 1-120 s")
    if not 1 <= a.connections <= 2000:
        p.error("--connections must be 1-2000")
    if not 1 <= a.threads <= min(16, a.connections):
        p.error("--threads must be 1-16 and at most --connections")
    if not 0 <= a.quiet_wait <= 600:
        p.error("--quiet-wait must be 0-600 s")
    missing = missing_tools()
    if missing:
        print(f"dataplane: {', '.join(missing)} not installed; install with:\n"
              f"    apt-get install -y {' '.join('nginx-light' if m == 'nginx' else m for m in missing)}"
              "\n(and keep their system services off: systemctl disable --now nginx)",
              file=sys.stderr)
        return 2
    have_hap = shutil.which("haproxy") is not None
    if a.peer == "haproxy" and not have_hap:
        p.error("--peer haproxy: haproxy is not installed (apt-get install haproxy)")
    a.peer = "haproxy" if have_hap and a.peer != "none" else "none"
    if a.peer == "none" and not have_hap:
        log("haproxy is not installed: measuring without it (peer: none); "
            "apt-get install haproxy to compare")

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"

    interrupt_on_sigterm()
    doc: dict[str, Any] = {
        "benchmark": "dataplane", "command": " ".join([".venv/bin/python", *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
        "versions": {"wrk": version(["wrk", "-v"]), "nginx": version(["nginx", "-v"]),
                     "haproxy": version(["haproxy", "-v"]) if have_hap else "not installed"},
        "params": {"rounds": a.rounds, "duration_s": a.duration, "connections": a.connections,
                   "threads": a.threads, "peer": a.peer, "servers": 3,
                   "algorithm": "round-robin", "haproxy_port": HAPROXY_PORT,
                   "warmup_s_per_target": WARMUP_S,
                   "nginx": "1 worker per server, access_log off, fixed body (server name), "
                            "keepalive_requests 1e8",
                   "haproxy": "in the VIP holder's namespace, mode http, balance roundrobin, "
                              "option http-keep-alive, default threads, no health checks, "
                              f"server connections from NET.{SOURCE_HOST}"
                              if a.peer == "haproxy" else None,
                   "modes": {"keepalive": "wrk default (persistent connections)",
                             "close": "wrk -H 'Connection: close' (one connection per request)"}},
        "other_labs_at_start": foreign_labs("-"),
        "lab": {}, "runs": [],
    }
    t0 = time.monotonic()
    try:
        run(a, doc)
    except KeyboardInterrupt:
        log("interrupted: lab torn down; printing what was measured")
        doc["interrupted"] = True
    except FAILURES as e:
        log(f"FAILED: {e}")
        doc["error"] = str(e)
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    doc["summary"] = summarize(doc["runs"])
    doc["ratios"] = ratios(doc["summary"])
    doc["balancer_cost"] = balancer_cost(doc["summary"])
    print(table(doc), file=sys.stderr)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(doc, indent=2) + "\n")
        log(f"JSON written to {a.json_out}")
    print(json.dumps(doc))
    return 130 if doc.get("interrupted") else (1 if doc.get("error") else 0)


if __name__ == "__main__":
    sys.exit(main())
