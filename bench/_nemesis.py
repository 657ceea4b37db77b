"""What bench/nemesis.py needs beside the lab: a lab whose data dirs are on tmpfs, a
systemd-like supervisor, committed markers set and read back through the real CLI, the
holder figures from the monitor's timeline, and a look at each agent's process.

Everything is bounded in count and time; the CLI is the operator's (`hacluster_cli.main`
inside the server's namespace, with that server's config), never the agent's internals.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _labkit import log

from hacluster.lab.lab import RAFT_PORT, Lab, LabNode, cli_argv
from hacluster.lab.netns import run

HERE = Path(__file__).resolve().parent
LOAD = str(HERE / "_nemesis_load.py")


# ------------------------------------------------------------------------- tmpfs lab


class TmpfsLab(Lab):
    """A lab whose servers keep their data_dir on a small tmpfs each, so that a full disk
    can be made without filling a filesystem anyone else uses (the lab's root,
    /run/hacluster-lab, is on the machine's shared disk here).

    Each tmpfs is named `hclab-PREFIX-NODE` and mounted on the node's own data_dir (under
    the lab's directory, unique per prefix) before its agent first starts: `ip netns exec`
    gives the agent a copy of the mount table as it is at exec time. down() detaches them
    lazily (an agent may still hold a file open; the memory goes with the last user).
    After a crash of the benchmark itself: `grep hclab-PREFIX /proc/mounts`, `umount -l`.
    """

    def __init__(self, prefix: str, nodes: int = 3, data_mb: int = 16, **kw: Any):
        super().__init__(prefix, nodes, **kw)
        self.data_mb = data_mb

    def start_agent(self, node: LabNode, config: Path | None = None) -> None:
        if not os.path.ismount(node.data_dir):
            node.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            run("mount", "-t", "tmpfs", "-o", f"size={self.data_mb}m,mode=0700",
                f"hclab-{self.prefix}-{node.name}", str(node.data_dir))
        super().start_agent(node, config)

    def down(self) -> list[str]:
        for n in self.nodes:
            if os.path.ismount(n.data_dir):
                run("umount", "-l", str(n.data_dir), check=False)
        return super().down()


FILL_NAME = "nemesis-fill"


def fill_disk(path: Path, limit_mb: int) -> dict[str, Any]:
    """Write path/nemesis-fill until the filesystem says ENOSPC (at most limit_mb + 1 MiB);
    return what was written and what the filesystem has left."""
    written = 0
    budget = (limit_mb + 1) << 20
    chunk = b"\0" * (1 << 20)
    with open(path / FILL_NAME, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 512):  # tmpfs allocates by page: 4 KiB ends it
            for _ in range(budget // size + 1):
                try:
                    written += f.write(chunk[:size]) or 0
                except OSError:
                    break
                if written > budget:  # not the small filesystem it should be: stop
                    break
    st = os.statvfs(path)
    return {"bytes": written, "free_bytes_after": st.f_bavail * st.f_frsize}


def free_disk(path: Path) -> None:
    (path / FILL_NAME).unlink(missing_ok=True)


# ------------------------------------------------------------------------- supervisor


@dataclass
class Crash:
    node: str
    at: float  # wall clock
    returncode: int | None
    last_lines: list[str]
    restarted: bool = False


class Supervisor:
    """What systemd does for the agent in production (Restart=on-failure, RestartSec=2s,
    no restart after exit 2, at most 10 starts): an agent that exits by itself is recorded
    as a crash and started again 2 s later. The suite's own kills are announced first
    (expect_exit), so they are not crashes."""

    RESTART_S = 2.0
    MAX_RESTARTS = 10

    def __init__(self, lab: Lab):
        self.lab = lab
        self.crashes: list[Crash] = []
        self._expected: set[int] = set()  # pids the suite stops on purpose
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._restarts = 0

    def expect_exit(self, node: LabNode) -> None:
        with self._lock:
            if node.agent is not None:
                self._expected.add(node.agent.pid)

    def start_agent(self, node: LabNode) -> None:
        with self._lock:
            self.lab.start_agent(node)

    def _check(self) -> None:
        for n in self.lab.nodes:
            with self._lock:
                p = n.agent
                if p is None or p.poll() is None or p.pid in self._expected:
                    continue
                self._expected.add(p.pid)
            crash = Crash(n.name, time.time(), p.returncode, self.lab.tail(n, 6).splitlines())
            self.crashes.append(crash)
            log(f"  {n.name}: agent exited by itself ({p.returncode}); last line: "
                f"{crash.last_lines[-1:]}")
            if p.returncode == 2 or self._restarts >= self.MAX_RESTARTS:
                continue
            if self._stop.wait(self.RESTART_S):
                return
            with self._lock:
                if n.agent is p:  # nobody started it meanwhile
                    self.lab.start_agent(n)
                    self._restarts += 1
                    crash.restarted = True

    def _loop(self) -> None:
        for _ in range(100_000):
            if self._stop.wait(0.1):
                return
            self._check()

    def __enter__(self) -> Supervisor:
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def report(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.crashes]


# ------------------------------------------------------------------------------ CLI


def cli(lab: Lab, node: LabNode, *args: str, timeout: float = 30.0) -> tuple[int, str]:
    """`hacluster ARGS --config NODE'S` in node's namespace: (exit code, stdout or stderr)."""
    try:
        p = subprocess.run(cli_argv(node.netns, *args, "--config", str(node.config),
                                    python=lab.python),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"no answer within {timeout:g} s"
    return p.returncode, (p.stdout if p.returncode == 0 else (p.stderr or p.stdout)).strip()


def cli_json(lab: Lab, node: LabNode, *args: str) -> dict[str, Any] | None:
    rc, out = cli(lab, node, *args, "--json", "--timeout", "3", timeout=20)
    if rc != 0:
        return None
    try:
        return json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        return None


@dataclass
class Marker:
    """One admin change the cluster acknowledged (or not): it must be on every node after."""

    kind: str  # "weight" or "drain"
    target: str  # "web/n1" (weight) or "n3" (drain: every backend on n3)
    value: int | None  # the weight; None for a drain
    via: str  # the node whose CLI made the change
    phase: str  # "before" or "during" the fault
    acked: bool = False
    answer: str = ""
    at: float = 0.0  # wall clock, when the CLI returned
    ms: float = 0.0  # how long the CLI took
    missing_on: list[str] = field(default_factory=list)  # nodes without it after recovery

    def present(self, backends: dict[str, Any]) -> bool:
        rows = {(s["name"], b["id"]): b for s in backends["services"] for b in s["backends"]}
        if self.kind == "weight":
            service, _, bid = self.target.partition("/")
            row = rows.get((service, bid))
            return row is not None and row["weight"] == self.value
        return all(b["state"] == "draining" for (_, bid), b in rows.items() if bid == self.target)


def set_marker(lab: Lab, m: Marker) -> Marker:
    args = (("weight", m.target, str(m.value)) if m.kind == "weight" else ("drain", m.target))
    t0 = time.monotonic()
    rc, out = cli(lab, lab.node(m.via), *args, "--json", timeout=40)
    m.ms = round((time.monotonic() - t0) * 1000)
    m.at = time.time()
    m.answer = out[-300:]
    try:
        m.acked = rc == 0 and json.loads(out.splitlines()[-1]).get("ok") is True
    except (ValueError, IndexError):
        m.acked = False
    return m


class Weights:
    """Fresh weight values, never the one a backend has now (a write of the same value would
    prove nothing)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.last: dict[str, int] = {}

    def next(self, target: str) -> int:
        for _ in range(100):
            v = self.rng.randint(2, 999)
            if v != self.last.get(target):
                self.last[target] = v
                return v
        raise AssertionError("unreachable")


def backends_everywhere(lab: Lab) -> dict[str, dict[str, Any] | None]:
    return {n.name: cli_json(lab, n, "backends") for n in lab.nodes}


def check_markers(lab: Lab, markers: list[Marker], timeout: float) -> dict[str, Any]:
    """Wait (bounded) until every acknowledged marker is in every node's committed table and
    every node has applied its committed generation; then fill each marker's missing_on."""
    acked = [m for m in markers if m.acked]
    deadline = time.monotonic() + timeout
    tables: dict[str, dict[str, Any] | None] = {}
    for _ in range(60):
        tables = backends_everywhere(lab)
        complete = all(t is not None for t in tables.values())
        for m in acked:
            m.missing_on = [n for n, t in tables.items() if t is None or not m.present(t)]
        applied = all(t is not None and t.get("applied_generation") == t.get("table_generation")
                      for t in tables.values())
        if complete and applied and not any(m.missing_on for m in acked):
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return {"lost": sum(1 for m in acked if m.missing_on),
            "unanswered_nodes": [n for n, t in tables.items() if t is None],
            "not_applied": [n for n, t in tables.items() if t is not None
                            and t.get("applied_generation") != t.get("table_generation")],
            "tables": tables}


def table_rows(backends: dict[str, Any]) -> dict[str, list[Any]]:
    """A committed table as {service/backend: [address, port, weight, state]}."""
    return {f"{s['name']}/{b['id']}": [b["address"], b["port"], b["weight"], b["state"]]
            for s in backends["services"] for b in s["backends"]}


# ------------------------------------------------------------------- holder figures


def holder_figures(timeline: list[tuple[float, frozenset[str]]], start: float,
                   end: float) -> dict[str, Any]:
    """From the monitor's timeline, within [start, end]: the longest stretch with no holder,
    the total time with two or more, and every change of holder."""
    state: frozenset[str] = frozenset()
    for t, h in timeline:
        if t > start:
            break
        state = h
    points = [(start, state)] + [(t, h) for t, h in timeline if start < t < end]
    points.append((end, frozenset()))
    empty_since: float | None = None
    spans: list[tuple[float, float]] = []
    two = 0.0
    for (t0, h), (t1, _) in zip(points, points[1:], strict=False):
        if len(h) >= 2:
            two += t1 - t0
        if not h and empty_since is None:
            empty_since = t0
        elif h and empty_since is not None:
            spans.append((empty_since, t0))
            empty_since = None
    if empty_since is not None:
        spans.append((empty_since, end))
    transitions, moves = [], 0
    prev, last_holder = state, (sorted(state)[0] if len(state) == 1 else None)
    for t, h in points[1:-1]:
        for name in sorted(h ^ prev):
            transitions.append([round((t - start) * 1000), name, name in h])
            if name in h and name != last_holder:
                moves += 1  # another server took it (a release and re-claim is no move)
                last_holder = name
        prev = h
    longest = max((e - s for s, e in spans), default=0.0)
    return {"longest_no_holder_ms": round(longest * 1000, 1),
            "no_holder_total_ms": round(sum(e - s for s, e in spans) * 1000, 1),
            "no_holder_spans": len(spans),
            "no_holder_at_end": empty_since is not None,
            "two_holders_ms": round(two * 1000, 3),
            "holder_at_start": sorted(state), "moves": moves,
            "transitions_ms": transitions}  # [ms after start, node, holds from then on]


# ----------------------------------------------------------------------- processes


def agent_look(node: LabNode) -> dict[str, Any]:
    """The agent's open file descriptors, resident memory and fd limit (from /proc)."""
    if node.agent is None or node.agent.poll() is not None:
        return {"running": False}
    pid = node.agent.pid
    out: dict[str, Any] = {"running": True, "pid": pid}
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return {"running": False}
    return out


def raft_listening(node: LabNode) -> bool:
    """Is anything listening on the node's Raft port (inside its namespace)?"""
    out = run("ip", "netns", "exec", node.netns, "ss", "-Hltn", f"sport = :{RAFT_PORT}",
              check=False)
    return bool(out.strip())


def listening_everywhere(lab: Lab, timeout: float) -> dict[str, bool]:
    """Each node's Raft port listening, waited for (bounded): an agent restarted a moment ago
    binds it only once it has started."""
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        up = {n.name: raft_listening(n) for n in lab.nodes}
        if all(up.values()) or time.monotonic() >= deadline:
            return up
        time.sleep(0.2)
    return up


def spawn_load(lab: Lab, node: LabNode, *args: str) -> subprocess.Popen[str]:
    """Start a hostile client (_nemesis_load.py) in node's namespace."""
    return subprocess.Popen(["ip", "netns", "exec", node.netns, lab.python, LOAD, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish_load(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Its JSON counts once it ends (killed if it outlives `timeout`)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        return {"error": "killed: outlived its bound", "stderr": err[-300:]}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"exit {proc.returncode}", "stderr": err[-300:]}
