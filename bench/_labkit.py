"""Shared pieces of the lab benchmarks: probing through a file, holder timelines, the machine.

Everything here is bounded in count and time; nothing sleeps for correctness (waits poll a
condition until a deadline: hacluster.lab.wait, the lab tests' own). What the product's lab
already has (holders, prefixes, signalling, the CLI's command line) is imported from
hacluster.lab, never copied here; bench/ may not import tests/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hacluster.lab.lab import HTTP_PORT, Lab
from hacluster.lab.monitor import HolderMonitor
from hacluster.lab.netns import OBSERVER_PIDS, holds, netns_list, netns_pids
from hacluster.lab.traffic import Attempt, Prober, outage_windows  # noqa: F401 (re-exported)
from hacluster.lab.wait import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable


class BenchError(RuntimeError):
    pass


# What a trial or a run can fail with and be recorded as failed, the benchmark going on: its
# own errors, and a wait that timed out.
FAILURES = (BenchError, WaitTimeout)

# The benchmarks' conditions are cheap (an `ip` call, a file, a log's tail) and a figure such
# as "new holder seen after" wants a fine poll: 20 ms, not the lab tests' 0.2 s.
POLL_S = 0.02


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(doc: dict[str, Any], json_out: str | None) -> int:
    """The end of every benchmark: the JSON document to --json-out (if given) and as the last
    line of stdout; the exit status (130 when it was interrupted)."""
    if json_out:
        Path(json_out).write_text(json.dumps(doc, indent=2) + "\n")
        log(f"JSON written to {json_out}")
    print(json.dumps(doc))
    return 130 if doc.get("interrupted") else 0


def kill_and_reap(procs: Any) -> None:
    """SIGKILL each Popen still running and wait for it (at most 5 s each)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def interrupt_on_sigterm() -> None:
    """SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt, so every `finally` tears the labs
    down."""
    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C / kill -INT must still work.
    signal.signal(signal.SIGINT, raise_interrupt)


def pids_by_comm(ns: str, comm: str) -> list[int]:
    """Processes of network namespace `ns` whose command name is `comm`."""
    out = []
    for pid in netns_pids(ns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                out.append(pid)
        except OSError:
            pass  # exited meanwhile
    return out


def client_get(lab: Lab, url: str, max_s: float) -> str | None:
    """One GET from the client namespace on a new connection, given up after max_s: the
    body (a lab backend answers its server's name), or None."""
    try:
        p = subprocess.run(["ip", "netns", "exec", lab.client_ns, "curl", "-s", "-m", f"{max_s:g}",
                            url], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None


def client_served(lab: Lab) -> str | None:
    """One HTTP GET to the VIP from the client namespace: the answering server, or None."""
    return client_get(lab, f"http://{lab.vip}:{HTTP_PORT}/", 0.5)


def wait_client_served(lab: Lab, holder: str, timeout: float, in_a_row: int = 3) -> float:
    """Wait until the client reaches `holder` through the VIP `in_a_row` times running;
    return the seconds waited. A settled cluster whose client still points at a server
    that dropped the VIP (stale ARP entry) is not ready for the next trial."""
    t0 = time.monotonic()
    run = 0
    tries = 0
    while run < in_a_row:
        tries += 1
        if time.monotonic() - t0 > timeout or tries > 10_000:
            raise BenchError(f"client not served by {holder} via {lab.vip} within "
                             f"{timeout:.0f} s")
        if client_served(lab) == holder:
            run += 1
        else:
            run = 0
            time.sleep(0.1)
    return round(time.monotonic() - t0, 2)


def foreign_labs(own_prefix: str) -> list[str]:
    """Prefixes of network-namespace labs that are not ours (other people's tests)."""
    return sorted({ns.rsplit("-", 1)[0] for ns in netns_list()
                   if not ns.startswith(own_prefix + "-")})


def wait_quiet(own_prefix: str, timeout: float) -> tuple[list[str], float]:
    """Wait (bounded) until no other lab runs on this machine, so that its agents do not
    compete for the CPUs during a trial. Returns (labs still there, seconds waited)."""
    t0 = time.monotonic()
    others = foreign_labs(own_prefix)
    polls = 0
    while others and time.monotonic() - t0 < timeout and polls < 10_000:
        polls += 1
        time.sleep(0.5)
        others = foreign_labs(own_prefix)
    return others, round(time.monotonic() - t0, 1)


def code_version() -> dict[str, Any]:
    """The product commit the agents ran, and whether its code had uncommitted edits."""
    def git(*args: str) -> str:
        try:
            p = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                               timeout=10)
            return p.stdout.rstrip()  # not strip(): porcelain lines start with a space
        except (OSError, subprocess.TimeoutExpired):
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "hacluster",
                                     "cli").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "dirty_files": dirty}


def machine() -> dict[str, Any]:
    def first_line(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def version(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"

    return {"nproc": os.cpu_count(), "kernel": platform.release(), "code": code_version(),
            "cpu": first_line("/proc/cpuinfo", "model name"),
            "mem_total": first_line("/proc/meminfo", "MemTotal"),
            "python": platform.python_version(), "keepalived": version(["keepalived", "-v"]),
            "loadavg_at_start": os.getloadavg()}


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x == x]  # drop NaN
    return round(statistics.median(xs), 1) if xs else None


def mx(xs: list[float]) -> float | None:
    xs = [x for x in xs if x == x]
    return round(max(xs), 1) if xs else None


# ------------------------------------------------------------------------------ prober


class FileProber(Prober):
    """traffic.Prober (hacluster.lab.prober in the client namespace) writing to a file.

    traffic.Prober only hands its attempts over once the run ends; reading them from a file
    while it runs lets a trial start its fault after a measured second of good traffic
    instead of after a guessed sleep.
    """

    def __init__(self, lab: Lab, duration: float, path: Path, interval: float = 0.01,
                 timeout: float = 1.0):
        self.path = path
        self._out = open(path, "w")  # noqa: SIM115 - closed in result()/kill()
        super().__init__(lab, duration, interval, timeout, python=PYTHON, stdout=self._out)

    def attempts(self) -> list[Attempt]:
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            rows.append(Attempt(r["t"], r["ok"], r["server"]))
        return sorted(rows, key=lambda a: a.t)

    def durations(self) -> dict[float, float]:
        """Start time -> how long the attempt took (s), for every finished attempt."""
        out = {}
        for line in self.path.read_text().splitlines():
            try:
                r = json.loads(line)
                out[r["t"]] = r["ms"] / 1000
            except (ValueError, KeyError):
                continue
        return out

    def good_for(self) -> float:
        """Seconds of unbroken successes up to the newest finished attempt."""
        att = self.attempts()
        if not att or not att[-1].ok:
            return 0.0
        start = att[-1].t
        for a in reversed(att):
            if not a.ok:
                break
            start = a.t
        return att[-1].t - start

    def result(self) -> list[Attempt]:
        try:
            _, err = self.proc.communicate(timeout=self.duration + 30)
        finally:
            self._out.close()
        if self.proc.returncode != 0:
            raise BenchError(f"prober failed ({self.proc.returncode}): {err.strip()}")
        return self.attempts()

    def kill(self) -> None:
        super().kill()
        self._out.close()


# ----------------------------------------------------------------------------- monitor


class ResilientMonitor(HolderMonitor):
    """HolderMonitor that restarts a watcher which dies while it runs.

    `ip -n NS monitor` runs *inside* NS, so anything that kills every process of the
    namespace kills the witness too (Lab.power_off did, before observers were spared via
    OBSERVER_PIDS); the monitor would then miss the VIP's deletion and count that server as
    a holder for ever (a false overlap). A restarted watcher records the holder state it
    reads after subscribing, so nothing that happened while nobody watched is lost.
    """

    _stopping: bool = False
    restarts: int = 0

    def _read(self, name: str, proc: subprocess.Popen[str]) -> None:  # type: ignore[override]
        restarts = 0
        while True:
            super()._read(name, proc)  # returns when the process's stdout closes
            if self._stopping or restarts >= 100:
                return
            restarts += 1
            self.restarts += 1
            ns = self.netns[name]
            proc = subprocess.Popen(["ip", "-n", ns, "-o", "-ts", "monitor", "address", "dev",
                                     "eth0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True)
            OBSERVER_PIDS.add(proc.pid)  # spared by Lab.power_off(), like the first one
            with self._lock:
                self._procs.append(proc)
            time.sleep(0.05)  # let it subscribe: a change after the read below is then seen
            # What changed while nobody watched, stamped when read: a deletion is thus dated
            # late, never early, so an overlap can be overstated but never hidden.
            present = holds(ns, self.vip)
            with self._lock:
                self.events.append((time.time(), name, present))

    def stop(self) -> None:
        self._stopping = True
        super().stop()
        with self._lock:  # a watcher restarted while stop() ran
            late, self._procs[:] = list(self._procs), []
        for p in late:
            OBSERVER_PIDS.discard(p.pid)
            p.kill()
            p.wait(5)

    def transitions(self) -> list[tuple[float, str, bool]]:
        """(time, node, now holds) for every gain or loss of the VIP; renewals dropped."""
        with self._lock:
            evs = sorted(self.events)
        holding: set[str] = set()
        out = []
        for ts, name, present in evs:
            if present and name not in holding:
                holding.add(name)
                out.append((ts, name, True))
            elif not present and name in holding:
                holding.discard(name)
                out.append((ts, name, False))
        return out


def start_monitor(lab: Lab) -> ResilientMonitor:
    mon = ResilientMonitor.for_lab(lab)
    # `ip monitor` needs a moment to subscribe; an event in that moment would be missed.
    wait_until(lambda: all(p.poll() is None for p in mon._procs), 2.0, "ip monitor start",
               interval=POLL_S)
    time.sleep(0.05)
    return mon



# ------------------------------------------------------------------------------ agent logs

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_matches(path: Path, pattern: re.Pattern[str], since: float,
                until: float = float("inf")) -> list[tuple[float, re.Match[str]]]:
    """(wall time, match) of every line of an agent's log (human format, ms stamps) stamped
    in [since, until] that matches `pattern` (searched anywhere in the line)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        found = pattern.search(line)
        if found is None:
            continue
        t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
        if since - 0.001 <= t <= until:
            out.append((t, found))
    return out
