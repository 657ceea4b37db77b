"""The proxy's choice is the kernel's, flow by flow: algorithms.py's jhash against a real kernel.

render() programs a table into a throwaway holder namespace; a client sends thousands of
flows (UDP datagrams and TCP connections, each from its own source address and port) to the
VIP; the one backend namespace holds every backend address and answers each flow with the
address it arrived at, i.e. the backend the kernel's DNAT picked. For every flow that
answer must equal what the userspace proxy's chooser (select.make_chooser) picks for the
same 5-tuple: the same backend per flow for Maglev, per client address for source-hash.

Topology (names start with a unique `dh<hex>` prefix; the bridge lives in its own namespace):

    client .50, plus the whole SOURCES /16 routed to its lo (AnyIP: any address in it can
           be bound, so flows come from thousands of addresses without thousands of ARPs)
    holder .2 + VIP .100 (ip_forward; routes SOURCES via the client; table inet hacluster)
    be     .11-.16: b1..b6 (UDP on UPORT per address, TCP on TPORT: the answer is the
           address the flow reached)
"""

from __future__ import annotations

import json
import random
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hacluster.dataplane.apply import NftApplier
from hacluster.dataplane.render import render
from hacluster.dataplane.select import FlowKey, make_chooser
from hacluster.dataplane.table import Algorithm, Backend, BackendState, Protocol, Service, Table
from hacluster.lab.netns import ip, run

from .bridge import BridgeTopo

NET = "10.78.0"
VIP = f"{NET}.100"
HOLDER_IP = f"{NET}.2"
CLIENT_IP = f"{NET}.50"
SOURCES = "10.79"  # 10.79.0.0/16, every address local to the client
BACKENDS = {f"b{i}": f"{NET}.{10 + i}" for i in range(1, 7)}
UPORT, TPORT = 5300, 8080

# Every backend address answers a UDP datagram, and the TCP listener every connection, with
# the address the flow reached. One socket per address for UDP, so the reply leaves from the
# address conntrack expects (a wildcard socket would answer from the primary address).
SINK = r"""
import selectors, socket, sys
addrs, uport, tport = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector()
for a in addrs:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((a, uport))
    sel.register(u, selectors.EVENT_READ, "udp")
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", tport))
t.listen(1024)
sel.register(t, selectors.EVENT_READ, "tcp")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == "udp":
                _, peer = s.recvfrom(512)
                s.sendto(s.getsockname()[0].encode(), peer)
            else:
                c, _ = s.accept()
                c.sendall(c.getsockname()[0].encode())
                c.close()
        except OSError:
            pass
"""

# Flows from stdin as [[protocol, source, source port, VIP port], ...]: one socket each,
# bound to its source; prints the answer of each (null: none), in order.
CLIENT = r"""
import json, socket, sys
vip, flows, out = sys.argv[1], json.load(sys.stdin), []
for proto, src, sport, port in flows:
    got = None
    udp = proto == "udp"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((src, sport))
        if udp:
            s.settimeout(0.5)
            for _ in range(3):  # the same 5-tuple: conntrack keeps the first choice
                s.sendto(b"?", (vip, port))
                try:
                    got = s.recv(64).decode()
                    break
                except socket.timeout:
                    pass
        else:
            s.settimeout(2)
            s.connect((vip, port))
            got = s.recv(64).decode()
    except OSError:
        pass
    finally:
        s.close()
    out.append(got)
print(json.dumps(out))
"""


@dataclass
class Topo(BridgeTopo):
    generation: int = 0
    next_block: int = 0  # /24s of SOURCES handed out so far: no 5-tuple is ever sent twice

    def program(self, *services: Service) -> Table:
        self.generation += 1
        table = Table(self.generation, services)
        NftApplier(netns=self.ns("lb")).apply(table)
        return table

    def blocks(self, count: int) -> list[int]:
        first, self.next_block = self.next_block, self.next_block + count
        assert self.next_block <= 256, "out of fresh source addresses"
        return list(range(first, self.next_block))

    def send(self, flows: list[tuple[str, str, int, int]]) -> list[str | None]:
        out = run("ip", "netns", "exec", self.ns("cl"), sys.executable, "-c", CLIENT, VIP,
                  input=json.dumps(flows))
        return json.loads(out)


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    t = Topo("dh" + secrets.token_hex(3))
    try:
        t.make_switch()
        client = t.add_host("cl", CLIENT_IP)
        ip("route", "add", "local", f"{SOURCES}.0.0/16", "dev", "lo", ns=client)
        holder = t.add_host("lb", HOLDER_IP, VIP)
        ip("route", "add", f"{SOURCES}.0.0/16", "via", CLIENT_IP, ns=holder)
        run("ip", "netns", "exec", holder, "sysctl", "-qw", "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0")
        be = t.add_host("be", *BACKENDS.values())
        sink = subprocess.Popen(["ip", "netns", "exec", be, sys.executable, "-c", SINK,
                                 ",".join(BACKENDS.values()), str(UPORT), str(TPORT)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        t.procs.append(sink)
        assert sink.stdout is not None and sink.stdout.readline().strip() == b"ready"
        yield t
    finally:
        t.close()


def service(name: str, algorithm: Algorithm, protocol: Protocol, port: int, weights: dict[str, int],
            states: dict[str, BackendState] | None = None) -> Service:
    states = states or {}
    bport = UPORT if protocol is Protocol.UDP else TPORT
    backends = tuple(Backend(n, a, bport, weights.get(n, 1), states.get(n, BackendState.ACTIVE))
                     for n, a in BACKENDS.items())
    return Service(name, VIP, protocol, (port,), bport, algorithm, backends)


def flows_for(topo: Topo, svc: Service, n: int, seed: int) -> list[tuple[str, str, int, int]]:
    """n flows to svc, each from its own fresh source: for source-hash, each from its own
    address (the port plays no part); for Maglev, random addresses and ports."""
    rnd = random.Random(seed)
    blocks = topo.blocks(-(-n // 250))
    sources = [f"{SOURCES}.{b}.{h}" for b in blocks for h in range(1, 251)][:n]
    return [(svc.protocol.value, src, rnd.randrange(1024, 65000), svc.ports[0]) for src in sources]


def check_flows(topo: Topo, svc: Service, flows: list[tuple[str, str, int, int]]) -> Counter[str]:
    """Send the flows; every answer must be the proxy's choice for that flow. Returns how
    many flows each backend address got."""
    chooser = make_chooser(svc)
    want = []
    for proto, src, sport, port in flows:
        chosen = chooser.choose(FlowKey(proto, src, sport, svc.vip, port))
        assert chosen is not None
        want.append(chosen.address)
    got = topo.send(flows)
    unanswered = [f for f, g in zip(flows, got, strict=True) if g is None]
    assert not unanswered, f"{len(unanswered)} of {len(flows)} flows got no answer: {unanswered[:5]}"
    differ = [(f, g, w) for f, g, w in zip(flows, got, want, strict=True) if g != w]
    assert not differ, (f"{len(differ)} of {len(flows)} flows: the kernel picked another backend "
                        f"than the proxy would (flow, kernel, proxy): {differ[:5]}")
    return Counter(g for g in got if g is not None)


WEIGHTS = {"b1": 1, "b2": 2, "b3": 3, "b4": 1, "b5": 1, "b6": 4}
# Sums to more than MAX_SLOTS: the scaled slot weights (slot_weights' largest remainder).
HEAVY = {"b1": 997, "b2": 500, "b3": 3, "b4": 250, "b5": 1, "b6": 640}


def services(states: dict[str, BackendState] | None = None) -> tuple[Service, ...]:
    return (service("mudp", Algorithm.MAGLEV, Protocol.UDP, 5353, WEIGHTS, states),
            service("mtcp", Algorithm.MAGLEV, Protocol.TCP, 443, WEIGHTS, states),
            service("sudp", Algorithm.SOURCE_HASH, Protocol.UDP, 53, HEAVY, states),
            service("stcp", Algorithm.SOURCE_HASH, Protocol.TCP, 80, WEIGHTS, states))


# ------------------------------------------------------------------------- tests


def test_rendered_rules_hash_what_the_python_side_hashes(topo):
    """The netlink form of our rules: jhash over 16 bytes (four fields in 4-byte registers)
    for Maglev, 4 for source-hash, mod N, our seed, no offset."""
    text = render(Table(1, services()))
    ns = topo.ns("lb")
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "--debug=netlink", "-c", "-f", "-"],
                          input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    hashes = sorted(line.strip() for line in proc.stdout.splitlines() if "jhash(" in line)
    assert len(hashes) == 4, proc.stdout
    assert sum(", 16, 0x68616331) % mod 1021 ]" in h for h in hashes) == 2, hashes
    assert sum(", 4, 0x68616331) % mod " in h for h in hashes) == 2, hashes
    assert not any("offset" in h for h in hashes), hashes


def test_every_flow_reaches_the_backend_the_proxy_would_pick(topo):
    svcs = services()
    topo.program(*svcs)
    sizes = {"mudp": 3000, "mtcp": 600, "sudp": 1500, "stcp": 600}
    for seed, svc in enumerate(svcs):
        spread = check_flows(topo, svc, flows_for(topo, svc, sizes[svc.name], seed))
        assert len(spread) >= 4, (svc.name, spread)  # the flows do spread: no vacuous equality


def test_the_same_with_backends_down_and_draining(topo):
    states = {"b2": BackendState.DOWN, "b5": BackendState.DRAINING}
    svcs = services(states)
    topo.program(*svcs)
    serving = {a for n, a in BACKENDS.items() if n not in states}
    for seed, svc in enumerate(svcs, start=10):
        spread = check_flows(topo, svc, flows_for(topo, svc, 1000 if svc.protocol is Protocol.UDP else 300,
                                                  seed))
        assert set(spread) <= serving and len(spread) >= 3, (svc.name, spread)
