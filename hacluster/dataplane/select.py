"""Backend selection for the userspace proxy: one chooser per service (DESIGN.md §6).

The proxy chooses from the very slots the kernel data plane programs (algorithms.py): the
same backend per flow for SOURCE_HASH and MAGLEV, with the kernel's own hash, and the same
shares for ROUND_ROBIN and WEIGHTED. What it adds is a retry the kernel cannot make: a
backend that did not answer the connect is skipped for that flow's second choice.

Pure and single-threaded: the proxy calls choose() from its event loop only. A chooser sees
only the *serving* backends of a table generation; draining, disabled and down backends are
never chosen for a new flow, while flows already placed keep their backend (the proxy holds
that mapping, as conntrack does for the kernel data plane).
"""

from __future__ import annotations

from typing import Protocol

from hacluster.dataplane.algorithms import FlowKey, Slots, slots_for
from hacluster.dataplane.table import Backend, Service

__all__ = ["Chooser", "FlowKey", "Hashed", "InTurn", "make_chooser", "signature"]


class Chooser(Protocol):
    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        """A serving backend for a new flow, skipping the ids in `exclude` (backends that
        already failed to answer this flow); None when there is none."""
        ...


class InTurn:
    """ROUND_ROBIN and WEIGHTED: the slots one after the other, as the kernel's `numgen inc
    mod N` takes them, so the shares are the kernel's (each backend's slots over all
    slots). Excluded backends' slots are passed over."""

    def __init__(self, slots: Slots):
        self._slots = slots.backends
        self._next = 0

    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        n = len(self._slots)
        for i in range(n):
            b = self._slots[(self._next + i) % n]
            if b.id not in exclude:
                self._next = (self._next + i + 1) % n
                return b
        return None


class Hashed:
    """SOURCE_HASH and MAGLEV: the slot the kernel's `jhash` rule gives the flow, so that a
    proxy member and a kernel member send the same flow (or, for SOURCE_HASH, the same
    client) to the same backend. A retry walks on to the next slot of another backend."""

    def __init__(self, slots: Slots):
        if not slots.hashed:
            raise ValueError(f"{slots.algorithm.value} does not hash flows")
        self._slots = slots

    def choose(self, flow: FlowKey, exclude: frozenset[str] = frozenset()) -> Backend | None:
        backends = self._slots.backends
        if not backends:
            return None
        n = len(backends)
        start = self._slots.slot_of(flow)
        for i in range(n):
            b = backends[(start + i) % n]
            if b.id not in exclude:
                return b
        return None


def signature(service: Service) -> Slots:
    """What a chooser depends on: a new table with the same slots keeps the chooser and so
    its round-robin position (an unrelated change must not reset every rotation)."""
    return slots_for(service)


def make_chooser(service: Service, slots: Slots | None = None) -> Chooser:
    """The chooser of `service` (`slots`: its slots_for, when the caller has them)."""
    slots = slots if slots is not None else slots_for(service)
    return Hashed(slots) if slots.hashed else InTurn(slots)
