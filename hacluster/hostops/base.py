"""The one interface through which hacluster touches the host.

Everything with a side effect on the machine (addresses through netlink, ARP, nftables)
goes through a HostOps. The agent receives one in its constructor: the real NetlinkHostOps
in production and in the lab, FakeHostOps in unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hacluster import clock
from hacluster.model import Vip

# A guard returns the deadline until which a claim may still be sent, on the lease clock
# (hacluster.clock.now: the clock pysyncobj and the lease use). float("-inf"): do not send.
Guard = Callable[[], float]

# The clock guards are read on. It *is* the lease clock, never a second definition of it:
# a guard's deadline comes from the Raft lease and must be compared on the same clock.
GUARD_CLOCK = clock.now


class HostOpsError(RuntimeError):
    """A host operation failed; the message says which and why."""


class HostOps(Protocol):
    def vip_present(self, vip: Vip) -> bool:
        """True when the kernel holds vip.address on vip.interface (any lifetime left)."""

    def claim_vip(self, vip: Vip, lifetime_s: float, guard: Guard | None = None) -> bool:
        """Add or renew the address with valid_lft = preferred_lft = lifetime_s.

        Idempotent (`ip addr replace` semantics): calling it every tick renews the lifetime,
        so that a crashed or frozen agent loses the address by itself when it expires.
        guard() gives the deadline until which the request may be sent; the clock is compared
        with it at the last moment before the kernel is asked. Past it, nothing is changed
        and claim_vip returns False. True: the address is held.
        """

    def release_vip(self, vip: Vip) -> None:
        """Remove the address; no error when it is already gone."""

    def probe(self, vip: Vip, timeout_s: float) -> bool:
        """Ask the link whether anyone answers for vip (ARP probe with sender 0.0.0.0, RFC 5227).

        True when an answer came from another host within timeout_s.
        """

    def announce(self, vip: Vip) -> None:
        """Tell the link that this host now holds vip: one gratuitous ARP (request form)."""

    def close(self) -> None:
        """Release sockets and netlink handles."""
