"""The faults of bench/nemesis.py: each injects, holds and undoes one fault on a running
lab, bounded in time, and returns what it did (its JSON details). The runner around them
(markers, monitor, supervisor, verdict) is in nemesis.py; the docstring there says what each
fault is and why.
"""

from __future__ import annotations

import random
import resource
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _labkit import BenchError
from _nemesis import (
    Marker,
    Supervisor,
    TmpfsLab,
    Weights,
    agent_look,
    fill_disk,
    finish_load,
    free_disk,
    set_marker,
    spawn_load,
)

from hacluster.lab.lab import RAFT_PORT, Lab, LabNode
from hacluster.lab.wait import WaitTimeout, wait_until

FAULTS = ("raft-flood", "fd-exhaustion", "disk-full", "oneway-in", "oneway-out", "link-flap",
          "leader-restart", "cold-start")
TMPFS_FAULTS = {"disk-full"}  # run in a TmpfsLab
HOLD_S = 10.0
FLOOD_CONNS = 4  # per member
# pysyncobj accepts one connection per tick (~100/s here): a limit of 512 is reached within the
# 10 s, the kernel's usual 1024 only just not (the production unit sets 65536).
FD_COUNT, FD_LIMIT = 2000, 512
FLAP_S, FLAP_EVERY_S = 20.0, 0.3
RESTARTS, RESTART_EVERY_S = 5, 2.0
COLD_DELAY_MAX_S = 1.5
DATA_MB = 16


# ------------------------------------------------------------------------------ trial


@dataclass
class Trial:
    lab: Lab
    sup: Supervisor
    rng: random.Random
    weights: Weights
    holder: LabNode
    followers: list[LabNode]
    t_fault: float = 0.0
    during: list[Marker] = field(default_factory=list)
    looks: dict[str, Any] = field(default_factory=dict)
    _writer: threading.Thread | None = None

    def write_during(self, via: LabNode, lasts_s: float) -> None:
        """Up to three weight changes through via's CLI while the fault lasts (the first
        1 s in, then every 3 s): an acknowledged one must survive like the markers."""
        def go() -> None:
            for i, n in enumerate(self.lab.nodes):
                start = self.t_fault + 1.0 + 3.0 * i
                if start > self.t_fault + lasts_s:
                    return
                time.sleep(max(0.0, start - time.time()))
                m = Marker("weight", f"echo/{n.name}", self.weights.next(f"echo/{n.name}"),
                           via.name, "during")
                self.during.append(set_marker(self.lab, m))
        self._writer = threading.Thread(target=go, name="writes-during", daemon=True)
        self._writer.start()

    def join_writes(self) -> None:
        if self._writer is not None:
            self._writer.join(120)  # 3 CLI calls of at most 40 s each

    def hold(self, seconds: float) -> None:
        """Wait until `seconds` after the fault, looking at the agents 80 % of the way in."""
        time.sleep(max(0.0, self.t_fault + 0.8 * seconds - time.time()))
        self.looks["during"] = {n.name: agent_look(n) for n in self.lab.nodes}
        time.sleep(max(0.0, self.t_fault + seconds - time.time()))


def f_raft_flood(tr: Trial) -> dict[str, Any]:
    src = tr.followers[0]
    targets = ",".join(f"{n.ip}:{RAFT_PORT}" for n in tr.lab.nodes)
    tr.write_during(tr.followers[1], HOLD_S)
    p = spawn_load(tr.lab, src, "flood", targets, "--seconds", str(HOLD_S),
                   "--conns", str(FLOOD_CONNS))
    tr.hold(HOLD_S)
    return {"from": src.name, "load": finish_load(p, 15)}


def f_fd_exhaustion(tr: Trial) -> dict[str, Any]:
    target, src = tr.holder, tr.followers[0]
    assert target.agent is not None
    pid = target.agent.pid
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (FD_LIMIT, old[1]))
    try:
        tr.write_during(src, HOLD_S)
        p = spawn_load(tr.lab, src, "hold", f"{target.ip}:{RAFT_PORT}", "--count", str(FD_COUNT),
                       "--seconds", str(HOLD_S))
        tr.hold(HOLD_S)
        load = finish_load(p, 15)
    finally:
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        except ProcessLookupError:
            pass  # the agent is gone (recorded as a crash)
    return {"from": src.name, "fd_limit": FD_LIMIT, "fd_limit_before": list(old), "load": load}


def f_disk_full(tr: Trial) -> dict[str, Any]:
    target = tr.holder
    if not isinstance(tr.lab, TmpfsLab) or not Path(target.data_dir).is_mount():
        raise BenchError(f"{target.data_dir} is not a tmpfs of the suite's: not filling it")
    filled = fill_disk(target.data_dir, tr.lab.data_mb)
    try:
        tr.write_during(tr.followers[0], HOLD_S)
        tr.hold(HOLD_S)
    finally:
        free_disk(target.data_dir)
    return {"filled": filled, "tmpfs_mb": tr.lab.data_mb}


def f_oneway(direction: str) -> Callable[[Trial], dict[str, Any]]:
    def fault(tr: Trial) -> dict[str, Any]:
        tr.lab.partition(tr.holder, one_way=direction)
        try:
            tr.write_during(tr.followers[0], HOLD_S)
            tr.hold(HOLD_S)
        finally:
            tr.lab.heal(tr.holder)
        return {"one_way": direction}
    return fault


def f_link_flap(tr: Trial) -> dict[str, Any]:
    node, down, toggles = tr.holder, False, 0
    tr.write_during(tr.followers[0], FLAP_S)
    t0 = time.monotonic()
    try:
        for i in range(int(FLAP_S / FLAP_EVERY_S) + 1):
            time.sleep(max(0.0, t0 + i * FLAP_EVERY_S - time.monotonic()))
            if time.monotonic() - t0 >= FLAP_S:
                break
            (tr.lab.restore_link if down else tr.lab.cut_link)(node)
            down, toggles = not down, toggles + 1
    finally:
        if down:
            tr.lab.restore_link(node)
    return {"toggles": toggles, "every_ms": FLAP_EVERY_S * 1000}


def f_leader_restart(tr: Trial) -> dict[str, Any]:
    lab, last, kills = tr.lab, tr.holder, []
    tr.write_during(tr.followers[0], RESTARTS * RESTART_EVERY_S)
    for i in range(RESTARTS):
        time.sleep(max(0.0, tr.t_fault + i * RESTART_EVERY_S - time.time()))
        target = last
        if i:
            try:
                others = wait_until(lambda last=last: [h for h in lab.holders() if h != last.name],
                                    5.0, "a holder other than the one just killed", interval=0.05)
                target = lab.node(others[0])
            except WaitTimeout:
                pass  # none yet: the one just killed is killed again
        at = round((time.time() - tr.t_fault) * 1000)
        tr.sup.expect_exit(target)
        lab.signal_agent(target, signal.SIGKILL)
        lab.wait_agent_exit(target, 10)
        tr.sup.start_agent(target)
        kills.append({"at_ms": at, "node": target.name})
        last = target
    return {"kills": kills}


def f_cold_start(tr: Trial) -> dict[str, Any]:
    lab = tr.lab
    for n in lab.nodes:
        tr.sup.expect_exit(n)
        lab.signal_agent(n, signal.SIGKILL)
    for n in lab.nodes:
        lab.wait_agent_exit(n, 10)
    order = list(lab.nodes)
    tr.rng.shuffle(order)
    delays = [round(tr.rng.uniform(0, COLD_DELAY_MAX_S), 2) for _ in order]
    for n, d in zip(order, delays, strict=True):
        time.sleep(d)
        tr.sup.start_agent(n)
    return {"order": [n.name for n in order], "delays_s": delays}


FAULT_RUN: dict[str, Callable[[Trial], dict[str, Any]]] = {
    "raft-flood": f_raft_flood, "fd-exhaustion": f_fd_exhaustion, "disk-full": f_disk_full,
    "oneway-in": f_oneway("in"), "oneway-out": f_oneway("out"), "link-flap": f_link_flap,
    "leader-restart": f_leader_restart, "cold-start": f_cold_start,
}
