"""Commit of synced flows at a claim: how long the product's conntrackd commit takes, per size.

    .venv/bin/python bench/conntrack_commit.py [--sizes 1000,10000] [--trials 5]
        [--entries nat|plain] [--json-out FILE]

When a member claims a VIP it first commits the flows the old holder synced (conntrackd's
external cache) into its kernel, and waits for that at most `commit_timeout_ms` (100 ms by
default; the issue's target: "commit <= 100 ms at 10k entries"). This measures that wait.

The lab: two network namespaces A and B joined by a veth pair (eth0 in each, 10.254.0.1 and
.2), in each a small Python child that runs the product's own sync, made as the agent makes
it (`hostops.conntrackd.make_sync`: one FTFW pair over UDP unicast, the config from
`render_conf`), and serves commands over stdin/stdout. Per size: A's kernel is flushed, then
loaded with N established TCP entries in one `conntrack --load-file` (--entries nat, the
default: a balanced flow as the product's table makes it, client -> VIP:80 DNATed to one of
three backends :8080 and SNATed to A's address; plain: no NAT), and the run waits until B's
external cache holds N. Each trial, for hacluster (`begin_commit().wait()`, timed inside B's
child: no `ip netns exec` in the measured part) and for the bare `conntrackd -c` that the
classic keepalived setup runs (Debian's primary-backup.sh; the same child times it), in
turn:

* B's kernel table is flushed (`conntrack -F` in B only) and B's conntrackd left to go
  quiet (its CPU time still for 0.3 s), then the **commit** is timed: N entries created;
* without a flush, the same again (**again**): every entry is already in the kernel (a
  member that committed before and claims again while the entries live).

After each commit, the entries in B's kernel are counted (the client -> VIP entries), the
CPU seconds B's conntrackd spent during the commit are read from /proc (10 ms ticks), with
the `conntrackd -c` client's own, and conntrackd's own figure is read from its log ("commit
has taken S seconds": the daemon's work, without starting the client and its round trip).
The table's ratio is hacluster's median over the bare command's; "own ms" is conntrackd's.

Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Without conntrackd or the conntrack CLI it prints {"skipped": "..."} and exits
0. Benchmarks are programs, not asserts (STYLE.md §12). Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _labkit import FAILURES, ROOT, BenchError, interrupt_on_sigterm, log, machine, med, mx

from hacluster.lab.netns import ip, netns_list, netns_pids, run, signal_pids
from hacluster.lab.wait import wait_until

ADDR_A, ADDR_B, PREFIXLEN = "10.254.0.1", "10.254.0.2", 24
VIP, VIP_PORT = "10.0.0.100", 80
BACKENDS, BACKEND_PORT = ("10.0.0.11", "10.0.0.12", "10.0.0.13"), 8080
COMMIT_TIMEOUT_S = 5.0  # the bench wants the whole commit, not the claim's 100 ms cut
TARGET_MS = 100.0  # the target at 10k entries
MAX_SIZE = 60_000  # one source port per entry (1024 + i): no NAT clash, no random remap
ASK_S = 60.0  # the longest one command to a child may take
SYNC_WAIT_S = 60.0  # A's entries into B's external cache
QUIET_S = 20.0  # B's conntrackd finishing the events of a flush or a commit

# The child each namespace runs: the product's sync, made as the agent makes it, serving one
# JSON command per line on stdin with one JSON answer per line on stdout. Its log (the
# product's, INFO) goes to stderr, which the parent sends to a file in the work dir.
_SERVE = r'''
import json, logging, os, re, resource, subprocess, sys, time
from pathlib import Path
from hacluster.hostops.conntrackd import make_sync
from hacluster.model import SyncSettings, SyncState

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
own, peer, workdir, timeout = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
settings = SyncSettings(mode="on", interface="eth0", address=own, peers=(peer,), commit_timeout=timeout)
sync = make_sync(settings, workdir)
member = sync.members[0] if hasattr(sync, "members") else sync  # the one conntrackd of this pair
TICK = os.sysconf("SC_CLK_TCK")

def daemon_cpu():
    proc = member._proc
    if proc is None:
        return None
    try:
        f = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except OSError:
        return None
    return (int(f[11]) + int(f[12])) / TICK  # utime + stime

def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # the reaped `conntrackd -c` clients
    return r.ru_utime + r.ru_stime

def log_size():
    try:
        return (member.dir / "conntrackd.log").stat().st_size
    except OSError:
        return 0

def own_figure(since):
    """conntrackd's own 'commit has taken S seconds' (logged before it answers the client)."""
    try:
        with (member.dir / "conntrackd.log").open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    found = re.findall(r"commit has taken (\d+)\.(\d+) seconds", text)
    return round(int(found[-1][0]) * 1000 + int(found[-1][1]) / 1000, 2) if found else None

def timed(fn):
    c0, k0, at = daemon_cpu(), children_cpu(), log_size()
    t0 = time.monotonic()
    ok, detail = fn()
    ms = (time.monotonic() - t0) * 1000
    c1, k1 = daemon_cpu(), children_cpu()
    detail["conntrackd_ms"] = own_figure(at)
    return {"ok": ok, "ms": round(ms, 2), "detail": detail,
            "daemon_cpu_s": None if c0 is None or c1 is None else round(c1 - c0, 3),
            "client_cpu_s": round(k1 - k0, 3)}

def product():
    ok = sync.begin_commit().wait()  # what the claim runs
    ms = sync.status().last_commit_ms  # the product's own figure (from its Popen to the exit)
    return ok, {"product_ms": None if ms is None else round(ms, 2)}

def bare():
    p = subprocess.run([member._binary, "-C", str(member.conf), "-c"], capture_output=True, text=True,
                       timeout=timeout, check=False)
    return p.returncode == 0, {"output": (p.stdout + p.stderr).strip()[-200:]}

def stats():
    p = subprocess.run([member._binary, "-C", str(member.conf), "-s"], capture_output=True, text=True,
                       timeout=5, check=False)
    out = {}
    for name, count in re.findall(r"cache (\w+):\s*\ncurrent active connections:\s*(\d+)", p.stdout):
        out[name] = int(count)
    return out

def quiet(max_s, still_s):
    t0 = time.monotonic()
    last, since = daemon_cpu(), time.monotonic()
    while time.monotonic() - t0 < max_s:
        time.sleep(0.05)
        now = daemon_cpu()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still_s:
            return {"quiet": True, "waited_s": round(time.monotonic() - t0, 2)}
    return {"quiet": False, "waited_s": round(time.monotonic() - t0, 2)}

def answer(cmd):
    op = cmd["op"]
    if op == "start":
        sync.start()
        deadline = time.monotonic() + 10
        while sync.status().state is not SyncState.OK and time.monotonic() < deadline:
            time.sleep(0.05)
        st = sync.status()
        return {"state": st.state.value, "detail": st.detail, "conf": str(member.conf),
                "module": sys.modules[type(member).__module__].__file__,
                "pid": member._proc.pid if member._proc else None}
    if op == "commit":
        return timed(product)
    if op == "bare":
        return timed(bare)
    if op == "stats":
        return stats()
    if op == "bulk":
        p = subprocess.run([member._binary, "-C", str(member.conf), "-B"], capture_output=True,
                           text=True, timeout=10, check=False)
        return {"rc": p.returncode}
    if op == "quiet":
        return quiet(cmd["max_s"], cmd["still_s"])
    if op == "stop":
        sync.stop()
        return {"stopped": True}
    raise ValueError(f"unknown op {op!r}")

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    try:
        out = answer(cmd)
    except Exception as e:  # the parent records it and goes on or stops
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
    if cmd["op"] == "stop":
        break
'''


class Side:
    """One namespace's child: the product's sync in that namespace, asked over a pipe."""

    def __init__(self, ns: str, own: str, peer: str, workdir: Path):
        self.ns = ns
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))  # this tree's product
        self._err = (workdir / "child.log").open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _SERVE, own, peer, str(workdir),
             str(COMMIT_TIMEOUT_S)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            text=True, env=env, cwd=workdir, start_new_session=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"read-{ns}").start()
        self._next("ready", 30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, what: str, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.ns}: no answer to {what} within {timeout:g} s") from None
        if line is None:
            raise BenchError(f"{self.ns}: the child exited (status {self.proc.poll()}) during {what}")
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise BenchError(f"{self.ns}: {what}: {out['error']}")
        return out

    def ask(self, op: str, timeout: float = ASK_S, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise BenchError(f"{self.ns}: cannot ask {op}: {e}") from e
        return self._next(op, timeout)

    def close(self) -> None:
        """Stop the sync (its conntrackd), then the child; bounded, kill as the last resort."""
        if self.proc.poll() is None:
            try:
                self.ask("stop", timeout=10)
            except BenchError as e:
                log(f"{self.ns}: stop: {e}")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()


def netns_run(ns: str, *args: str, check: bool = True) -> str:
    return run("ip", "netns", "exec", ns, *args, check=check)


def kernel_entries(ns: str) -> int:
    """The client -> VIP entries in that namespace's conntrack table."""
    p = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "tcp", "--orig-dst", VIP],
                       capture_output=True, text=True, timeout=30)
    return sum(1 for line in p.stdout.splitlines() if line.startswith("tcp"))


def entries_file(n: int, kind: str, path: Path) -> None:
    """N established flows, client i -> VIP:80, for `conntrack --load-file` in A. nat: DNAT to a
    backend :8080 and SNAT to A's address (one source port per entry, so SNAT keeps it)."""
    lines = []
    for i in range(n):
        client = f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        sport = 1024 + i
        nat = (f" --dst-nat {BACKENDS[i % len(BACKENDS)]}:{BACKEND_PORT} --src-nat {ADDR_A}"
               if kind == "nat" else "")
        lines.append(f"-I -p tcp -s {client} -d {VIP} --sport {sport} --dport {VIP_PORT}{nat} "
                     f"--state ESTABLISHED -t 3600 -u SEEN_REPLY,ASSURED")
    path.write_text("\n".join(lines) + "\n")


def build(prefix: str) -> tuple[str, str]:
    ns_a, ns_b = f"{prefix}-a", f"{prefix}-b"
    for ns in (ns_a, ns_b):
        ip("netns", "add", ns)
    # created in the namespaces directly: no interface of ours ever appears in this one
    ip("link", "add", "eth0", "netns", ns_a, "type", "veth", "peer", "name", "eth0", "netns", ns_b)
    for ns, addr in ((ns_a, ADDR_A), (ns_b, ADDR_B)):
        ip("addr", "add", f"{addr}/{PREFIXLEN}", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        ip("link", "set", "lo", "up", ns=ns)
    return ns_a, ns_b


def teardown(prefix: str, sides: list[Side]) -> None:
    for side in sides:
        try:
            side.close()
        except Exception as e:  # go on: the namespaces must go whatever happened
            log(f"{side.ns}: close: {e}")
    for ns in (f"{prefix}-a", f"{prefix}-b"):
        if ns in netns_list():
            signal_pids(netns_pids(ns), signal.SIGKILL)  # only what this run started in them
            ip("netns", "del", ns, check=False)


def one_commit(b: Side, ns_b: str, op: str, n: int, trial: int, again: bool) -> dict[str, Any]:
    q = b.ask("quiet", max_s=QUIET_S, still_s=0.3, timeout=QUIET_S + 10)
    got = b.ask(op, timeout=COMMIT_TIMEOUT_S + 10)
    kernel = kernel_entries(ns_b)
    row = {"size": n, "trial": trial, "who": "hacluster" if op == "commit" else "conntrackd -c",
           "commit": "again" if again else "commit", "ok": got["ok"], "ms": got["ms"],
           "kernel_after": kernel, "daemon_cpu_s": got["daemon_cpu_s"],
           "client_cpu_s": got["client_cpu_s"], "quiet_before_s": q["waited_s"],
           "quiet": q["quiet"], **got["detail"]}
    log(f"  N={n} trial {trial} {row['who']:13} {row['commit']:6}: {got['ms']:7.1f} ms, ok={got['ok']}, "
        f"{kernel} in B's kernel, conntrackd CPU {got['daemon_cpu_s']} s")
    return row


def one_size(a: Side, b: Side, ns_a: str, ns_b: str, n: int, trials: int, kind: str,
             workdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    # a clean start: A's kernel (and so, through the sync, B's external cache) empty
    netns_run(ns_a, "conntrack", "-F", check=False)
    netns_run(ns_b, "conntrack", "-F", check=False)
    wait_until(lambda: b.ask("stats").get("external") == 0, 30, "B's external cache empty", interval=0.2)
    path = workdir / f"entries-{n}.txt"
    entries_file(n, kind, path)
    t0 = time.monotonic()
    netns_run(ns_a, "conntrack", "--load-file", str(path))
    load_s = time.monotonic() - t0
    in_a = int(netns_run(ns_a, "conntrack", "-C").strip() or 0)
    if in_a < n:
        raise BenchError(f"A's kernel holds {in_a} entries after loading {n}")
    bulk = False
    t0 = time.monotonic()
    deadline = t0 + SYNC_WAIT_S
    external = 0
    while time.monotonic() < deadline:
        external = b.ask("stats").get("external", 0)
        if external >= n:
            break
        if not bulk and time.monotonic() - t0 > SYNC_WAIT_S / 3:
            log(f"  B's external cache at {external}/{n}: asking A for a bulk send (-B)")
            a.ask("bulk")
            bulk = True
        time.sleep(0.2)
    sync_s = time.monotonic() - t0
    log(f"N={n}: loaded into A in {load_s:.2f} s; B's external cache holds {external} after "
        f"{sync_s:.1f} s{' (after a bulk send)' if bulk else ''}")
    if external < n:
        raise BenchError(f"B's external cache holds {external} of {n} entries after {SYNC_WAIT_S:g} s")
    rows = []
    for trial in range(1, trials + 1):
        # both ways in turn, the first alternating: neither always runs right after a flush
        # of the other's entries
        ops = ("commit", "bare") if trial % 2 else ("bare", "commit")
        for op in ops:
            netns_run(ns_b, "conntrack", "-F", check=False)
            wait_until(lambda: kernel_entries(ns_b) == 0, 10, "B's kernel table empty", interval=0.1)
            rows.append(one_commit(b, ns_b, op, n, trial, again=False))
            rows.append(one_commit(b, ns_b, op, n, trial, again=True))
    info = {"size": n, "load_s": round(load_s, 3), "sync_wait_s": round(sync_s, 2),
            "external_cache": external, "bulk_sent": bulk}
    return info, rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["size"], r["commit"], r["who"]) for r in rows},
                  key=lambda k: (k[0], k[1] != "commit", k[2] != "hacluster"))
    for size, commit, who in keys:
        mine = [r for r in rows if (r["size"], r["commit"], r["who"]) == (size, commit, who)]
        ms = [r["ms"] for r in mine]
        cpu = [r["daemon_cpu_s"] for r in mine if r["daemon_cpu_s"] is not None]
        own = [r["conntrackd_ms"] for r in mine if r.get("conntrackd_ms") is not None]
        kernel = [r["kernel_after"] for r in mine]
        out.append({"size": size, "commit": commit, "who": who, "trials": len(mine),
                    "ok": sum(1 for r in mine if r["ok"]), "median_ms": med(ms), "max_ms": mx(ms),
                    "min_ms": round(min(ms), 1), "conntrackd_ms_median": med(own),
                    "kernel_after_min": min(kernel), "kernel_after_max": max(kernel),
                    "daemon_cpu_s_median": _median3(cpu),
                    "client_cpu_s_median": _median3([r["client_cpu_s"] for r in mine])})
    for s in out:  # hacluster's wait against the bare command's, same size and kind of commit
        peer = next((p for p in out if p["who"] != "hacluster" and p["size"] == s["size"]
                     and p["commit"] == s["commit"]), None)
        if s["who"] == "hacluster" and peer and peer["median_ms"]:
            s["ratio_to_bare"] = round(s["median_ms"] / peer["median_ms"], 2)
    return out


def _median3(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def table(summary: list[dict[str, Any]]) -> str:
    head = (f"{'size':>6}  {'commit':7} {'who':14} {'median ms':>9} {'max ms':>8} {'ratio':>6} "
            f"{'own ms':>7} {'in B kernel':>11} {'conntrackd CPU s':>16} {'ok':>5}")
    lines = [head, "-" * len(head)]
    for s in summary:
        kernel = (str(s["kernel_after_min"]) if s["kernel_after_min"] == s["kernel_after_max"]
                  else f"{s['kernel_after_min']}-{s['kernel_after_max']}")
        ratio = f"{s['ratio_to_bare']:.2f}" if "ratio_to_bare" in s else ""
        lines.append(f"{s['size']:>6}  {s['commit']:7} {s['who']:14} {s['median_ms']:>9} {s['max_ms']:>8} "
                     f"{ratio:>6} {s['conntrackd_ms_median']!s:>7} {kernel:>11} "
                     f"{s['daemon_cpu_s_median']!s:>16} {s['ok']:>2}/{s['trials']:<2}")
    return "\n".join(lines)


def run_bench(sizes: list[int], trials: int, kind: str) -> dict[str, Any]:
    prefix = "cb" + secrets.token_hex(2)
    while any(ns.startswith(prefix + "-") for ns in netns_list()):
        prefix = "cb" + secrets.token_hex(2)
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    log(f"lab {prefix}: namespaces {prefix}-a, {prefix}-b; work dir {workdir}")
    sides: list[Side] = []
    failed = True
    try:
        ns_a, ns_b = build(prefix)
        a = Side(ns_a, ADDR_A, ADDR_B, workdir / "a")
        sides.append(a)
        b = Side(ns_b, ADDR_B, ADDR_A, workdir / "b")
        sides.append(b)
        started = {side.ns: side.ask("start", timeout=30) for side in sides}
        for ns, st in started.items():
            if st["state"] != "ok":
                raise BenchError(f"{ns}: the sync did not start: {st['detail']}")
        log(f"sync up: {started[ns_b]['detail']}")
        infos, rows = [], []
        for n in sizes:
            info, got = one_size(a, b, ns_a, ns_b, n, trials, kind, workdir)
            infos.append(info)
            rows.extend(got)
        failed = False
        return {"lab": {"prefix": prefix, "a": ADDR_A, "b": ADDR_B, "conf_b": started[ns_b]["conf"],
                        "product_module": started[ns_b]["module"],
                        "sync": started[ns_b]["detail"]},
                "sizes": infos, "trials": rows, "summary": summarize(rows)}
    finally:
        teardown(prefix, sides)
        if failed:
            log(f"work dir kept for its logs: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000", help="entries to commit, comma-separated (1000,10000)")
    p.add_argument("--trials", type=int, default=5, help="trials per size (5)")
    p.add_argument("--entries", choices=("nat", "plain"), default="nat",
                   help="nat: balanced flows (DNAT + SNAT), as the product's table makes them "
                        "(default); plain: no NAT")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON document here")
    a = p.parse_args(argv)
    try:
        sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes: integers, comma-separated (1000,10000)")
    if not sizes or any(not 1 <= s <= MAX_SIZE for s in sizes):
        p.error(f"--sizes: each in [1, {MAX_SIZE}]")
    if not 1 <= a.trials <= 100:
        p.error("--trials must be in [1, 100]")
    doc: dict[str, Any] = {"command": " ".join([".venv/bin/python", *sys.argv]),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    missing = [t for t in ("conntrackd", "conntrack") if shutil.which(t) is None]
    if missing:
        doc["skipped"] = (f"not installed: {', '.join(missing)} (Debian: apt install conntrackd "
                          f"conntrack); nothing measured")
        log(doc["skipped"])
        _emit(doc, a.json_out)
        return 0
    if os.geteuid() != 0:
        p.error("run as root (the lab builds network namespaces)")
    interrupt_on_sigterm()
    doc.update({"machine": machine(), "conntrackd": _version(), "entries": a.entries,
                "commit_timeout_s": COMMIT_TIMEOUT_S, "target_ms": TARGET_MS})
    try:
        doc.update(run_bench(sizes, a.trials, a.entries))
    except KeyboardInterrupt:
        log("interrupted: lab torn down")
        doc["interrupted"] = True
    except FAILURES as e:
        log(f"failed: {e}")
        doc["error"] = str(e)
    if "summary" in doc:
        print(table(doc["summary"]), file=sys.stderr)
        target = [s for s in doc["summary"] if s["size"] == 10_000 and s["commit"] == "commit"
                  and s["who"] == "hacluster"]
        if target:
            verdict = "met" if target[0]["median_ms"] <= TARGET_MS else "NOT met"
            print(f"target (commit <= {TARGET_MS:g} ms at 10k entries, median): {verdict} "
                  f"({target[0]['median_ms']} ms, max {target[0]['max_ms']} ms)", file=sys.stderr)
    _emit(doc, a.json_out)
    return 0 if "summary" in doc else 1


def _version() -> str:
    try:
        return subprocess.run(["conntrackd", "-v"], capture_output=True, text=True,
                              timeout=5).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def _emit(doc: dict[str, Any], json_out: str | None) -> None:
    if json_out:
        Path(json_out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))


if __name__ == "__main__":
    sys.exit(main())
