"""A full data disk on the leader (issue 15, finding 4), in a real lab: no SIGBUS, no restart
loop; the leader steps down with an ERROR, the VIP moves once, the problem shows in
`hacluster status` and the metrics, changes still commit, and all clears once space is freed.

Each server's data_dir is a small tmpfs of its own (a unique source name; unmounted in
finally, after the agents are gone). Before the fix, pysyncobj's sparse mmap journal died
with SIGBUS at the first entry that needed a new page on the full filesystem.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

from hacluster.lab.lab import METRICS_PORT, cli_argv
from hacluster.lab.monitor import HolderMonitor
from tests.support.wait import wait_until

from .conftest import assert_no_overlap, cli_json

TMPFS_SIZE = "16m"
COMMITS = 6  # drain/undrain after the disk filled: the old leader writes each into its journal


def _fill(path: Path) -> int:
    """Write `path` until its filesystem refuses; the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12):
            block = b"\0" * chunk
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def _metric(lab, name: str, metric: str) -> float | None:
    node = lab.node(name)
    url = f"http://{node.ip}:{METRICS_PORT}/metrics"
    proc = subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-c",
                           f"import urllib.request; print(urllib.request.urlopen({url!r}, "
                           "timeout=3).read().decode())"], capture_output=True, text=True, timeout=15)
    for line in proc.stdout.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    return None


def _problems(lab, name: str) -> list[str]:
    """`hacluster status --cluster --json` on server `name`: its problems (it exits 1 then)."""
    node = lab.node(name)
    proc = subprocess.run(cli_argv(node.netns, "status", "--cluster", "--json", "--timeout", "5",
                                   "--config", str(node.config)),
                          capture_output=True, text=True, timeout=20)
    return json.loads(proc.stdout)["problems"] if proc.stdout.strip() else [proc.stderr]


def test_a_full_disk_on_the_leader_moves_leadership_once_and_clears_when_freed(lab_factory):
    lab = lab_factory(up=False)
    mounts: list[Path] = []
    monitor: HolderMonitor | None = None
    try:
        for n in lab.nodes:
            n.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700",
                            f"hcdisk-{lab.prefix}-{n.name}", str(n.data_dir)], check=True)
            mounts.append(n.data_dir)
        lab.up()
        monitor = HolderMonitor.for_lab(lab)
        old = lab.holders()[0]
        node = lab.node(old)
        others = [n.name for n in lab.nodes if n.name != old]
        assert _fill(node.data_dir / "filler") > 0
        # A backend fails and recovers: health verdicts are committed into every journal. On
        # main, the leader's agent died of SIGBUS at the first one (exit -7).
        flaky = lab.node(others[1])

        def committed_web(healthy: bool) -> bool:
            doc = cli_json(lab, others[0], "checks") or {"committed": []}
            return any(c["node"] == flaky.name and c["check"] == "web" and c["healthy"] is healthy
                       for c in doc["committed"])

        lab.stop_backend(flaky)
        wait_until(lambda: committed_web(False), 20, f"{flaky.name}'s backend committed down")
        lab.start_backend(flaky)
        wait_until(lambda: committed_web(True), 20, f"{flaky.name}'s backend committed up again")
        assert node.agent is not None and node.agent.poll() is None, \
            f"{old}'s agent exited with {node.agent.returncode if node.agent else None}"

        new = wait_until(lambda: next(iter(h for h in lab.holders() if h != old), None), 15,
                         "another member to hold the VIP")
        wait_until(lambda: any(p.startswith(f"{old}: Raft data disk full")
                               for p in _problems(lab, new)), 15, "the problem shown")
        log = node.log.read_text()
        assert "ERROR" in log and "Stepping down from leadership" in log, log[-3000:]
        assert _metric(lab, old, "hacluster_raft_disk_full") == 1

        # changes still commit, and the full member takes them into the space reserved ahead
        for i in range(COMMITS):
            assert cli_json(lab, new, "undrain" if i % 2 else "drain", others[0]) is not None
        assert node.agent.poll() is None, "the old leader's agent died"
        gen = cli_json(lab, new, "status", "--agent")["generation"]
        wait_until(lambda: (cli_json(lab, old, "status", "--agent") or {}).get("generation") == gen, 15,
                   f"{old} to apply generation {gen}")

        (node.data_dir / "filler").unlink()
        wait_until(lambda: not any("Raft data disk" in p for p in _problems(lab, new)), 15,
                   "the problem to clear")
        assert _metric(lab, old, "hacluster_raft_disk_full") == 0
        assert node.agent.poll() is None and lab.holders() == [new]
        assert_no_overlap(monitor)
        assert monitor.holders_ever() == {old, new}  # one move: no restart loop, no move back
    finally:
        if monitor is not None:
            monitor.stop()
        lab.down()  # the agents first: their files keep the tmpfs busy
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], check=False)
