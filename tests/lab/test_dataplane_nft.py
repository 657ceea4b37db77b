"""The nftables data plane on a real kernel: rendered tables carry real traffic.

Topology (all names start with a unique `dp<hex>` prefix; the bridge lives in its own
namespace, so the host's interfaces and routes are never touched):

    client (.50, .51-.58) ─┐
    holder (.2 + VIP .100) ─┤ bridge in P-sw
    b1 .11, b2 .12, b3 .13 ─┤ each: `python -m hacluster.lab.backend` on :8080
    fb .20 (fallback)      ─┘

The holder has ip_forward=1 and programs `table inet hacluster` with NftApplier(netns=);
the client sends one HTTP request per TCP connection to VIP:80 and counts who answered.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hacluster.dataplane import apply as apply_mod
from hacluster.dataplane.apply import DataplaneError, NftApplier
from hacluster.dataplane.render import counter_name, drop_counter_name, fallback_counter_name, render
from hacluster.dataplane.table import Algorithm, Backend, BackendState, Protocol, Service, Table
from hacluster.lab.netns import ip, run

from .bridge import BridgeTopo

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "unit" / "golden"
NET = "10.77.0"
VIP = f"{NET}.100"
HOLDER_IP = f"{NET}.2"
CLIENT_IPS = [f"{NET}.{50 + i}" for i in range(9)]
BACKENDS = {"b1": f"{NET}.11", "b2": f"{NET}.12", "b3": f"{NET}.13"}
FALLBACK = ("fb", f"{NET}.20")
BPORT = 8080

# One short-lived TCP connection per request, as many clients opening sessions would.
CLIENT = r"""
import collections, http.client, json, sys, time
mode, host, port, n, srcs, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5].split(","), float(sys.argv[6])
end = time.monotonic() + budget
if mode == "udp":  # one datagram per flow: a new socket (source port) each time
    import socket
    counts, errors = collections.defaultdict(collections.Counter), collections.Counter()
    for i in range(n):
        src = srcs[i % len(srcs)]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0)); s.settimeout(1)
        try:
            s.sendto(b"?", (host, port)); counts[src][s.recv(512).decode()] += 1
        except OSError as e:
            errors[type(e).__name__] += 1
        finally:
            s.close()
    print(json.dumps({"by_source": counts, "errors": errors})); sys.exit(0)
if mode in ("wait", "uwait"):  # until every host in `host` (comma list) answers (http, udp)
    import socket
    pending = set(host.split(","))
    while pending and time.monotonic() < end:
        for h in sorted(pending):
            try:
                if mode == "wait":
                    c = http.client.HTTPConnection(h, port, timeout=0.5)
                    c.request("GET", "/"); c.getresponse().read(); c.close()
                else:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                        u.settimeout(0.5); u.sendto(b"?", (h, port)); u.recv(512)
                pending.discard(h)
            except OSError:
                time.sleep(0.05)
    print(json.dumps(sorted(pending))); sys.exit(0)
by_source = collections.defaultdict(collections.Counter)
errors = collections.Counter()
for i in range(n):
    if time.monotonic() > end:
        errors["budget"] += n - i
        break
    src = srcs[i % len(srcs)]
    c = http.client.HTTPConnection(host, port, timeout=2, source_address=(src, 0))
    try:
        c.request("GET", "/")
        by_source[src][c.getresponse().read().decode().strip()] += 1
    except OSError as e:
        errors[type(e).__name__] += 1
    finally:
        c.close()
print(json.dumps({"by_source": by_source, "errors": errors}))
"""


# A UDP backend: answers every datagram with its name.
UDP_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
while True:
    _, peer = s.recvfrom(512)
    s.sendto(sys.argv[1].encode(), peer)
"""
UDP_PORT = 5300

# A flow that stays open across table generations: connect, report, wait for a line on
# stdin, then send the request on the same connection and print who answered.
HELD = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
print("connected", flush=True)
sys.stdin.readline()
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.decode().rsplit("\r\n\r\n", 1)[1].strip(), flush=True)
"""


@dataclass
class Topo(BridgeTopo):
    generation: int = 0

    @property
    def client(self) -> str:
        return f"{self.prefix}-cl"

    @property
    def holder(self) -> str:
        return f"{self.prefix}-lb"

    def next_generation(self) -> int:
        self.generation += 1
        return self.generation

    def traffic(self, n: int, srcs: list[str] | None = None, budget_s: float = 25.0,
                port: int = 80, mode: str = "send") -> tuple[dict[str, Counter[str]], Counter[str]]:
        out = run("ip", "netns", "exec", self.client, sys.executable, "-c", CLIENT, mode, VIP, str(port),
                  str(n), ",".join(srcs or [CLIENT_IPS[0]]), str(budget_s))
        doc = json.loads(out)
        return ({s: Counter(c) for s, c in doc["by_source"].items()}, Counter(doc["errors"]))


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    t = Topo("dp" + secrets.token_hex(3))
    try:
        t.make_switch()
        t.add_host("cl", *CLIENT_IPS)
        t.add_host("lb", HOLDER_IP, VIP)
        run("ip", "netns", "exec", t.holder, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The holder forwards out of the interface the packet came in by: no ICMP redirects.
        run("ip", "netns", "exec", t.holder, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.eth0.send_redirects=0")
        for name, addr in [*BACKENDS.items(), FALLBACK]:
            ns = t.add_host(name, addr)
            t.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "hacluster.lab.backend", "--name", name,
                 "--port", str(BPORT)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            if name in BACKENDS:
                t.procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-c", UDP_SERVER, name, str(UDP_PORT)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        t.namespaces.append(t.ns("n2"))  # a second "node" that only renders and programs
        ip("netns", "add", t.ns("n2"))
        hosts = ",".join([*BACKENDS.values(), FALLBACK[1]])
        pending = json.loads(run("ip", "netns", "exec", t.client, sys.executable, "-c", CLIENT, "wait",
                                 hosts, str(BPORT), "0", CLIENT_IPS[0], "15"))
        assert not pending, f"backends not answering: {pending}"
        pending = json.loads(run("ip", "netns", "exec", t.client, sys.executable, "-c", CLIENT, "uwait",
                                 ",".join(BACKENDS.values()), str(UDP_PORT), "0", CLIENT_IPS[0], "15"))
        assert not pending, f"udp backends not answering: {pending}"
        yield t
    finally:
        t.close()


def service(algorithm: Algorithm, weights: dict[str, int] | None = None,
            states: dict[str, BackendState] | None = None, fallback: bool = False) -> Service:
    weights = weights or {}
    states = states or {}
    backends = tuple(Backend(name, addr, BPORT, weights.get(name, 1), states.get(name, BackendState.ACTIVE))
                     for name, addr in BACKENDS.items())
    fb = Backend(f"{FALLBACK[1]}:{BPORT}", FALLBACK[1], BPORT, 1) if fallback else None
    return Service("web", VIP, Protocol.TCP, (80,), BPORT, algorithm, backends, fb, True)


def apply(topo: Topo, *services: Service) -> tuple[NftApplier, Table]:
    table = Table(topo.next_generation(), services)
    applier = NftApplier(netns=topo.holder)
    applier.apply(table)
    assert applier.applied_generation() == table.generation
    assert_listable(topo.holder)
    return applier, table


def assert_listable(ns: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"`nft list ruleset` failed ({proc.returncode}): {proc.stderr}"


def shares(by_source: dict[str, Counter[str]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for c in by_source.values():
        total.update(c)
    n = sum(total.values())
    return {k: v / n for k, v in total.items()}


def assert_shares(got: dict[str, float], want: dict[str, float], tolerance: float = 0.05) -> None:
    """Within ±5 percentage points of each expected share."""
    for name, share in want.items():
        assert abs(got.get(name, 0.0) - share) <= tolerance, f"{name}: {got} vs {want}"
    assert set(got) <= set(want), got


# ------------------------------------------------------------------------- tests


def test_available_here(topo):
    ok, why = NftApplier(netns=topo.holder).available()
    assert ok, why


def test_every_golden_file_passes_nft_check_in_a_throwaway_netns():
    ns = "dp" + secrets.token_hex(3) + "-ck"
    files = sorted(GOLDEN.glob("dataplane_*.nft"))
    assert len(files) >= 9
    ip("netns", "add", ns)
    try:
        for f in files:
            proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", str(f)],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"{f.name}: {proc.stderr}"
        # Check mode changed nothing.
        assert "hacluster" not in run("ip", "netns", "exec", ns, "nft", "list", "tables")
        # Loaded for real, each must also list: an operator's `nft list ruleset` must not
        # crash on our table (nft 1.0.6 segfaults on some map declarations).
        for f in files:
            run("ip", "netns", "exec", ns, "nft", "-f", str(f))
            assert_listable(ns)
    finally:
        ip("netns", "del", ns, check=False)


def test_round_robin_equal_shares_and_counters(topo):
    applier, _ = apply(topo, service(Algorithm.ROUND_ROBIN))
    before = applier.counters()
    by_source, errors = topo.traffic(3000)
    assert not errors, errors
    assert_shares(shares(by_source), {"b1": 1 / 3, "b2": 1 / 3, "b3": 1 / 3})
    after = applier.counters()
    for name in BACKENDS:
        c = counter_name("web", name)
        # ~1000 flows of >= 5 packets each, both directions counted.
        assert after[c][0] - before.get(c, (0, 0))[0] >= 5 * 900, (name, before.get(c), after[c])
        assert after[c][1] > after[c][0] * 40
    assert after[drop_counter_name("web")] == (0, 0)


def test_weighted_1_2_3(topo):
    apply(topo, service(Algorithm.WEIGHTED, weights={"b1": 1, "b2": 2, "b3": 3}))
    by_source, errors = topo.traffic(3000)
    assert not errors, errors
    assert_shares(shares(by_source), {"b1": 1 / 6, "b2": 2 / 6, "b3": 3 / 6})


def test_source_hash_keeps_each_client_on_one_backend(topo):
    apply(topo, service(Algorithm.SOURCE_HASH))
    by_source, errors = topo.traffic(400, srcs=CLIENT_IPS[1:])
    assert not errors, errors
    for src, names in by_source.items():
        assert len(names) == 1, f"{src} went to {dict(names)}"
    assert len({next(iter(c)) for c in by_source.values()}) >= 2  # the clients do spread


def test_maglev_same_map_on_every_node_and_weighted_spread(topo):
    svc = service(Algorithm.MAGLEV, weights={"b1": 1, "b2": 1, "b3": 2})
    applier, table = apply(topo, svc)
    other = NftApplier(netns=topo.ns("n2"))
    other.apply(Table(table.generation, (Service(
        svc.name, svc.vip, svc.protocol, svc.ports, svc.backend_port, svc.algorithm,
        tuple(reversed(svc.backends)), svc.fallback, svc.snat),)))
    try:
        assert render(table) == render(Table(table.generation, (svc,)))
        map_name = next(ln.split()[1] for ln in render(table).splitlines() if ln.startswith("\tmap m_web_"))
        listings = [run("ip", "netns", "exec", ns, "nft", "list", "map", "inet", "hacluster", map_name)
                    for ns in (topo.holder, topo.ns("n2"))]
        assert listings[0] == listings[1]
        assert len(re.findall(r"\b\d+ : 10\.77\.0\.1\d \. 8080", listings[0])) == 1021
    finally:
        other.remove()
    by_source, errors = topo.traffic(3000)
    assert not errors, errors
    assert_shares(shares(by_source), {"b1": 0.25, "b2": 0.25, "b3": 0.5})


def test_down_backend_gets_no_new_flows(topo):
    applier, _ = apply(topo, service(Algorithm.ROUND_ROBIN))
    by_source, _ = topo.traffic(60)
    assert shares(by_source).get("b2", 0) > 0
    applier, _ = apply(topo, service(Algorithm.ROUND_ROBIN, states={"b2": BackendState.DOWN}))
    before = applier.counters()[counter_name("web", "b2")]
    by_source, errors = topo.traffic(300)
    assert not errors, errors
    assert_shares(shares(by_source), {"b1": 0.5, "b3": 0.5})
    assert "b2" not in shares(by_source)
    # Counters survived the new generation, and b2's did not move.
    assert applier.counters()[counter_name("web", "b2")] == before and before[0] > 0


def test_no_serving_backend_fallback_answers(topo):
    down = {n: BackendState.DOWN for n in BACKENDS}
    applier, _ = apply(topo, service(Algorithm.ROUND_ROBIN, states=down, fallback=True))
    by_source, errors = topo.traffic(50)
    assert not errors, errors
    assert shares(by_source) == {"fb": 1.0}
    assert applier.counters()[fallback_counter_name("web", f"{FALLBACK[1]}:{BPORT}")][0] >= 250


def test_no_serving_backend_without_fallback_refuses_at_once(topo):
    down = {n: BackendState.DOWN for n in BACKENDS}
    applier, _ = apply(topo, service(Algorithm.ROUND_ROBIN, states=down))
    t0 = time.monotonic()
    by_source, errors = topo.traffic(20)
    assert not by_source and errors == Counter({"ConnectionRefusedError": 20})
    assert time.monotonic() - t0 < 5  # refused, not left to time out
    assert applier.counters()[drop_counter_name("web")][0] == 20


def test_broken_ruleset_raises_and_keeps_the_previous_generation(topo, monkeypatch):
    applier, table = apply(topo, service(Algorithm.ROUND_ROBIN))
    garbage = "table inet hacluster {\n\tgarbage here\n}\n"
    monkeypatch.setattr(apply_mod, "render", lambda t, counters=None: garbage)
    with pytest.raises(DataplaneError) as e:
        applier.apply(Table(table.generation + 1, table.services))
    assert e.value.generation == table.generation + 1
    assert "garbage" in e.value.stderr
    assert applier.applied_generation() == table.generation
    assert applier.last_applied == table.generation
    monkeypatch.undo()
    by_source, errors = topo.traffic(30)  # the previous generation still balances
    assert not errors and set(shares(by_source)) == {"b1", "b2", "b3"}


def test_remove_leaves_no_table(topo):
    applier, _ = apply(topo, service(Algorithm.ROUND_ROBIN))
    applier.remove()
    applier.remove()  # absent is fine
    assert "inet hacluster" not in run("ip", "netns", "exec", topo.holder, "nft", "list", "tables")
    assert applier.applied_generation() is None and applier.counters() == {}


def test_udp_multi_port_with_backend_port(topo):
    backends = tuple(Backend(name, addr, UDP_PORT, 1) for name, addr in BACKENDS.items())
    applier, _ = apply(topo, Service("dns", VIP, Protocol.UDP, (53, 5353), UDP_PORT, Algorithm.ROUND_ROBIN,
                                     backends))
    for port in (53, 5353):
        by_source, errors = topo.traffic(150, port=port, mode="udp")
        assert not errors, errors
        assert_shares(shares(by_source), {"b1": 1 / 3, "b2": 1 / 3, "b3": 1 / 3})
    counters = applier.counters()
    assert all(counters[counter_name("dns", name)][0] >= 2 * 90 for name in BACKENDS), counters


def test_draining_backend_keeps_its_established_flow(topo):
    only_b1 = {"b2": BackendState.DOWN, "b3": BackendState.DOWN}
    apply(topo, service(Algorithm.ROUND_ROBIN, states=only_b1))
    held = subprocess.Popen(["ip", "netns", "exec", topo.client, sys.executable, "-c", HELD, VIP],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert held.stdout is not None and held.stdin is not None
        assert held.stdout.readline().strip() == "connected"
        apply(topo, service(Algorithm.ROUND_ROBIN, states={"b1": BackendState.DRAINING}))
        by_source, errors = topo.traffic(60)
        assert not errors and set(shares(by_source)) == {"b2", "b3"}  # no new flow to b1
        held.stdin.write("go\n")
        held.stdin.flush()
        out, err = held.communicate(timeout=10)
        assert out.strip() == "b1", err  # ...but its established flow goes on
    finally:
        if held.poll() is None:
            held.kill()
            held.wait()
