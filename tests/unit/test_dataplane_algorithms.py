"""One rule per algorithm for both data planes (hacluster/dataplane/algorithms.py).

The kernel side here is a small model that reads the *rendered script* (the DNAT rule's
selector and its map's elements) and evaluates it as nftables does: `numgen inc mod N`
takes slots 1, 2, ... N-1, 0, 1, ...; `jhash F1 . F2 mod N seed S` hashes the fields'
registers. The proxy side is select.make_chooser, what ProxyDataplane uses. They must agree
on the backend of every flow for source-hash and Maglev, and on the shares for round-robin
and weighted. tests/lab/test_dataplane_hash.py anchors the model's hash to a real kernel.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hacluster.dataplane import algorithms
from hacluster.dataplane.algorithms import (
    FLOW_HASH_SEED,
    FlowKey,
    jhash,
    nft_jhash,
    nft_registers,
    reciprocal_scale,
    slots_for,
)
from hacluster.dataplane.render import render
from hacluster.dataplane.select import make_chooser, signature
from hacluster.dataplane.table import Algorithm, Backend, BackendState, Protocol, Service, Table
from tests.unit.fuzz_strategies import fuzz_settings

VIP = "10.0.0.100"
A, D, X = BackendState.ACTIVE, BackendState.DOWN, BackendState.DRAINING


def be(i: int, weight: int = 1, state: BackendState = A) -> Backend:
    return Backend(f"n{i}", f"10.0.1.{i}", 8080, weight, state)


def svc(algorithm: Algorithm, backends: Sequence[Backend], protocol: Protocol = Protocol.TCP,
        port: int = 443) -> Service:
    return Service("web", VIP, protocol, (port,), 8080, algorithm, tuple(backends))


def random_flows(n: int, seed: int, protocol: str = "tcp", port: int = 443) -> list[FlowKey]:
    rnd = random.Random(seed)
    return [FlowKey(protocol, str(ipaddress.IPv4Address(rnd.getrandbits(32))), rnd.randrange(1, 65536),
                    VIP, port) for _ in range(n)]


# ------------------------------------------------------------------ the kernel model


@dataclass(frozen=True)
class KernelRule:
    """A service's DNAT rule as rendered: its selector and the address of every slot."""

    fields: tuple[str, ...] | None  # jhash fields; None for numgen
    modulus: int
    seed: int
    targets: tuple[str, ...]  # slot -> backend address

    def field(self, name: str, flow: FlowKey) -> bytes:
        l4 = flow.protocol
        return {"ip saddr": ipaddress.IPv4Address(flow.client_ip).packed,
                f"{l4} sport": flow.client_port.to_bytes(2, "big"),
                "ip daddr": ipaddress.IPv4Address(flow.vip).packed,
                f"{l4} dport": flow.port.to_bytes(2, "big")}[name]

    def pick(self, flow: FlowKey) -> str:
        assert self.fields is not None
        return self.targets[nft_jhash([self.field(f, flow) for f in self.fields], self.modulus, self.seed)]

    def numgen(self, flows: int) -> Counter[str]:
        """Where `flows` new flows go from a fresh table: numgen inc's first value is 1."""
        return Counter(self.targets[(i + 1) % self.modulus] for i in range(flows))


def kernel_rule(service: Service) -> KernelRule:
    text = render(Table(1, (service,)))
    m = re.search(r"dnat ip (?:addr \. port )?to (.+?) map @(\S+)", text)
    assert m, text
    selector, name = m.groups()
    if selector.startswith("numgen inc mod "):
        fields, modulus, seed = None, int(selector.removeprefix("numgen inc mod ")), 0
    else:
        h = re.fullmatch(r"jhash (.+) mod (\d+) seed (0x[0-9a-f]+)", selector)
        assert h, selector
        fields, modulus, seed = tuple(h.group(1).split(" . ")), int(h.group(2)), int(h.group(3), 16)
    body = text.split(f"map {name} {{")[1].split("}")[0]
    items = re.findall(r"(\d+) : ([\d.]+)", body)
    assert [int(i) for i, _ in items] == list(range(modulus))
    return KernelRule(fields, modulus, seed, tuple(t for _, t in items))


def proxy_picks(service: Service, flows: Sequence[FlowKey]) -> list[str]:
    chooser = make_chooser(service)
    picks = [chooser.choose(f) for f in flows]
    return [p.address for p in picks if p is not None]


# ------------------------------------------------------------------ the kernel's jhash


def test_jhash_pinned_values():
    # Equal to a C transcription of include/linux/jhash.h on this (little-endian) machine;
    # the lab test shows the kernel's DNAT choices agree with them.
    assert jhash(b"", 0) == 0xDEADBEEF  # no bytes: no mixing at all
    assert jhash(bytes([10, 0, 0, 1]), FLOW_HASH_SEED) == 0x8BC5E7E6
    assert jhash(bytes(range(13)), 0, "little") == 0xBC9D6816
    assert jhash(bytes(range(25)), 1, "little") == 0x524E2864
    key = nft_registers(bytes([192, 0, 2, 7]), (40000).to_bytes(2, "big"), bytes([10, 0, 0, 100]),
                        (80).to_bytes(2, "big"))
    assert key.hex() == "c0000207" "9c400000" "0a000064" "00500000"
    assert jhash(key, FLOW_HASH_SEED, "little") == 0x98C2171B
    assert nft_jhash([key], 1021, FLOW_HASH_SEED) == reciprocal_scale(0x98C2171B, 1021) == 609


def test_byte_order_matters_beyond_twelve_bytes_only():
    # Full 12-byte blocks are read as CPU words, the tail byte by byte: a 4-byte source
    # address hashes alike on every CPU, a 16-byte Maglev key does not.
    rnd = random.Random(5)
    for n in (1, 4, 12, 13, 16, 24, 25):
        key = rnd.randbytes(n)
        same = jhash(key, 7, "little") == jhash(key, 7, "big")
        assert same == (n <= 12), n


def test_reciprocal_scale_is_the_high_half_not_the_remainder():
    assert [reciprocal_scale(v, 10) for v in (0, 2**31, 2**32 - 1)] == [0, 5, 9]
    assert reciprocal_scale(7, 1021) == 0  # 7 % 1021 would be 7
    rnd = random.Random(1)
    assert all(0 <= reciprocal_scale(rnd.getrandbits(32), m) < m for m in (1, 2, 3, 1021, 16381)
               for _ in range(200))


def test_registers_pad_each_field_to_four_bytes():
    assert nft_registers(b"\x01\x02", b"\x03\x04\x05\x06", b"\x07") == bytes.fromhex("01020000" "03040506"
                                                                                     "07000000")


@pytest.mark.parametrize("variant", ["modulo", "unpadded", "big-endian", "other seed"])
def test_each_detail_of_the_kernel_hash_changes_most_choices(variant):
    """Why the lab test's flow-by-flow equality pins every detail above: getting any one
    of them wrong sends most Maglev flows elsewhere."""
    rule = kernel_rule(svc(Algorithm.MAGLEV, [be(1), be(2), be(3), be(4)]))
    assert rule.fields is not None
    flows = random_flows(500, 3)

    def wrong(flow: FlowKey) -> str:
        fields = [rule.field(f, flow) for f in rule.fields or ()]
        if variant == "modulo":
            slot = jhash(nft_registers(*fields), rule.seed) % rule.modulus
        elif variant == "unpadded":
            slot = reciprocal_scale(jhash(b"".join(fields), rule.seed), rule.modulus)
        elif variant == "big-endian":
            slot = reciprocal_scale(jhash(nft_registers(*fields), rule.seed, "big"), rule.modulus)
        else:
            slot = nft_jhash(fields, rule.modulus, rule.seed + 1)
        return rule.targets[slot]
    moved = sum(rule.pick(f) != wrong(f) for f in flows)
    assert moved > 0.5 * len(flows)


# -------------------------------------------------------- the proxy does what the kernel does


HASHED_CASES = {
    "maglev": svc(Algorithm.MAGLEV, [be(1), be(2), be(3, 2)]),
    "maglev_down_drain_udp": svc(Algorithm.MAGLEV, [be(1), be(2, state=D), be(3, 3), be(4, state=X), be(5)],
                                 Protocol.UDP, 5353),
    "maglev_many": svc(Algorithm.MAGLEV, [be(i, 1 + i % 4) for i in range(1, 15)]),  # 4093 slots
    "source_hash": svc(Algorithm.SOURCE_HASH, [be(1), be(2, 2), be(3, 1, X)]),
    "source_hash_scaled": svc(Algorithm.SOURCE_HASH, [be(1, 997), be(2, 500), be(3, 3), be(4, 640)]),
    "source_hash_one": svc(Algorithm.SOURCE_HASH, [be(1), be(2, state=D)]),
}


@pytest.mark.parametrize("name", sorted(HASHED_CASES))
def test_same_backend_per_flow_for_hashing_algorithms(name):
    service = HASHED_CASES[name]
    rule = kernel_rule(service)
    flows = random_flows(3000, 11, service.protocol.value, service.ports[0])
    kernel = [rule.pick(f) for f in flows]
    assert proxy_picks(service, flows) == kernel
    serving = {b.address for b in service.serving()}
    assert set(kernel) == serving  # every serving backend takes flows, no other does


def test_source_hash_ignores_the_client_port():
    service = HASHED_CASES["source_hash"]
    chooser = make_chooser(service)
    for f in random_flows(200, 4):
        other_port = FlowKey(f.protocol, f.client_ip, (f.client_port + 1) % 65536, f.vip, f.port)
        assert chooser.choose(f) == chooser.choose(other_port)


@pytest.mark.parametrize("algorithm, weights, states", [
    (Algorithm.ROUND_ROBIN, [1, 1, 1], [A, A, A]),
    (Algorithm.ROUND_ROBIN, [5, 1, 2, 1], [A, D, A, A]),  # weights play no part
    (Algorithm.WEIGHTED, [1, 2, 3], [A, A, A]),
    (Algorithm.WEIGHTED, [200, 400, 5, 1], [A, A, X, A]),
    (Algorithm.WEIGHTED, [997, 500, 3, 640], [A, A, A, A]),  # scaled to MAX_SLOTS
])
def test_same_shares_for_round_robin_and_weighted(algorithm, weights, states):
    backends = [be(i + 1, w, s) for i, (w, s) in enumerate(zip(weights, states, strict=True))]
    service = svc(algorithm, backends)
    rule = kernel_rule(service)
    flows = 20_011  # not a whole number of cycles: the two may differ by one flow per backend
    kernel = rule.numgen(flows)
    proxy = Counter(proxy_picks(service, random_flows(flows, 2)))
    assert set(proxy) == set(kernel) == {b.address for b in backends if b.state is A}
    for address in kernel:
        assert abs(proxy[address] - kernel[address]) <= 1, (address, proxy, kernel)
    total = sum(b.weight for b in backends if b.state is A)
    for b in backends:  # and the shares are the weights' (to the slot rounding)
        if b.state is A:
            want = 1 / len(kernel) if algorithm is Algorithm.ROUND_ROBIN else b.weight / total
            assert abs(kernel[b.address] / flows - want) <= 0.005, (b, kernel)


def test_same_slots_whatever_the_order_of_the_backends():
    for service in HASHED_CASES.values():
        shuffled = Service(service.name, service.vip, service.protocol, service.ports, service.backend_port,
                           service.algorithm, tuple(reversed(service.backends)))
        assert slots_for(shuffled) == slots_for(service)
        assert signature(shuffled) == signature(service)  # so the proxy keeps its chooser


def test_no_serving_backend_no_slots_no_choice():
    for algorithm in Algorithm:
        service = svc(algorithm, [be(1, state=D)])
        assert slots_for(service).backends == ()
        assert make_chooser(service).choose(random_flows(1, 0)[0]) is None


def test_slot_of_refuses_what_has_no_per_flow_answer():
    with pytest.raises(ValueError, match="in turn"):
        slots_for(svc(Algorithm.WEIGHTED, [be(1)])).slot_of(random_flows(1, 0)[0])
    with pytest.raises(ValueError, match="no serving backend"):
        slots_for(svc(Algorithm.MAGLEV, [be(1, state=D)])).slot_of(random_flows(1, 0)[0])


def test_the_seed_is_a_protocol_constant():
    # Every member, of every version mixed in a rolling upgrade, must hash with it.
    assert algorithms.FLOW_HASH_SEED == 0x68616331


# ------------------------------------------------------------------ fuzzing


_backends = st.lists(st.tuples(st.integers(1, 1000), st.sampled_from([A, A, A, D, X])), min_size=1,
                     max_size=12)


@fuzz_settings(60)
@given(algorithm=st.sampled_from([Algorithm.SOURCE_HASH, Algorithm.MAGLEV]), spec=_backends,
       protocol=st.sampled_from(list(Protocol)), port=st.integers(1, 65535), seed=st.integers(0, 2**32))
def test_fuzz_proxy_and_kernel_agree_per_flow(algorithm, spec, protocol, port, seed):
    service = svc(algorithm, [be(i + 1, w, s) for i, (w, s) in enumerate(spec)], protocol, port)
    if not service.serving():
        assert make_chooser(service).choose(random_flows(1, seed)[0]) is None
        return
    flows = random_flows(200, seed, protocol.value, port)
    rule = kernel_rule(service)
    assert proxy_picks(service, flows) == [rule.pick(f) for f in flows]
