"""The balancing table: what the leader commits and every node programs (DESIGN.md §6).

Pure values. The leader builds a Table from the config, the committed health and the admin
states, and commits it with compare-and-set on its generation; every member renders each
committed generation into its kernel (render.py + apply.py) or, without nftables, serves
it with the userspace proxy (proxy.py). Same table, same semantics, everywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Algorithm(enum.StrEnum):
    ROUND_ROBIN = "round-robin"  # equal shares, in turn
    WEIGHTED = "weighted"  # weighted round-robin: shares proportional to weights
    SOURCE_HASH = "source-hash"  # sticky: one client address -> one backend
    MAGLEV = "maglev"  # consistent hash of the flow: the same backend on every node


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


class BackendState(enum.StrEnum):
    ACTIVE = "active"  # healthy and in service: gets new flows
    DRAINING = "draining"  # no new flows; established flows continue
    DISABLED = "disabled"  # taken out by an admin: no new flows
    DOWN = "down"  # its health check failed (committed verdict): no new flows


@dataclass(frozen=True)
class Backend:
    id: str  # a member id ("n2") or the external host's "address:port"
    address: str  # IPv4 address
    port: int
    weight: int  # 1..1000 (relative share for WEIGHTED and MAGLEV)
    state: BackendState = BackendState.ACTIVE

    @property
    def serving(self) -> bool:
        """Eligible for new flows."""
        return self.state is BackendState.ACTIVE


@dataclass(frozen=True)
class Service:
    name: str  # [A-Za-z0-9_-], at most 32 characters (used in nft object names)
    vip: str  # IPv4 address
    protocol: Protocol
    ports: tuple[int, ...]  # ports on the VIP
    backend_port: int | None  # None: the same port as on the VIP
    algorithm: Algorithm
    backends: tuple[Backend, ...]
    fallback: Backend | None = None  # "sorry" backend used when no backend is serving
    # Source NAT towards backends to a floating address (docs/snat.md): the backend sees
    # and answers an address that moves with the VIP, so the next holder, given the flow's
    # conntrack entry, carries the flow on. False: gateway mode (no SNAT; the backends
    # route their replies via a floating gateway address).
    snat: bool = True
    drain_timeout_s: int = 300  # established flows of a draining backend are cut after this
    snat_address: str | None = None  # a floating address (one of `vips`); None: the VIP

    def serving(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.serving)

    @property
    def snat_to(self) -> str | None:
        """The address flows to the backends leave from, or None without SNAT."""
        return (self.snat_address or self.vip) if self.snat else None


@dataclass(frozen=True)
class Table:
    generation: int
    services: tuple[Service, ...] = ()


# ------------------------------------------------------------------ the Raft log's form


def table_to_doc(t: Table) -> dict[str, Any]:
    """JSON-ready form of a table (what the `table` command carries)."""
    def backend(b: Backend | None) -> dict[str, Any] | None:
        return None if b is None else {"id": b.id, "address": b.address, "port": b.port,
                                       "weight": b.weight, "state": b.state.value}
    return {"generation": t.generation, "services": [
        {"name": s.name, "vip": s.vip, "protocol": s.protocol.value, "ports": list(s.ports),
         "backend_port": s.backend_port, "algorithm": s.algorithm.value,
         "backends": [backend(b) for b in s.backends], "fallback": backend(s.fallback),
         "snat": s.snat, "snat_address": s.snat_address, "drain_timeout_s": s.drain_timeout_s}
        for s in t.services]}


def table_from_doc(doc: dict[str, Any]) -> Table:
    """The inverse of table_to_doc; raises ValueError (KeyError/TypeError wrapped) on a bad doc.
    Keys added since the first release have defaults: older replicated tables lack them."""
    def backend(d: dict[str, Any] | None) -> Backend | None:
        if d is None:
            return None
        return Backend(str(d["id"]), str(d["address"]), int(d["port"]), int(d["weight"]),
                       BackendState(d["state"]))
    try:
        return Table(int(doc["generation"]), tuple(
            Service(str(s["name"]), str(s["vip"]), Protocol(s["protocol"]),
                    tuple(int(p) for p in s["ports"]),
                    None if s["backend_port"] is None else int(s["backend_port"]),
                    Algorithm(s["algorithm"]),
                    tuple(b for b in (backend(x) for x in s["backends"]) if b is not None),
                    backend(s["fallback"]), bool(s["snat"]), int(s.get("drain_timeout_s", 300)),
                    None if s.get("snat_address") is None else str(s["snat_address"]))
            for s in doc["services"]))
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a balancing table: {e!r}") from None
