"""The leader's table builder: config + committed health + admin states -> Table (pure).

Admin states live in the replicated flags (set by `hacluster drain/undrain/weight`):
  draining/<node> = "true"            every backend on that server drains
  backend/<service>/<id> = draining | disabled
  weight/<service>/<id> = "N"         overrides the configured weight (1-1000)
A member's backend is DOWN when the service's check has a committed verdict of down for
that member; with no verdict yet (a fresh cluster) it counts as active, as a load balancer
starts its servers up: refusing all traffic for the seconds before the first verdicts
would be an outage of its own. An external host is checked by every member (the
service's check aimed at it, spec.external_checks): it is DOWN when more than half of the
members' committed verdicts for it say down, so one member that cannot reach it (its own
cable, or a dead member, whose verdicts are all down) does not take it out of service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hacluster.dataplane.spec import BackendSpec, ServiceSpec, external_check_name
from hacluster.dataplane.table import Backend, BackendState, Service, Table
from hacluster.model import is_draining


def backend_id(b: BackendSpec, backend_port: int | None) -> str:
    return b.node if b.node is not None else f"{b.address}:{b.port or backend_port or 0}"


def _state(svc: ServiceSpec, b: BackendSpec, bid: str, health: Mapping[str, bool],
           flags: Mapping[str, str]) -> BackendState:
    admin = flags.get(f"backend/{svc.name}/{bid}")
    if admin == "disabled":
        return BackendState.DISABLED
    if admin == "draining" or (b.node is not None and is_draining(flags, b.node)):
        return BackendState.DRAINING
    if svc.check is not None:
        if b.node is not None and health.get(f"{b.node}/{svc.check}") is False:
            return BackendState.DOWN
        if b.address is not None and _mostly_down(health, external_check_name(svc.check, b.address)):
            return BackendState.DOWN
    return BackendState.ACTIVE


def _mostly_down(health: Mapping[str, bool], check: str) -> bool:
    suffix = "/" + check
    votes = [up for key, up in health.items() if key.endswith(suffix)]
    return votes.count(False) * 2 > len(votes)


def _weight(svc: ServiceSpec, bid: str, configured: int, flags: Mapping[str, str]) -> int:
    raw = flags.get(f"weight/{svc.name}/{bid}")
    if raw is not None and raw.isdigit() and 1 <= int(raw) <= 1000:
        return int(raw)
    return configured


def build_table(services: Sequence[ServiceSpec], member_addresses: Mapping[str, str],
                health: Mapping[str, bool], flags: Mapping[str, str], generation: int) -> Table:
    out = []
    for svc in services:
        backends = []
        for b in svc.backends:
            if b.node is not None and b.node not in member_addresses:
                continue  # not a member (yet, or any more): no backend (issue 16)
            bid = backend_id(b, svc.backend_port)
            address = member_addresses[b.node] if b.node is not None else str(b.address)
            port = b.port or svc.backend_port or 0  # 0: the port the client used
            backends.append(Backend(bid, address, port, _weight(svc, bid, b.weight, flags),
                                    _state(svc, b, bid, health, flags)))
        fallback = None
        if svc.fallback is not None:
            fport = svc.fallback.port or svc.backend_port or 0
            fallback = Backend(f"{svc.fallback.address}:{fport}", svc.fallback.address, fport, 1)
        out.append(Service(svc.name, svc.vip, svc.protocol, tuple(svc.ports), svc.backend_port,
                           svc.algorithm, tuple(backends), fallback, svc.snat, svc.drain_timeout_s,
                           svc.snat_address))
    return Table(generation, tuple(out))
