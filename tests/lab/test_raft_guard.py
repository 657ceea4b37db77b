"""The Raft guard on a real kernel: members reach the Raft port, strangers do not.

Topology (all names start with a unique `rg<hex>` prefix; the bridge lives in its own
namespace, so the host's interfaces and routes are never touched):

    srv .1 / fd79::1   ─┐  listens on 7100 (the "Raft port") and 7101, answers "ok"
    m1  .11            ─┤  member by its IPv4 address
    m2  .12 / fd79::12 ─┤  member by its IPv6 address only
    st  .99 / fd79::99 ─┘  stranger
                          bridge in P-sw

RaftGuard(command_prefix=("ip", "netns", "exec", P-srv)) programs the server's namespace.
A refused connection is a *timeout* (the guard drops; a reset would mean something else
answered), bounded by the client's 1 s connect timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hacluster.dataplane.apply import NftApplier
from hacluster.dataplane.guard import TABLE, GuardError, RaftGuard, conn_limit, render_guard
from hacluster.dataplane.table import Algorithm, Backend, Protocol, Service, Table
from hacluster.lab.lab import random_prefix
from hacluster.lab.netns import run
from tests.support.wait import wait_until

from .bridge import BridgeTopo

RAFT_PORT = 7100
OTHER_PORT = 7101
SRV4, SRV6 = "10.79.0.1", "fd79::1"
M1_4 = "10.79.0.11"
M2_4, M2_6 = "10.79.0.12", "fd79::12"
ST4, ST6 = "10.79.0.99", "fd79::99"
MEMBERS = [("srv", SRV4), ("m1", M1_4), ("m2", M2_6)]

# Dual-stack listener on both ports: accept, answer "ok", close.
SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(64); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        try:
            c, _ = key.fileobj.accept()
        except BlockingIOError:
            continue
        with c:
            c.sendall(b"ok")
"""

# One connection per "host,port" argument: the answer, or the error's class name.
CLIENT = r"""
import json, socket, sys
timeout, out = float(sys.argv[1]), []
for target in sys.argv[2:]:
    host, port = target.rsplit(",", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            out.append(s.recv(16).decode())
    except OSError as e:
        out.append(type(e).__name__)
print(json.dumps(out))
"""


# n connections to host:port held open, then one more (1 s to connect each): what each got.
HOLD = r"""
import json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, out = [], []
for _ in range(n + 1):
    try:
        held.append(socket.create_connection((host, port), timeout=1.0))
        out.append("ok")
    except OSError as e:
        out.append(type(e).__name__)
for s in held:
    s.close()
print(json.dumps(out))
"""


@dataclass
class Topo(BridgeTopo):
    @property
    def srv(self) -> str:
        return self.ns("srv")

    def connect(self, name: str, *targets: tuple[str, int], timeout: float = 1.0) -> list[str]:
        """Connect from host `name` to each (address, port) in turn, `timeout` s each."""
        out = run("ip", "netns", "exec", self.ns(name), sys.executable, "-c", CLIENT, str(timeout),
                  *(f"{h},{p}" for h, p in targets))
        return json.loads(out)

    def hold(self, name: str, target: tuple[str, int], n: int) -> list[str]:
        """From host `name`: n connections to target held open, then one more."""
        out = run("ip", "netns", "exec", self.ns(name), sys.executable, "-c", HOLD, target[0],
                  str(target[1]), str(n))
        return json.loads(out)

    def tables(self) -> str:
        return run("ip", "netns", "exec", self.srv, "nft", "list", "tables")


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    t = Topo(random_prefix("rg"))
    try:
        t.make_switch()
        t.add_host("srv", SRV4, SRV6)
        t.add_host("m1", M1_4)
        t.add_host("m2", M2_4, M2_6)
        t.add_host("st", ST4, ST6)
        t.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", t.srv, sys.executable, "-c", SERVER, str(RAFT_PORT), str(OTHER_PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Without a guard everyone reaches both ports: what the guard changes is its doing.
        everything = [(a, p) for a in (SRV4, SRV6) for p in (RAFT_PORT, OTHER_PORT)]
        wait_until(lambda: t.connect("st", *everything) == ["ok"] * 4, 15, "the server's listeners")
        yield t
    finally:
        t.close()


@pytest.fixture
def guard(topo: Topo) -> Iterator[RaftGuard]:
    g = RaftGuard(("ip", "netns", "exec", topo.srv))
    try:
        yield g
    finally:
        g.remove()
    assert TABLE not in topo.tables()


def test_only_members_and_loopback_reach_the_raft_port(topo, guard):
    assert guard.available()
    guard.apply(MEMBERS, RAFT_PORT, SRV4)

    assert topo.connect("m1", (SRV4, RAFT_PORT), timeout=5) == ["ok"]
    assert topo.connect("m2", (SRV6, RAFT_PORT), timeout=5) == ["ok"]
    # The server itself, whatever address it dials: loopback.
    assert topo.connect("srv", ("127.0.0.1", RAFT_PORT), (SRV4, RAFT_PORT), ("::1", RAFT_PORT),
                        (SRV6, RAFT_PORT), timeout=5) == ["ok"] * 4

    before = guard.refused()
    assert topo.connect("st", (SRV4, RAFT_PORT), (SRV6, RAFT_PORT)) == ["TimeoutError"] * 2
    # A member is an address, not a host: m2's IPv4 address is not in the member list.
    assert topo.connect("m2", (SRV4, RAFT_PORT)) == ["TimeoutError"]
    assert guard.refused() >= before + 3  # at least one SYN per refused connection

    # Every other port stays open to everyone.
    assert topo.connect("st", (SRV4, OTHER_PORT), (SRV6, OTHER_PORT), timeout=5) == ["ok"] * 2


def test_one_address_holds_at_most_the_connection_limit_loopback_too(topo, guard):
    """The server answers and closes; the client keeps its end open, so that conntrack
    still counts each connection (CLOSE_WAIT) until the client closes it."""
    guard.apply(MEMBERS, RAFT_PORT, SRV4)
    limit = conn_limit(MEMBERS)
    assert topo.hold("m1", (SRV4, RAFT_PORT), limit) == ["ok"] * limit + ["TimeoutError"]
    assert topo.hold("srv", ("127.0.0.1", RAFT_PORT), limit) == ["ok"] * limit + ["TimeoutError"]
    # closed by the client: no longer counted
    assert topo.connect("m1", (SRV4, RAFT_PORT), timeout=5) == ["ok"]
    # other ports and other addresses are not limited
    assert topo.hold("m1", (SRV4, OTHER_PORT), limit) == ["ok"] * (limit + 1)
    assert topo.connect("m2", (SRV6, RAFT_PORT), timeout=5) == ["ok"]


def test_remove_leaves_no_table_and_reopens_the_port(topo, guard):
    guard.apply(MEMBERS, RAFT_PORT, SRV4)
    assert TABLE in topo.tables()
    guard.remove()
    assert TABLE not in topo.tables()
    assert topo.connect("st", (SRV4, RAFT_PORT), timeout=5) == ["ok"]
    guard.remove()  # absent: nothing to do, no error
    with pytest.raises(GuardError, match="not in force"):
        guard.refused()


def test_reapply_changes_members_keeps_the_count_and_ensure_repairs(topo, guard):
    guard.apply(MEMBERS[:2], RAFT_PORT, SRV4)
    assert topo.connect("m2", (SRV6, RAFT_PORT)) == ["TimeoutError"]
    refused = guard.refused()
    assert refused > 0

    guard.apply(MEMBERS, RAFT_PORT, SRV4)  # m2 joins
    assert topo.connect("m2", (SRV6, RAFT_PORT), timeout=5) == ["ok"]
    assert guard.refused() >= refused, "re-applying must not reset the refused counter"

    assert guard.ensure(MEMBERS, RAFT_PORT, SRV4) is False
    run("ip", "netns", "exec", topo.srv, "nft", "delete", "table", "inet", TABLE)  # a firewall reload
    assert guard.ensure(MEMBERS, RAFT_PORT, SRV4) is True
    assert topo.connect("st", (SRV4, RAFT_PORT)) == ["TimeoutError"]


def test_guard_and_balancing_table_leave_each_other_alone(topo, guard):
    guard.apply(MEMBERS, RAFT_PORT, SRV4)
    digest = guard.applied_digest()
    nft = NftApplier(netns=topo.srv)
    web = Service("web", "10.79.0.100", Protocol.TCP, (80,), None, Algorithm.ROUND_ROBIN,
                  (Backend("m1", M1_4, 8080, 1),))
    try:
        nft.apply(Table(1, (web,)))
        nft.apply(Table(2, (web,)))  # a new generation replaces `inet hacluster` only
        assert guard.applied_digest() == digest
        assert topo.connect("st", (SRV4, RAFT_PORT)) == ["TimeoutError"]
        guard.remove()
        assert nft.applied_generation() == 2
    finally:
        nft.remove()


def test_the_kernel_takes_every_rendered_shape(topo):
    """IPv4-mapped, scoped and shared addresses, and a large member list, in check mode."""
    many = [(f"n{i}", f"10.80.{i // 250}.{i % 250 + 1}") for i in range(200)]
    for members, me in [([("a", "::ffff:10.0.0.1"), ("b", "fe80::2%eth0"), ("c", "fe80::2")], "10.0.0.1"),
                        ([("a", "10.0.0.1"), ("b", "10.0.0.1")], "10.0.0.1"),
                        (many, "10.80.0.1")]:
        proc = subprocess.run(["ip", "netns", "exec", topo.srv, "nft", "-c", "-f", "-"],
                              input=render_guard(members, RAFT_PORT, me), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
