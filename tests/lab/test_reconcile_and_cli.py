"""Drift repair, stray VIPs, re-announce after a heal, and the lab CLI as an operator uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from hacluster.lab.lab import random_prefix
from hacluster.lab.netns import LabError, ip, netns_list
from tests.support.wait import wait_until

from .conftest import assert_no_overlap


def _served(lab) -> str | None:
    try:
        return lab.in_client("curl", "-s", "--max-time", "2", f"http://{lab.vip}/").strip() or None
    except LabError:
        return None


def test_holder_restores_a_vip_deleted_behind_its_back(lab, monitor):
    holder = lab.wait_single_holder(10)
    # The lab is up as soon as the VIP is held; the balancing table is applied ~0.1 s later.
    wait_until(lambda: _served(lab), 10, "the VIP to serve (the committed table applied)")
    ip("addr", "del", f"{lab.vip}/24", "dev", "eth0", ns=lab.node(holder).netns)
    wait_until(lambda: lab.holders() == [holder], 2, f"{holder} to restore the VIP")
    served = lab.in_client("curl", "-s", "--max-time", "2", f"http://{lab.vip}/").strip()
    assert served in {n.name for n in lab.nodes}  # the VIP serves again (balanced)
    assert_no_overlap(monitor)


def _tables(netns: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"], capture_output=True,
                         text=True, timeout=10).stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("table ")}


def test_a_flushed_ruleset_is_put_back_when_the_kernel_says_so(lab):
    # A firewall reload (`nft flush ruleset`) takes the balancing table and the Raft port
    # guard; the kernel's change notification (hostops/nftwatch.py) has both put back within
    # seconds: they are no longer read back on a period (the guard's was 10 s; issue 17)
    holder = lab.wait_single_holder(10)
    wait_until(lambda: _served(lab), 10, "the VIP to serve (the committed table applied)")
    netns = lab.node(holder).netns
    assert {"hacluster", "hacluster_guard"} <= _tables(netns)
    subprocess.run(["ip", "netns", "exec", netns, "nft", "flush", "ruleset"], check=True, timeout=10)
    wait_until(lambda: {"hacluster", "hacluster_guard"} <= _tables(netns), 4,
               f"{holder}'s balancing table and Raft port guard to be put back")
    wait_until(lambda: _served(lab), 5, "the VIP to serve again")


def test_stray_vip_on_a_follower_is_removed(lab):
    holder = lab.wait_single_holder(10)
    follower = next(n for n in lab.nodes if n.name != holder)
    ip("addr", "add", f"{lab.vip}/24", "dev", "eth0", ns=follower.netns)
    wait_until(lambda: lab.holders() == [holder], 2, f"{follower.name} to drop the stray VIP")
    assert "releasing" in follower.log.read_text()


def test_new_holder_re_announces_when_the_old_one_comes_back(lab):
    old = lab.wait_single_holder(10)
    lab.partition(lab.node(old))
    new = lab.wait_single_holder(5, exclude=(old,))
    # The partition's duration, not a wait for a condition: a heal within the claim's own
    # gratuitous ARP burst (0-1 s) is covered by that burst and needs no second one.
    time.sleep(1.5)
    lab.heal(lab.node(old))
    wait_until(lambda: "reconnected: re-announcing" in lab.node(new).log.read_text(), 10,
               f"{new} to re-announce the VIP after the heal")


def _cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacluster_cli.main", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_lab_cli_up_status_down_round_trip():
    name = random_prefix("c", 7)
    try:
        up = _cli("lab", "up", "--nodes", "3", "--name", name)
        assert up.returncode == 0, up.stderr
        desc = json.loads(up.stdout.strip().splitlines()[-1])  # last line: the description
        assert desc["name"] == name and len(desc["nodes"]) == 3 and desc["vips"]
        assert {"name", "netns", "ip", "agent_pid", "config", "data_dir", "admin",
                "metrics"} <= set(desc["nodes"][0])
        assert desc["services"][0] == {"name": "http", "vip": desc["vips"][0], "port": 80,
                                       "proto": "tcp"}
        st = _cli("lab", "status", "--name", name, "--json")
        assert st.returncode == 0, st.stderr
        rows = json.loads(st.stdout)["nodes"]
        assert sum(r["holds_vip"] for r in rows) == 1 and all(r["agent_alive"] for r in rows)
        again = _cli("lab", "up", "--name", name)
        assert again.returncode != 0 and "already exists" in again.stderr
    finally:
        down = _cli("lab", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert not [ns for ns in netns_list() if ns.startswith(name + "-")]
    gone = _cli("lab", "status", "--name", name)
    assert gone.returncode != 0 and "no lab named" in gone.stderr


def test_lab_down_cleans_up_after_a_crashed_run():
    name = random_prefix("c", 7)
    for suffix in ("sw", "n1"):  # what a crashed `lab up` could leave behind
        ip("netns", "add", f"{name}-{suffix}")
    down = _cli("lab", "down", "--name", name)
    assert down.returncode == 0 and "removed 2 namespace(s)" in down.stderr
    assert not [ns for ns in netns_list() if ns.startswith(name + "-")]


def test_lab_rejects_bad_names():
    bad = _cli("lab", "up", "--name", "bad name!")
    assert bad.returncode != 0 and "use 1-8 letters/digits" in bad.stderr
