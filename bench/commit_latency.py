"""Commit latency of hacluster's Raft with and without flushing to disk (issue 15, finding 3).

    .venv/bin/python bench/commit_latency.py [--dir /var/tmp] [--rounds 3] [--sequential 300]
                                             [--concurrent 3000] [--inflight 32]
                                             [--modes fsync,nofsync,stock] [--json-out FILE]

A real 3-member Raft, as the agent runs it (hacluster.consensus.raft.RaftNode on pysyncobj,
the product's default timing and secret handling), one process per member, on 127.0.0.1
ports, each member's data dir under --dir (the filesystem under test: fsync on tmpfs costs
nothing). No agent loop runs: the stuck-agent watchdog is off. Modes, each on a fresh cluster:

  fsync    the product: journal.DurableJournal, every promise flushed (fdatasync), group commit
  nofsync  the same journal with every flush skipped: what the flushes cost, and nothing else
  stock    pysyncobj's own FileJournal (sparse mmap, never flushed): main before the fix

Workloads, on the leader's process, a command being an ignorable no-op of ~150 bytes (it is
committed and applied like a drain, and changes nothing):

  sequential  one command in flight: the latency one admin change sees (submit -> applied)
  concurrent  --inflight commands in flight: the latency under load, commits/s, and how many
              fdatasync calls the three members made per commit (group commit: < 3 when
              several commits share one flush)

Rounds interleave the modes (A/B/C, A/B/C, ...) so that a drift of the machine hits all.
Also measured: one bare fdatasync of a 300-byte write on --dir (the disk's own cost).
Prints a table on stderr and the JSON document as the last line of stdout (and to
--json-out). Benchmarks are programs, not asserts (STYLE.md §12).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _labkit import log, machine  # noqa: E402

from hacluster.consensus.disk import Disk  # noqa: E402

MODES = ("fsync", "nofsync", "stock")
SECRET = "commit-latency-bench-secret"
PAD = "x" * 96  # a command of about a drain's size


class CountingDisk(Disk):
    """The journal's system calls, counting its flushes (fdatasync) and fsyncs of paths."""

    def __init__(self, fsync: bool):
        super().__init__(fsync)
        self.flushes = 0
        self.path_flushes = 0

    def flush(self, fd: int) -> None:
        self.flushes += self.fsync
        super().flush(fd)

    def flush_path(self, path: Path) -> None:
        self.path_flushes += self.fsync
        super().flush_path(path)


def _config(node_id: str, ports: list[int], data: Path) -> Any:
    from hacluster.config import parse_config
    members = [{"id": f"n{i + 1}", "address": "127.0.0.1", "raft_port": ports[2 * i],
                "grpc_port": ports[2 * i + 1]} for i in range(3)]
    return parse_config({
        "cluster": "bench", "node_id": node_id, "members": members, "vips": [],
        "data_dir": str(data), "secret_file": "/nonexistent",
        "tls": {"ca_file": "/nonexistent/ca.crt", "cert_file": "/nonexistent/n.crt",
                "key_file": "/nonexistent/n.key"}})


def _member(node_id: str, ports: list[int], data: str, mode: str, conn: Any) -> None:
    """One member's process: runs its RaftNode and answers the parent's requests."""
    from hacluster.consensus import raft
    from hacluster.model import Role
    raft.AGENT_STUCK_S = float("inf")  # no agent loop here to say it is alive
    disk = CountingDisk(fsync=mode == "fsync")
    node = raft.RaftNode(_config(node_id, ports, Path(data)), SECRET, disk=disk)
    if mode == "stock":  # pysyncobj's own FileJournal: as main ran before the fix
        node._disk.open = lambda data_dir, election_max: None  # type: ignore[method-assign]
    node.start()
    while True:
        req = conn.recv()
        if req[0] == "view":
            v = node.view()
            conn.send((v.role is Role.LEADER, v.leader))
        elif req[0] == "flushes":
            conn.send((disk.flushes, disk.path_flushes))
        elif req[0] == "run":
            conn.send(_run(node, *req[1:]))
        elif req[0] == "stop":
            node.stop()
            conn.send(None)
            return


def _run(node: Any, n: int, inflight: int, tag: str) -> dict[str, Any]:
    """n no-op commands, at most `inflight` at a time: latencies (s), errors, wall time."""
    slots = threading.BoundedSemaphore(inflight)
    done = threading.Event()
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()

    def submit(i: int) -> None:
        slots.acquire()
        sent = time.perf_counter()

        def applied(result: Any, err: int) -> None:  # on pysyncobj's tick thread
            took = time.perf_counter() - sent
            with lock:
                if err == 0 and result is not None:
                    latencies.append(took)
                else:
                    errors.append(err)
                if len(latencies) + len(errors) == n:
                    done.set()
            slots.release()
        node.submit({"type": "bench_noop", "ignorable": True, "tag": tag, "n": i, "pad": PAD}, applied)

    started = time.perf_counter()
    for i in range(n):
        submit(i)
    done.wait(120)
    wall = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "wall_s": wall}


def _free_ports(n: int) -> list[int]:
    import socket
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def one_cluster(mode: str, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Start a fresh 3-member cluster in `mode`, run both workloads on its leader, stop it."""
    ctx = multiprocessing.get_context("spawn")
    ports = _free_ports(6)
    data = Path(tempfile.mkdtemp(prefix=f"commit-{mode}-", dir=base))
    procs, conns = {}, {}
    try:
        for i in range(3):
            node_id = f"n{i + 1}"
            parent, child = ctx.Pipe()
            (data / node_id).mkdir()
            p = ctx.Process(target=_member, args=(node_id, ports, str(data / node_id), mode, child),
                            daemon=True)
            p.start()
            procs[node_id], conns[node_id] = p, parent

        def ask(node_id: str, *req: Any) -> Any:
            conns[node_id].send(req)
            if not conns[node_id].poll(180):
                raise RuntimeError(f"{node_id} ({mode}) did not answer {req[0]}")
            return conns[node_id].recv()

        deadline = time.monotonic() + 30
        while True:
            views = {n: ask(n, "view") for n in procs}
            leaders = [n for n, (leads, _) in views.items() if leads]
            if len(leaders) == 1 and all(v[1] == leaders[0] for v in views.values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no single leader in {mode}: {views}")
            time.sleep(0.05)
        leader = leaders[0]
        ask(leader, "run", 50, 1, "warmup")
        out: dict[str, Any] = {"mode": mode, "leader": leader}
        for workload, n, inflight in (("sequential", args.sequential, 1),
                                      ("concurrent", args.concurrent, args.inflight)):
            before = sum(ask(m, "flushes")[0] for m in procs)
            got = ask(leader, "run", n, inflight, workload)
            flushes = sum(ask(m, "flushes")[0] for m in procs) - before
            lat = got["latencies"]
            out[workload] = {
                "commits": len(lat), "errors": len(got["errors"]), "inflight": inflight,
                "median_ms": _ms(med(lat)), "p99_ms": _ms(_pct(lat, 0.99)),
                "max_ms": _ms(max(lat, default=None)),
                "commits_per_s": round(len(lat) / got["wall_s"], 1) if got["wall_s"] else None,
                "fdatasync_per_commit": round(flushes / len(lat), 2) if lat else None,
            }
        return out
    finally:
        for conn in conns.values():
            try:
                conn.send(("stop",))
                if conn.poll(10):
                    conn.recv()
            except (OSError, EOFError):
                pass
        for p in procs.values():
            p.join(10)
            if p.is_alive():
                p.kill()
        shutil.rmtree(data, ignore_errors=True)


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1000, 3)


def bare_fdatasync(base: Path, n: int = 200) -> dict[str, Any]:
    """One 300-byte pwrite + fdatasync into an allocated file on `base`, n times."""
    fd, path = tempfile.mkstemp(prefix="fdatasync-", dir=base)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        took = []
        for i in range(n):
            os.pwrite(fd, b"x" * 300, (i * 300) % (1 << 20))
            t = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return {"median_ms": _ms(med(took)), "p99_ms": _ms(_pct(took, 0.99))}


def filesystem(base: Path) -> str:
    p = subprocess.run(["df", "--output=source,fstype", str(base)], capture_output=True, text=True)
    return " ".join(p.stdout.split()[2:]) or "?"


def summarize(runs: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Per mode and workload: the median over rounds of each figure."""
    out: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        out[mode] = {}
        for w in ("sequential", "concurrent"):
            keys = ("median_ms", "p99_ms", "commits_per_s", "fdatasync_per_commit")
            out[mode][w] = {k: med([r[w][k] for r in mine if r[w][k] is not None]) for k in keys}
            out[mode][w]["errors"] = sum(r[w]["errors"] for r in mine)
    return out


def table(summary: dict[str, Any], fdatasync: dict[str, Any]) -> str:
    rows = [("mode", "workload", "median ms", "p99 ms", "commits/s", "fdatasync/commit", "vs nofsync")]
    for mode, ws in summary.items():
        for w, f in ws.items():
            base = summary.get("nofsync", {}).get(w, {}).get("median_ms")
            ratio = f"{f['median_ms'] / base:.2f}x" if base and f["median_ms"] else "-"
            rows.append((mode, w, _fmt(f["median_ms"]), _fmt(f["p99_ms"]), _fmt(f["commits_per_s"], 0),
                         _fmt(f["fdatasync_per_commit"], 2), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)) for r in rows]
    lines.append(f"bare fdatasync on this disk: median {fdatasync['median_ms']} ms, "
                 f"p99 {fdatasync['p99_ms']} ms")
    return "\n".join(lines)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp", help="where the members' data dirs go "
                    "(the filesystem under test; default /var/tmp)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sequential", type=int, default=300, help="commands, one in flight")
    ap.add_argument("--concurrent", type=int, default=3000, help="commands, --inflight in flight")
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES):
        ap.error(f"--modes: a comma-separated subset of {', '.join(MODES)}")
    base = Path(args.dir)
    started = time.time()
    fdatasync = bare_fdatasync(base)
    log(f"bare fdatasync on {base} ({filesystem(base)}): {fdatasync}")
    runs = []
    for r in range(args.rounds):
        for mode in modes:
            run = one_cluster(mode, base, args)
            log(f"round {r + 1} {mode}: sequential median {run['sequential']['median_ms']} ms, "
                f"concurrent {run['concurrent']['commits_per_s']} commits/s")
            runs.append(run)
    summary = summarize(runs, modes)
    doc = {"bench": "commit_latency", "started_unix": started, "machine": machine(),
           "dir": str(base), "filesystem": filesystem(base),
           "params": {k: getattr(args, k) for k in ("rounds", "sequential", "concurrent", "inflight")},
           "bare_fdatasync": fdatasync, "summary": summary, "runs": runs}
    print(table(summary, fdatasync), file=sys.stderr)
    text = json.dumps(doc)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
