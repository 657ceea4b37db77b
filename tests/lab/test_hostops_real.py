"""NetlinkHostOps against a real kernel: two namespaces A and B joined by a veth pair.

NetlinkHostOps runs in A through tests/lab/_hostops_probe_helper.py (netlink and packet
sockets act on the namespace of the process that opens them); the test inspects both sides
with iproute2. Every name carries a random prefix and the fixture deletes the namespaces and
kills the helper even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hacluster.lab.lab import random_prefix
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="lab tests need root for namespaces"),
]

REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("_hostops_probe_helper.py")
STALE_MAC = "02:00:00:00:00:99"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def ip_json(ns: str, *args: str) -> Any:
    return json.loads(sh("ip", "-n", ns, "-j", *args) or "[]")


class Helper:
    """A NetlinkHostOps living in one namespace, driven over JSON lines."""

    def __init__(self, ns: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(HELPER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def call(self, op: str, vip: tuple[str, int, str], **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "vip": list(vip), **kw}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        if not ready:
            pytest.fail(f"helper did not answer {op} within 15 s")
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"helper exited with {self.proc.wait()} during {op}")
        return json.loads(line)

    def ok(self, op: str, vip: tuple[str, int, str], **kw: Any) -> Any:
        reply = self.call(op, vip, **kw)
        assert reply["ok"], reply
        return reply["result"]

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Lab:
    prefix: str
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    net: str  # "10.250.X"
    helper: Helper

    def vip(self, host: int, ifname: str | None = None) -> tuple[str, int, str]:
        return (f"{self.net}.{host}", 24, ifname or self.if_a)

    def addr_info(self, ns: str, ifname: str, address: str) -> dict[str, Any] | None:
        for link in ip_json(ns, "addr", "show", "dev", ifname):
            for info in link["addr_info"]:
                if info["local"] == address:
                    return info
        return None

    def mac(self, ns: str, ifname: str) -> str:
        return ip_json(ns, "link", "show", "dev", ifname)[0]["address"]

    def neighbour_mac(self, address: str) -> str | None:
        entries = ip_json(self.ns_b, "neigh", "show", address, "dev", self.if_b)
        return entries[0].get("lladdr") if entries else None

    def make_veth(self) -> None:
        sh("ip", "link", "add", self.if_a, "netns", self.ns_a, "type", "veth",
           "peer", "name", self.if_b, "netns", self.ns_b)  # fmt: skip
        for ns, ifname, host in ((self.ns_a, self.if_a, 1), (self.ns_b, self.if_b, 2)):
            sh("ip", "-n", ns, "addr", "add", f"{self.net}.{host}/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")


@pytest.fixture
def lab() -> Iterator[Lab]:
    prefix = random_prefix("hct", 7)
    ns_a, ns_b = f"{prefix}-A", f"{prefix}-B"
    created: list[str] = []
    helper: Helper | None = None
    try:
        for ns in (ns_a, ns_b):
            sh("ip", "netns", "add", ns)
            created.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        net = f"10.250.{secrets.randbelow(254) + 1}"
        helper = Helper(ns_a)
        env = Lab(prefix, ns_a, ns_b, f"{prefix}a", f"{prefix}b", net, helper)
        env.make_veth()
        yield env
    finally:
        if helper is not None:
            helper.stop()
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_claim_adds_the_address_with_its_lifetime(lab: Lab) -> None:
    vip = lab.vip(50)
    assert lab.helper.ok("present", vip) is False
    lab.helper.ok("claim", vip, lifetime_s=4.2)  # rounded up to 5 s
    info = lab.addr_info(lab.ns_a, lab.if_a, vip[0])
    assert info is not None and info["prefixlen"] == 24
    assert 4 <= info["valid_life_time"] <= 5 and 4 <= info["preferred_life_time"] <= 5
    assert info.get("dynamic") is True
    # No noprefixroute: the VIP is a normal secondary address of the interface's subnet.
    assert info.get("secondary") is True and "noprefixroute" not in info
    assert lab.helper.ok("present", vip) is True
    # Same address, other prefix length: a different address for the kernel.
    assert lab.helper.ok("present", (vip[0], 32, vip[2])) is False


def test_claim_again_renews_the_lifetime(lab: Lab) -> None:
    vip = lab.vip(51)
    lab.helper.ok("claim", vip, lifetime_s=3)

    def valid_lft() -> int:
        info = lab.addr_info(lab.ns_a, lab.if_a, vip[0])
        assert info is not None, "address vanished before renewal"
        return info["valid_life_time"]

    wait_until(lambda: valid_lft() <= 2, 3, "valid_lft to count down", interval=0.05)
    lab.helper.ok("claim", vip, lifetime_s=3)
    assert valid_lft() == 3
    assert len([1 for link in ip_json(lab.ns_a, "addr", "show", "dev", lab.if_a)
                for i in link["addr_info"] if i["local"] == vip[0]]) == 1  # fmt: skip


def test_the_address_expires_by_itself(lab: Lab) -> None:
    vip = lab.vip(52)
    start = time.monotonic()
    lab.helper.ok("claim", vip, lifetime_s=2)
    assert lab.addr_info(lab.ns_a, lab.if_a, vip[0]) is not None
    wait_until(lambda: lab.addr_info(lab.ns_a, lab.if_a, vip[0]) is None, 4, "expiry", interval=0.05)
    elapsed = time.monotonic() - start
    # The kernel's lifetime worker may fire up to HZ/50 early and runs with some slack late.
    assert 1.9 <= elapsed <= 3.0, elapsed
    assert lab.helper.ok("present", vip) is False


def test_release_removes_and_a_second_release_is_fine(lab: Lab) -> None:
    vip = lab.vip(53)
    lab.helper.ok("claim", vip, lifetime_s=10)
    lab.helper.ok("release", vip)
    assert lab.addr_info(lab.ns_a, lab.if_a, vip[0]) is None
    lab.helper.ok("release", vip)
    # The interface's own address is untouched.
    assert lab.addr_info(lab.ns_a, lab.if_a, f"{lab.net}.1") is not None


def test_probe_is_answered_by_the_kernel_that_holds_the_address(lab: Lab) -> None:
    vip = lab.vip(54)
    # Only B's kernel holds it: no process in B, like a host whose agent is frozen.
    sh("ip", "-n", lab.ns_b, "addr", "add", f"{vip[0]}/24", "dev", lab.if_b)
    reply = lab.helper.call("probe", vip, timeout_s=1.0)
    assert reply["ok"] and reply["result"] is True, reply
    assert reply["elapsed_s"] < 0.5  # answered, not timed out


def test_probe_for_an_unused_address_times_out(lab: Lab) -> None:
    reply = lab.helper.call("probe", lab.vip(55), timeout_s=0.3)
    assert reply["ok"] and reply["result"] is False, reply
    assert reply["elapsed_s"] >= 0.3


def test_probe_does_not_count_our_own_address(lab: Lab) -> None:
    vip = lab.vip(56)
    lab.helper.ok("claim", vip, lifetime_s=10)
    assert lab.helper.ok("probe", vip, timeout_s=0.3) is False


def test_announce_moves_the_peers_stale_neighbour_entry_to_us(lab: Lab) -> None:
    vip = lab.vip(57)
    sh("ip", "-n", lab.ns_b, "neigh", "replace", vip[0], "lladdr", STALE_MAC,
       "dev", lab.if_b, "nud", "stale")  # fmt: skip
    assert lab.neighbour_mac(vip[0]) == STALE_MAC
    lab.helper.ok("claim", vip, lifetime_s=10)
    # Right after `neigh replace`, so within the 1 s locktime: only a gratuitous ARP may
    # override the entry, which is what this checks.
    lab.helper.ok("announce", vip)
    our_mac = lab.mac(lab.ns_a, lab.if_a)
    wait_until(lambda: lab.neighbour_mac(vip[0]) == our_mac, 2, "B to learn A's MAC", interval=0.05)


def test_missing_interface_is_a_hostops_error_naming_it(lab: Lab) -> None:
    vip = lab.vip(58, ifname=f"{lab.prefix}zz")
    for op, kw in (("claim", {"lifetime_s": 2}), ("present", {}), ("probe", {"timeout_s": 0.1}),
                   ("announce", {})):  # fmt: skip
        reply = lab.helper.call(op, vip, **kw)
        assert not reply["ok"] and reply["hostops_error"], (op, reply)
        assert f"interface {lab.prefix}zz not found" in reply["message"], (op, reply)
    lab.helper.ok("release", vip)  # a missing interface holds no address: released


def test_ipv6_is_refused_for_claims_probes_and_announcements(lab: Lab) -> None:
    vip = ("fd00:250::50", 64, lab.if_a)
    for op, kw in (("claim", {"lifetime_s": 2}), ("probe", {"timeout_s": 0.1}), ("announce", {})):
        reply = lab.helper.call(op, vip, **kw)
        assert not reply["ok"] and reply["message"] == "IPv6 VIPs are not supported yet"


def test_claims_survive_the_interface_being_recreated(lab: Lab) -> None:
    vip = lab.vip(59)
    lab.helper.ok("claim", vip, lifetime_s=10)
    old_index = ip_json(lab.ns_a, "link", "show", "dev", lab.if_a)[0]["ifindex"]
    sh("ip", "-n", lab.ns_a, "link", "del", lab.if_a)  # takes the peer and the VIP with it
    lab.make_veth()
    assert ip_json(lab.ns_a, "link", "show", "dev", lab.if_a)[0]["ifindex"] != old_index
    # The helper's cached index is stale now; each call must notice and look it up again.
    sh("ip", "-n", lab.ns_a, "addr", "add", f"{vip[0]}/24", "dev", lab.if_a)
    assert lab.helper.ok("present", vip) is True
    lab.helper.ok("release", vip)
    assert lab.addr_info(lab.ns_a, lab.if_a, vip[0]) is None
    lab.helper.ok("claim", vip, lifetime_s=10)
    assert lab.addr_info(lab.ns_a, lab.if_a, vip[0]) is not None
    lab.helper.ok("announce", vip)  # the ARP socket was bound to the old interface
