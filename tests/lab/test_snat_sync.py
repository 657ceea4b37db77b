"""Established flows survive a VIP failover: SNAT to the VIP + conntrackd FTFW (docs/snat.md).

The data-plane half of issue 14, on a real kernel, with no agent: the rendered table on
the balancers, conntrackd run by hand between them, the VIP moved as the agent's claim
will move it. Topology (names start with a unique `sx<hex>` prefix):

    client .50 ──┐
    a .1 (VIP) ──┤ bridge in P-sw      a, b: balancers AND backends (echo server on :8080),
    b .2 ────────┤                     table inet hacluster, conntrackd FTFW over UDP a<->b
    c .3 ────────┘                     c: an external backend (echo server, no table), or in
                                       the `-3-multicast` case a third balancer (FTFW over
                                       multicast between the three)

24 long-lived TCP flows to VIP:80, round-robin over a, b, c (8 each); every flow sends a
line every 50 ms and times the echoes. Then the holder a goes away:

- `sigterm`: the agent on a stops (its conntrackd dies, the VIP is released, the table is
  removed), a's kernel and echo server live on: EVERY flow must go on, a's own included;
- `poweroff`: a's cable is cut and everything on it killed: every flow to b and c must go on.

b takes over the way the claim does it: `conntrackd -c` (commit the external cache) BEFORE
adding the VIP, then the VIP and a gratuitous ARP, then `-f`, `-R`, `-B`. Round-robin and
nf_conntrack_tcp_loose=1 (the kernel's default) make this a proof of the sync: without the
synced entries, b would pick up each flow mid-stream and balance it anew, to the same backend
and source port for about one flow in three.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hacluster.dataplane.apply import NftApplier
from hacluster.dataplane.table import Algorithm, Backend, Protocol, Service, Table
from hacluster.hostops.conntrackd import render_conf
from hacluster.lab.netns import ip, kill_netns_processes, nft, run
from hacluster.model import SyncSettings
from tests.support.wait import wait_until

from .bridge import BridgeTopo

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/conntrackd").exists(),
                                reason="conntrackd is not installed (apt install conntrackd)")

HELPER = Path(__file__).with_name("_snat_flows.py")
NET = "10.78.0"
VIP = f"{NET}.100"
HOSTS = {"a": f"{NET}.1", "b": f"{NET}.2", "c": f"{NET}.3"}
CLIENT = f"{NET}.50"
BPORT = 8080
FLOWS = 24
SYNC_PORT = 3780

# conntrackd's config is the product's (hostops/conntrackd.render_conf): FTFW, TCP only, no
# address filter (a balanced flow's reply comes from a member); two balancers sync over UDP
# unicast, the three-balancer case over one multicast group, as run by hand here.


# Every host runs a stateful firewall, as production hosts do: it keeps conntrack on in its
# namespace whether or not `table inet hacluster` is there (the kernel tracks a namespace
# only while some rule needs it), so the old holder's leftover entries matter.
HOST_FIREWALL = """\
table inet hostfw {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tct state invalid counter drop
\t}
}
"""


def table() -> Table:
    backends = tuple(Backend(n, a, BPORT, 1) for n, a in HOSTS.items())
    return Table(1, (Service("web", VIP, Protocol.TCP, (80,), BPORT, Algorithm.ROUND_ROBIN, backends),))


class Rig:
    """The topology above; close() undoes all of it, whatever state the test left it in."""

    def __init__(self, workdir: Path, balancers: tuple[str, ...]) -> None:
        self.balancers = balancers
        self.topo = BridgeTopo(f"sx{secrets.token_hex(3)}")
        self.dir = workdir
        self.syncd: dict[str, subprocess.Popen[bytes]] = {}
        self.nft: dict[str, NftApplier] = {}
        self.client: subprocess.Popen[str] | None = None

    def ns(self, name: str) -> str:
        return self.topo.ns(name)

    def up(self) -> None:
        t = self.topo
        t.make_switch()
        t.add_host("client", CLIENT)
        for name, address in HOSTS.items():
            ns = t.add_host(name, address)
            nft(ns, HOST_FIREWALL)
            t.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(HELPER), "server", name, str(BPORT)]))
        for name in self.balancers:
            ns = self.ns(name)
            # A one-arm balancer forwards out of the interface it received on: no ICMP
            # redirects (harmless here, Linux ignores them for on-link routes, but noise).
            for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                        "net.ipv4.conf.eth0.send_redirects=0"):
                run("ip", "netns", "exec", ns, "sysctl", "-qw", key)
            self.nft[name] = NftApplier(netns=ns)
            self.nft[name].apply(table())
            self._start_conntrackd(name)

    def _start_conntrackd(self, name: str) -> None:
        d = self.dir / name
        d.mkdir()
        peers = tuple(HOSTS[b] for b in self.balancers if b != name)
        settings = SyncSettings(mode="on", interface="eth0", address=HOSTS[name], peers=peers,
                                transport="unicast" if len(peers) == 1 else "multicast", port=SYNC_PORT)
        (d / "conntrackd.conf").write_text(render_conf(settings, d))
        self.syncd[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(name), "conntrackd", "-C", str(d / "conntrackd.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: (d / "conntrackd.ctl").exists(), 10, f"conntrackd on {name} to listen")

    def conntrackd(self, name: str, *args: str) -> str:
        """`conntrackd -C CONF ARGS` for the instance on `name`."""
        conf = self.dir / name / "conntrackd.conf"
        return run("ip", "netns", "exec", self.ns(name), "conntrackd", "-C", str(conf), *args)

    def claim(self, name: str) -> float:
        """The claim as the agent orders it; returns how long the commit took (s)."""
        started = time.monotonic()
        self.conntrackd(name, "-c")  # the external cache into the kernel, BEFORE the VIP
        commit_s = time.monotonic() - started
        ip("addr", "add", f"{VIP}/24", "dev", "eth0", ns=self.ns(name))
        self.garp(name)
        # Flush the caches, resync the internal one from the kernel, bulk-send it to the
        # others. conntrackd 1.4.7 ignores the -f after a commit ("ignoring flush command,
        # commit still in progress" in its log, seconds later still): the external cache
        # keeps the old holder's entries, which the flows do not need.
        for step in ("-f", "-R", "-B"):
            self.conntrackd(name, step)
        return commit_s

    def garp(self, name: str) -> None:
        """A gratuitous ARP for the VIP from `name`, in the background: arping waits a
        second for answers that never come."""
        self.topo.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.ns(name), "arping", "-q", "-U", "-c", "1", "-i", "eth0",
             "-S", VIP, VIP], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def vip_entries(self, name: str, *args: str, balanced: bool = False) -> int:
        """How many TCP entries to VIP:80 the kernel (or with args, conntrackd) holds on `name`;
        balanced: only those DNATed to a backend."""
        if args:
            out = self.conntrackd(name, *args)
        else:
            out = run("ip", "netns", "exec", self.ns(name), "conntrack", "-L", "-p", "tcp",
                      "-d", VIP, "--dport", "80", *(["--dst-nat"] if balanced else []), check=False)
        return sum(1 for line in out.splitlines() if f"dst={VIP}" in line and "dport=80 " in line)

    def probe(self, name: str) -> list[str]:
        """Who answers 3 short connections to VIP:80 made from host `name`."""
        out = run("ip", "netns", "exec", self.ns(name), sys.executable, str(HELPER), "probe", VIP, "80", "3")
        return json.loads(out)

    # ---------------------------------------------------------------------- client
    def open_flows(self) -> list[str]:
        self.client = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("client"), sys.executable, str(HELPER), "client", VIP,
             "80", str(FLOWS), "0.05"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self._answer()["ready"]

    def ask(self, command: str) -> dict:
        assert self.client is not None and self.client.stdin is not None
        self.client.stdin.write(command + "\n")
        self.client.stdin.flush()
        return self._answer()

    def _answer(self) -> dict:
        assert self.client is not None and self.client.stdout is not None
        line = self.client.stdout.readline()
        assert line, f"the client exited ({self.client.poll()})"
        return json.loads(line)

    def close(self) -> None:
        for p in [*self.syncd.values(), *([self.client] if self.client else [])]:
            p.kill()
            p.wait(5)
        self.topo.close()


CASES = {  # fault on a, balancers (the others are external backends)
    "sigterm": ("sigterm", ("a", "b")),
    "poweroff": ("poweroff", ("a", "b")),
    "poweroff-3-multicast": ("poweroff", ("a", "b", "c")),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture
def rig(tmp_path, case):
    r = Rig(tmp_path, case[1])
    try:
        r.up()
        yield r
    finally:
        r.close()


def _power_off(rig: Rig, name: str) -> None:
    ip("link", "set", f"v-{name}", "down", ns=rig.topo.sw)
    kill_netns_processes(rig.ns(name), spare_observers=False)


def _sigterm(rig: Rig, name: str) -> None:
    """What a stopping agent does to its host: its conntrackd child ends, the VIP is
    released, the table goes (NftApplier.remove); the kernel and the backend stay."""
    rig.syncd[name].kill()
    ip("addr", "del", f"{VIP}/24", "dev", "eth0", ns=rig.ns(name))
    rig.nft[name].remove()


def test_flows_survive_the_holder_going_away(rig, case):
    fault = case[0]
    ip("addr", "add", f"{VIP}/24", "dev", "eth0", ns=rig.ns("a"))
    rig.garp("a")
    # The members' own connections to the VIP: the holder balances them itself (its own
    # backend through nat_input), a standby's go to the holder, untracked (raw_output).
    for name in ("client", "a", "b"):
        answers = rig.probe(name)
        assert set(answers) <= set(HOSTS) and len(answers) == 3, (name, answers)
    backends = rig.open_flows()
    assert sorted(backends) == sorted(["a", "b", "c"] * (FLOWS // 3)), backends
    # b must have every flow in its external cache before a can go: that is the sync.
    for other in rig.balancers[1:]:
        wait_until(lambda: rig.vip_entries(other, "-e") >= FLOWS, 10,  # noqa: B023 - called at once
                   f"{other}'s external cache to hold every flow")
        assert rig.vip_entries(other) == 0, f"{other}'s kernel tracks flows it is only a backend of"

    rig.ask("mark")
    (_sigterm if fault == "sigterm" else _power_off)(rig, "a")
    if fault == "sigterm":
        # (the client's packets that still reach a until b's GARP are tracked there as plain
        # forwarded flows once the table is gone: harmless, they clash with nothing)
        assert rig.vip_entries("a", balanced=True) == 0, "the old holder kept the balanced flows' entries"
    commit_s = rig.claim("b")
    assert rig.vip_entries("b") >= FLOWS, "the commit left flows out of b's kernel"

    surviving = {"a", "b", "c"} if fault == "sigterm" else {"b", "c"}

    def all_flowing() -> list[dict] | None:
        flows = rig.ask("report")["flows"]
        late = [f for f in flows if f["backend"] in surviving and (f["error"] or f["echoes"] < 10)]
        return None if late else flows
    try:
        flows = wait_until(all_flowing, 15, "every flow to a surviving backend to echo again")
    finally:
        report = rig.ask("report")["flows"]
        print(json.dumps({"fault": fault, "commit_s": round(commit_s, 4), "flows": report}))
    kept = [f for f in flows if f["backend"] in surviving]
    assert all(f["error"] is None and f["last_echo_age_s"] < 1 for f in kept), kept
    stall = max(f["max_gap_s"] for f in kept)
    print(f"{fault}, {len(rig.balancers)} balancers: {len(kept)}/{len(kept)} flows to surviving "
          f"backends survived, longest stall {stall * 1000:.0f} ms, commit {commit_s * 1000:.1f} ms")
