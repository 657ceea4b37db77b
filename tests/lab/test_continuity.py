"""Failover nobody notices (issue 14): established connections through the VIP survive.

Each test holds >= 20 HTTP downloads (`GET /slow/N`, a line every 50 ms) and one HL7 v2
MLLP connection (a message every 50 ms, each ACKed) open through the VIP, then hits the VIP
holder: power-off, cable cut, SIGTERM of its agent, `hacluster failover --to`. Every flow to
a surviving backend (one whose server the fault did not take away) must complete, and the
HL7 sender must see no reconnect, no lost message and no duplicate (hacluster.lab.continuity
says what each of these means). When the fault takes the holder's server away, the flows are
opened on the other servers' backends only (FlowRun's `avoid`), so that all 20 count.

The cluster must have its connection sync up before the flows start (every agent reports
`connection_sync: ok` in `hacluster status --agent --json`), so a flow never races the sync's
first update.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hacluster.lab.continuity import problems, run_through, sync_state
from hacluster.lab.lab import Lab, cli_argv
from tests.support.wait import wait_until

FLOWS = 20
DURATION_S = 5.0  # traffic after the flows settle: the fault, the new holder, recovery


def status_text(lab: Lab, name: str, ok_only: bool = True) -> str:
    """`hacluster status` as an operator on server `name` reads it ("" if it failed, unless
    ok_only is False: a status with problems exits 1)."""
    node = lab.node(name)
    proc = subprocess.run(cli_argv(node.netns, "status", "--timeout", "1", "--config", str(node.config)),
                          capture_output=True, text=True, timeout=15)
    return proc.stdout if proc.returncode == 0 or not ok_only else ""


def wait_sync_ok(lab: Lab, timeout: float = 20) -> None:
    for n in lab.nodes:
        wait_until(lambda n=n: sync_state(lab, n.name) == "ok", timeout,
                   f"{n.name}: its agent to report connection sync ok")


def others(lab: Lab, name: str) -> list[str]:
    return [n.name for n in lab.nodes if n.name != name]


def report(acc: dict) -> str:
    return json.dumps({k: v for k, v in acc.items() if k != "raw"}, indent=1)


def assert_unnoticed(acc: dict) -> None:
    """The issue's demand: every flow to a surviving backend completed, the HL7 connection
    never reconnected, lost or duplicated a message, and new connections are served again."""
    found = problems(acc, min_flows=FLOWS)
    if not acc["new_connections"]["recovered"]:
        found.append("new connections still failing when the run ended")
    assert not found, "\n".join(found) + "\n" + report(acc)


def faults(lab: Lab, holder: str) -> dict[str, tuple[Callable[[], None], set[str]]]:
    """fault -> (inject it on the holder, the servers whose backends it takes away)."""
    node = lab.node(holder)
    target = others(lab, holder)[0]

    def failover_to() -> None:
        proc = subprocess.run(cli_argv(node.netns, "failover", "--to", target, "--config",
                                       str(node.config)), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr

    return {
        "poweroff": (lambda: lab.power_off(node), {holder}),
        "cable-cut": (lambda: lab.cut_link(node), {holder}),
        "sigterm": (lambda: lab.signal_agent(node, signal.SIGTERM), set()),
        "failover-to": (failover_to, set()),
    }


def through_fault(lab: Lab, fault: str, workdir: Path) -> dict:
    holder = lab.wait_single_holder(10)
    wait_sync_ok(lab)
    inject, dead = faults(lab, holder)[fault]
    return run_through(lab, inject, workdir, dead=dead, avoid=dead, flows=FLOWS, duration=DURATION_S,
                       after=lambda: lab.wait_single_holder(5, exclude=(holder,)))


@pytest.mark.parametrize("fault", ["poweroff", "cable-cut", "sigterm", "failover-to"])
def test_established_flows_survive_a_holder_fault(lab_factory, tmp_path, fault):
    lab = lab_factory()
    assert_unnoticed(through_fault(lab, fault, tmp_path))


def test_established_flows_survive_holder_power_off_in_a_5_server_lab(lab_factory, tmp_path):
    lab = lab_factory(5)
    assert_unnoticed(through_fault(lab, "poweroff", tmp_path))


class KeepKilling:
    """SIGKILL every process named `comm` in network namespace `netns` as soon as it appears
    (a crash loop: the agent's supervisor restarts it, it dies again), for at most `limit_s`."""

    def __init__(self, netns: str, comm: str, limit_s: float = 60.0):
        self.inode = os.stat(f"/run/netns/{netns}").st_ino
        self.comm, self.limit_s = comm, limit_s
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = threading.Event()
        timer = threading.Timer(self.limit_s, deadline.set)
        timer.start()
        try:
            while not self._stop.is_set() and not deadline.is_set():
                self.kill_now()
                self._stop.wait(0.01)
        finally:
            timer.cancel()

    def kill_now(self) -> None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if (Path(f"/proc/{pid}/comm").read_text().strip() == self.comm
                        and os.stat(f"/proc/{pid}/ns/net").st_ino == self.inode):
                    os.kill(int(pid), signal.SIGKILL)
                    self.killed += 1
            except OSError:
                pass  # gone meanwhile

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_conntrackd_dying_on_the_holder_is_reported_and_the_cluster_keeps_working(lab_factory, tmp_path):
    # round-robin: without the sync a new holder has no entry for these flows, so it picks
    # a backend afresh for a mid-stream packet, and a backend's packet to the VIP meets no
    # entry at all: established flows break, which is what the sync is for
    lab = lab_factory(algorithm="round-robin")
    holder = lab.wait_single_holder(10)
    wait_sync_ok(lab)
    killer = KeepKilling(lab.node(holder).netns, "conntrackd")
    try:
        wait_until(lambda: sync_state(lab, holder) == "down", 15,
                   f"{holder}: its agent to report connection sync down")
        # and the operator's cluster view lists it among the problems
        assert f"connection sync DOWN on {holder}" in status_text(lab, holder, ok_only=False)
        assert killer.killed >= 1
        # sync down is no reason to move the VIP: the holder keeps it and serves
        assert lab.holders() == [holder]
        acc = run_through(lab, lambda: lab.power_off(lab.node(holder)), tmp_path, dead={holder},
                          avoid={holder}, flows=FLOWS, duration=DURATION_S,
                          after=lambda: lab.wait_single_holder(5, exclude=(holder,)))
    finally:
        killer.stop()
    f = acc["flows"]
    assert acc["ready"] and f["to_surviving"] >= FLOWS, report(acc)
    assert f["survived"] < f["to_surviving"], "flows survived without the holder's sync:\n" + report(acc)
    # the cluster keeps working: a new holder, and new connections are served again
    assert acc["new_connections"]["recovered"], report(acc)
    new = lab.wait_single_holder(5, exclude=(holder,))
    assert status_text(lab, new, ok_only=False).strip(), f"{new}: `hacluster status` did not answer"
