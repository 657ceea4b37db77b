"""The balancing rules both data planes follow: one implementation of each (DESIGN.md §6).

The kernel data plane (render.py -> nftables) and the userspace proxy (select.py) serve the
same table, and a cluster may run both at once (`dataplane: auto` falls back to the proxy
where nftables is unusable). A flow that reaches another member after a failover must find
the same backend there, whichever data plane that member runs. So both take from here:

- **the slots**: the serving backends, sorted by id, laid out in the slots of one map.
  ROUND_ROBIN gives each one slot; WEIGHTED and SOURCE_HASH give each `slot_weights` slots,
  spread out by `smooth_order`; MAGLEV fills `maglev_size` slots with maglev.py's table.
- **which slot a new flow takes**: ROUND_ROBIN and WEIGHTED the next slot in turn (the
  kernel's `numgen inc mod N`, the proxy's own cursor); SOURCE_HASH and MAGLEV the
  kernel's `jhash FIELDS mod N seed FLOW_HASH_SEED`, computed here in Python bit for bit as
  the kernel computes it, so that the proxy picks, for every flow, the backend the kernel
  would (tests/lab/test_dataplane_hash.py checks it against a real kernel, flow by flow).

Round-robin has no per-flow answer to share: `numgen` counts on each node on its own and
starts again with every generation. There the planes agree on the shares, not the order.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import gcd
from typing import Literal

from hacluster.dataplane.maglev import maglev_table
from hacluster.dataplane.table import Algorithm, Backend, Service

# The jhash seed of SOURCE_HASH and MAGLEV. A protocol constant: every node must hash a
# flow alike, so a change remaps every client at once, on every node.
FLOW_HASH_SEED = 0x68616331  # "hac1"

# WEIGHTED / SOURCE_HASH map at most this many slots (see slot_weights).
MAX_SLOTS = 1000

# Maglev table size by the number of *configured* backends of the service: about 100
# slots per backend keeps each share within ~1 % of its weight (the paper's M >> 100 N
# guideline), and a map of 1021 elements adds ~25 kB to the script, which nft loads in
# milliseconds. The size depends on the configuration only, never on health, because a
# new size would move almost every flow; a backend going down moves only its own slots.
MAGLEV_SIZES: tuple[tuple[int, int], ...] = ((10, 1021), (40, 4093))
MAGLEV_SIZE_LARGE = 16381


# ------------------------------------------------------------------ slots and sizes


def slot_weights(weights: Sequence[int], cap: int = MAX_SLOTS) -> list[int]:
    """Slots per backend for weighted maps: the weights divided by their gcd; if they
    still sum to more than `cap`, scaled to `cap` slots by largest remainder (each gets
    floor(w * cap / total), the slots left go to the largest fractional parts, ties to the
    earlier backend). Every backend keeps at least one slot, so a share may be off by
    1/cap and, with more than `cap` tiny weights, the total can exceed `cap` by as many."""
    if not weights:
        return []
    g = gcd(*weights)
    w = [x // g for x in weights]
    total = sum(w)
    if total <= cap:
        return w
    quot_rem = [divmod(x * cap, total) for x in w]
    slots = [max(1, q) for q, _ in quot_rem]
    left = cap - sum(slots)
    by_remainder = sorted(range(len(w)), key=lambda i: (-quot_rem[i][1], i))
    for i in by_remainder[:max(0, left)]:
        slots[i] += 1
    g = gcd(*slots)
    return [s // g for s in slots]


def smooth_order(slots: Sequence[int]) -> list[int]:
    """nginx's smooth weighted round-robin: the sequence of backend indices in which each
    index i appears slots[i] times, spread out (1:2:3 gives c b a c b c, not a b b c c c),
    so that taking the slots in turn interleaves backends over short stretches of flows too
    (a heavy backend never takes a burst of new flows at once)."""
    total = sum(slots)
    current = [0] * len(slots)
    seq = []
    for _ in range(total):
        for i, s in enumerate(slots):
            current[i] += s
        best = max(range(len(slots)), key=lambda i: (current[i], -i))
        current[best] -= total
        seq.append(best)
    return seq


def maglev_size(configured_backends: int) -> int:
    for limit, size in MAGLEV_SIZES:
        if configured_backends <= limit:
            return size
    return MAGLEV_SIZE_LARGE


# ------------------------------------------------------------ the kernel's jhash

_M32 = 0xFFFFFFFF
JHASH_INITVAL = 0xDEADBEEF  # include/linux/jhash.h


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = ((a - c) & _M32) ^ _rol32(c, 4)
    c = (c + b) & _M32
    b = ((b - a) & _M32) ^ _rol32(a, 6)
    a = (a + c) & _M32
    c = ((c - b) & _M32) ^ _rol32(b, 8)
    b = (b + a) & _M32
    a = ((a - c) & _M32) ^ _rol32(c, 16)
    c = (c + b) & _M32
    b = ((b - a) & _M32) ^ _rol32(a, 19)
    a = (a + c) & _M32
    c = ((c - b) & _M32) ^ _rol32(b, 4)
    b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c = ((c ^ b) - _rol32(b, 14)) & _M32
    a = ((a ^ c) - _rol32(c, 11)) & _M32
    b = ((b ^ a) - _rol32(a, 25)) & _M32
    c = ((c ^ b) - _rol32(b, 16)) & _M32
    a = ((a ^ c) - _rol32(c, 4)) & _M32
    b = ((b ^ a) - _rol32(a, 14)) & _M32
    return ((c ^ b) - _rol32(b, 24)) & _M32


def jhash(key: bytes, initval: int, byteorder: Literal["little", "big"] = sys.byteorder) -> int:
    """The Linux kernel's `jhash(key, len, initval)` (include/linux/jhash.h: Bob Jenkins'
    lookup3 hashlittle as the kernel has it), the hash behind nft's `jhash`.

    The kernel reads each full 12-byte block as three words in the CPU's byte order
    (`byteorder`, as on this host: the proxy must agree with *this* host's kernel) and the
    last 1-12 bytes byte by byte, little end first, whatever the CPU. So a key of at most
    12 bytes hashes alike everywhere, and a longer one (Maglev's 16) differs between a
    little- and a big-endian kernel: kernel and kernel would disagree there too."""
    n = len(key)
    a = b = c = (JHASH_INITVAL + n + initval) & _M32
    k = 0
    while n - k > 12:
        a = (a + int.from_bytes(key[k:k + 4], byteorder)) & _M32
        b = (b + int.from_bytes(key[k + 4:k + 8], byteorder)) & _M32
        c = (c + int.from_bytes(key[k + 8:k + 12], byteorder)) & _M32
        a, b, c = _mix(a, b, c)
        k += 12
    if k == n:  # an empty key: nothing left to add, and no final mix either
        return c
    tail = key[k:] + bytes(12 - (n - k))  # the switch's fall-through adds nothing for these
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + int.from_bytes(tail[8:12], "little")) & _M32
    return _final(a, b, c)


def reciprocal_scale(value: int, modulus: int) -> int:
    """The kernel's `reciprocal_scale`: a 32-bit value scaled to [0, modulus) by the high
    half of a 64-bit product, which is how nft_hash.c applies `mod N` (not `%`)."""
    return (value * modulus) >> 32


def nft_registers(*fields: bytes) -> bytes:
    """The bytes nft feeds jhash for the concatenation `f1 . f2 ...`: each field in network
    byte order as in the packet, in its own 32-bit registers, zero-padded to a multiple of
    4 bytes (`tcp sport` takes 2 bytes and 2 zeros); `jhash(reg, len)` hashes them all."""
    return b"".join(f + bytes(-len(f) % 4) for f in fields)


def nft_jhash(fields: Sequence[bytes], modulus: int, seed: int, offset: int = 0) -> int:
    """What nft's `jhash f1 . f2 ... mod modulus seed seed offset offset` yields
    (net/netfilter/nft_hash.c, nft_jhash_eval)."""
    return reciprocal_scale(jhash(nft_registers(*fields), seed), modulus) + offset


# ----------------------------------------------------------------- flows and slots


@dataclass(frozen=True)
class FlowKey:
    """The 5-tuple of a new flow, as the kernel sees its first packet before DNAT. `vip` is
    the service's VIP, not the address the proxy bound (tests bind loopback), so every node
    hashes the same flow the same way. `protocol` selects no hash: a service has one."""

    protocol: str
    client_ip: str
    client_port: int
    vip: str
    port: int


@dataclass(frozen=True)
class _Field:
    nft: str  # the nft expression; {l4} is the service's protocol (tcp, udp)
    value: Callable[[FlowKey], bytes]  # the same field of a flow, in network byte order


def _ipv4(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed


_SADDR = _Field("ip saddr", lambda f: _ipv4(f.client_ip))
_SPORT = _Field("{l4} sport", lambda f: f.client_port.to_bytes(2, "big"))
_DADDR = _Field("ip daddr", lambda f: _ipv4(f.vip))
_DPORT = _Field("{l4} dport", lambda f: f.port.to_bytes(2, "big"))

# What each hashing algorithm hashes. The nft text and the Python bytes of a field sit side
# by side, so that render.py's rule and the proxy's choice cannot drift apart.
HASH_FIELDS: dict[Algorithm, tuple[_Field, ...]] = {
    Algorithm.SOURCE_HASH: (_SADDR,),  # sticky per client address; client ports ignored
    Algorithm.MAGLEV: (_SADDR, _SPORT, _DADDR, _DPORT),  # the flow
}


@dataclass(frozen=True)
class Slots:
    """A service's map: the backend of every slot, and how a new flow picks a slot. Equal
    Slots choose alike, so the proxy keeps a chooser (and its turn) while they are equal."""

    algorithm: Algorithm
    backends: tuple[Backend, ...]  # slot -> backend; () when no backend is serving

    @property
    def hashed(self) -> bool:
        """A flow's slot is a function of the flow (not of the flows before it)."""
        return self.algorithm in HASH_FIELDS

    def nft_selector(self, l4: str) -> str:
        """The nft expression that yields a new flow's slot."""
        n = len(self.backends)
        fields = HASH_FIELDS.get(self.algorithm)
        if fields is None:
            return f"numgen inc mod {n}"
        concat = " . ".join(f.nft.format(l4=l4) for f in fields)
        return f"jhash {concat} mod {n} seed {FLOW_HASH_SEED:#010x}"

    def slot_of(self, flow: FlowKey) -> int:
        """The slot the kernel's rule picks for `flow` (hashing algorithms only)."""
        fields = HASH_FIELDS.get(self.algorithm)
        if fields is None:
            raise ValueError(f"{self.algorithm.value} picks slots in turn, not by the flow")
        if not self.backends:
            raise ValueError("no serving backend: no slots")
        return nft_jhash([f.value(flow) for f in fields], len(self.backends), FLOW_HASH_SEED)


def slots_for(service: Service) -> Slots:
    """The slots of `service` from its serving backends (sorted by id, so that the order of
    the config or of the table does not matter)."""
    serving = sorted(service.serving(), key=lambda b: b.id)
    alg = service.algorithm
    if not serving:
        return Slots(alg, ())
    if alg is Algorithm.MAGLEV:
        # The size follows the *configured* backends: see MAGLEV_SIZES.
        table = maglev_table([b.id for b in serving], [b.weight for b in serving],
                             maglev_size(len(service.backends)))
        return Slots(alg, tuple(serving[i] for i in table))
    if alg is Algorithm.ROUND_ROBIN:
        return Slots(alg, tuple(serving))
    if alg in (Algorithm.WEIGHTED, Algorithm.SOURCE_HASH):
        order = smooth_order(slot_weights([b.weight for b in serving]))
        return Slots(alg, tuple(serving[i] for i in order))
    raise ValueError(f"service {service.name}: unknown algorithm {alg!r}")
