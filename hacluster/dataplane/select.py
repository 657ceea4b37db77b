"""Backend selection for the userspace proxy: one chooser per service (DESIGN.md §6).

Pure and single-threaded: the proxy calls choose() from its event loop only. A chooser sees
only the *serving* backends of a table generation; draining, disabled and down backends are
never chosen for a new flow, while flows already placed keep their backend (the proxy holds
that mapping, as conntrack does for the kernel data plane).

Hashes use hashlib, never hash(): Python salts str hashes per process, and two nodes (or a
restarted agent) must map the same client or the same flow to the same backend.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hacluster.dataplane.maglev import maglev_table
from hacluster.dataplane.render import maglev_size
from hacluster.dataplane.table import Algorithm, Backend, Service

# maglev_table(backend_ids, weights, size) -> one index into backend_ids per slot.
MaglevBuilder = Callable[[Sequence[str], Sequence[int], int], list[int]]


@dataclass(frozen=True)
class FlowKey:
    """The 5-tuple of a new flow. `vip` is the service's VIP, not the address the proxy bound
    (tests bind loopback), so every node hashes the same flow the same way."""

    protocol: str
    client_ip: str
    client_port: int
    vip: str
    port: int


def stable_hash(*parts: object) -> int:
    """64-bit hash that is the same in every process and on every node."""
    data = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Chooser(Protocol):
    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        """A serving backend for a new flow, skipping the ids in `exclude` (backends that
        already failed to answer this flow); None when there is none."""
        ...


class RoundRobin:
    """Equal shares, in turn; weights are ignored."""

    def __init__(self, backends: Sequence[Backend]):
        self._backends = tuple(backends)
        self._next = 0

    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        n = len(self._backends)
        for i in range(n):
            b = self._backends[(self._next + i) % n]
            if b.id not in exclude:
                self._next = (self._next + i + 1) % n
                return b
        return None


class SmoothWeighted:
    """nginx's smooth weighted round-robin: shares exactly proportional to the weights over
    every cycle of sum(weights) picks, and interleaved (5:1:1 gives a a b a c a a, not
    a a a a a b c), so a heavy backend never takes a burst of new flows at once."""

    def __init__(self, backends: Sequence[Backend]):
        self._backends = tuple(backends)
        self._current = [0] * len(self._backends)

    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        best = -1
        total = 0
        for i, b in enumerate(self._backends):
            if b.id in exclude:
                continue
            self._current[i] += b.weight
            total += b.weight
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        if best < 0:
            return None
        self._current[best] -= total
        return self._backends[best]


class SourceHash:
    """Sticky: a stable hash of the client address into weighted slots (backend i owns
    weight_i of the sum(weights) slots). Client ports are ignored on purpose."""

    def __init__(self, backends: Sequence[Backend]):
        self._backends = tuple(backends)
        self._bounds = list(itertools.accumulate(b.weight for b in self._backends))

    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        live, bounds = self._backends, self._bounds
        if exclude:  # a retry: the slots of the remaining backends
            live = tuple(b for b in live if b.id not in exclude)
            bounds = list(itertools.accumulate(b.weight for b in live))
        if not live:
            return None
        return live[bisect.bisect_right(bounds, stable_hash(flow.client_ip) % bounds[-1])]


class Maglev:
    """Consistent hash of the 5-tuple into a Maglev lookup table: every node that builds the
    table from the same serving backends maps a flow to the same backend, and a backend that
    leaves moves only its own slots. A retry walks on to the next slot of another backend."""

    def __init__(self, backends: Sequence[Backend], size: int, builder: MaglevBuilder = maglev_table):
        self._backends = tuple(backends)
        ids, weights = [b.id for b in self._backends], [b.weight for b in self._backends]
        self._slots = builder(ids, weights, size) if self._backends else []

    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        if not self._slots:
            return None
        n = len(self._slots)
        start = stable_hash(flow.protocol, flow.client_ip, flow.client_port, flow.vip, flow.port) % n
        for i in range(n):
            b = self._backends[self._slots[(start + i) % n]]
            if b.id not in exclude:
                return b
        return None


def signature(service: Service) -> tuple[object, ...]:
    """What a chooser depends on: a new table with the same signature keeps the chooser and
    so its round-robin position (an unrelated change must not reset every rotation)."""
    size_basis = len(service.backends) if service.algorithm is Algorithm.MAGLEV else 0
    return (service.algorithm, size_basis,
            tuple((b.id, b.address, b.port, b.weight) for b in service.serving()))


def make_chooser(service: Service, maglev: MaglevBuilder | None = None) -> Chooser:
    serving = service.serving()
    if service.algorithm is Algorithm.ROUND_ROBIN:
        return RoundRobin(serving)
    if service.algorithm is Algorithm.WEIGHTED:
        return SmoothWeighted(serving)
    if service.algorithm is Algorithm.SOURCE_HASH:
        return SourceHash(serving)
    if service.algorithm is Algorithm.MAGLEV:
        # The renderer's size: it depends on the configured backends only, so a backend that
        # goes down or comes back does not resize the table and reshuffle every flow.
        return Maglev(serving, maglev_size(len(service.backends)), maglev or maglev_table)
    raise ValueError(f"service {service.name}: unknown algorithm {service.algorithm!r}")
