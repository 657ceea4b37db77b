"""Services in the config: what the balancing table is built from (DESIGN.md §6).

```yaml
services:
  - name: web
    vip: 10.0.0.100            # one of `vips`
    protocol: tcp              # tcp | udp
    ports: [80, 443]           # on the VIP
    backend_port: 8080         # optional: default, the same port as on the VIP
    algorithm: round-robin     # round-robin | weighted | source-hash | maglev
    check: web                 # the health check that governs the cluster members' backends
    backends:
      - {node: n1}             # a cluster member, at its member address
      - {node: n2, weight: 2}
      - {address: 10.0.0.50, weight: 1}   # an external host (on backend_port)
    fallback: {address: 10.0.0.60}       # optional "sorry" backend (on backend_port)
    snat: true                 # SNAT towards backends to a floating address (docs/snat.md)
    snat_address: 10.0.1.100   # optional: that address (one of `vips`); default: the VIP
    drain_timeout_s: 300       # established flows of a draining backend end after this
```

Pydantic models check each field; `service_errors()` checks what spans the config
(members, VIPs, checks), with paths such as `services[0].backends[2].node`.

External hosts are health-checked too: `external_checks()` derives, for each external
backend of a service with a check, a copy of that check aimed at the host's address,
named `CHECK@ADDRESS` (a name no configured check can have, as `@` is not allowed there).
Every member runs them and gossips the results like its own checks; the table builder
marks the host down when most members' committed verdicts say so (build.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hacluster.dataplane.table import Algorithm, Protocol

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
MAX_CHECK_NAME = 63  # what gossip carries (gossip/wire.py MAX_ID)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSpec(_Strict):
    node: str | None = Field(default=None, min_length=1)  # a member id
    address: str | None = None  # an external host (IPv4)
    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_of(self) -> BackendSpec:
        if (self.node is None) == (self.address is None):
            raise ValueError("give either `node` (a member id) or `address` (an external host)")
        return self


class FallbackSpec(_Strict):
    address: str
    port: int | None = Field(default=None, ge=1, le=65535)


class ServiceSpec(_Strict):
    name: str = Field(min_length=1, max_length=32, pattern=_NAME)
    vip: str
    protocol: Protocol = Protocol.TCP
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(min_length=1, max_length=64)
    backend_port: int | None = Field(default=None, ge=1, le=65535)
    algorithm: Algorithm = Algorithm.ROUND_ROBIN
    check: str | None = None
    backends: list[BackendSpec] = Field(min_length=1, max_length=256)
    fallback: FallbackSpec | None = None
    # true: backends see (and answer) `snat_address`, else the VIP itself; false: gateway
    # mode, backends see the client and route their replies via a floating gateway.
    snat: bool = True
    snat_address: str | None = None
    drain_timeout_s: int = Field(default=300, ge=0, le=86_400)

    @model_validator(mode="before")
    @classmethod
    def _port_alias(cls, data: Any) -> Any:
        # `port: 80` reads better than `ports: [80]` for the common case.
        if isinstance(data, dict) and "port" in data and "ports" not in data:
            data = {**data, "ports": [data["port"]]}
            del data["port"]
        return data


def _ipv4(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


def service_errors(services: list[ServiceSpec], member_ids: set[str], vips: set[str],
                   checks: set[str], members: Sequence[Any] = ()) -> list[str]:
    """Rules that span the config, as 'services[i].field: message' lines. members: the
    config's members (id, raft_port, grpc_port), whose ports no service may use."""
    errs: list[str] = _port_clashes(services, members)
    names: dict[str, int] = {}
    endpoints: dict[tuple[str, str, int], str] = {}
    for i, s in enumerate(services):
        p = f"services[{i}]"
        if s.name in names:
            errs.append(f"{p}.name: duplicate service name {s.name!r} (also services[{names[s.name]}])")
        names.setdefault(s.name, i)
        if s.vip not in vips:
            errs.append(f"{p}.vip: {s.vip} is not one of the configured vips "
                        f"({', '.join(sorted(vips)) or 'none'}); a service lives on a VIP")
        for j, port in enumerate(s.ports):
            key = (s.vip, s.protocol.value, port)
            if key in endpoints:
                errs.append(f"{p}.ports[{j}]: {s.vip}:{port}/{s.protocol.value} is already served "
                            f"by {endpoints[key]}")
            endpoints.setdefault(key, f"{p}")
        if len(set(s.ports)) != len(s.ports):
            errs.append(f"{p}.ports: a port is listed twice")
        if s.check is not None and s.check not in checks:
            errs.append(f"{p}.check: no check named {s.check!r} (checks: "
                        f"{', '.join(sorted(checks)) or 'none'})")
        seen: dict[str, int] = {}
        for j, b in enumerate(s.backends):
            bp = f"{p}.backends[{j}]"
            if b.node is not None and b.node not in member_ids:
                errs.append(f"{bp}.node: {b.node!r} is not a member ({', '.join(sorted(member_ids))})")
            if b.address is not None and not _ipv4(b.address):
                errs.append(f"{bp}.address: must be an IPv4 address, got {b.address!r}")
            if (b.address is not None and s.check is not None
                    and len(external_check_name(s.check, b.address)) > MAX_CHECK_NAME):
                errs.append(f"{bp}.address: the check {s.check!r} is too long a name to derive "
                            f"the external host's check from ({external_check_name(s.check, b.address)!r}"
                            f" > {MAX_CHECK_NAME} characters); shorten the check's name")
            if b.address is not None and b.address == s.vip:
                errs.append(f"{bp}.address: the VIP itself cannot be a backend")
            if b.port is not None and b.port != s.backend_port:
                errs.append(f"{bp}.port: every backend of a service listens on the service's "
                            f"backend_port ({s.backend_port or 'the VIP port'}); set backend_port "
                            "on the service instead")
            key = b.node or f"{b.address}:{b.port or s.backend_port or ''}"
            if key in seen:
                errs.append(f"{bp}: the same backend as backends[{seen[key]}]")
            seen.setdefault(key, j)
        errs += _snat_errors(p, s, vips)
        if s.fallback is not None and s.fallback.port not in (None, s.backend_port):
            errs.append(f"{p}.fallback.port: the fallback listens on the service's backend_port "
                        f"({s.backend_port or 'the VIP port'}) too")
        if s.fallback is not None and not _ipv4(s.fallback.address):
            errs.append(f"{p}.fallback.address: must be an IPv4 address, got {s.fallback.address!r}")
    return errs


def _port_clashes(services: list[ServiceSpec], members: Sequence[Any]) -> list[str]:
    """A service or backend port that is a member's Raft or gRPC port: the balancer would
    carry clients to the cluster's own listeners (a backend on a member at its Raft port),
    or cluster traffic to the backends, and the Raft port guard would be beside the point."""
    cluster_ports: dict[int, str] = {}
    for i, m in enumerate(members):
        for name in ("raft_port", "grpc_port"):
            cluster_ports.setdefault(getattr(m, name), f"members[{i}].{name} ({m.id})")
    errs = []
    for i, s in enumerate(services):
        ports = [(f"services[{i}].ports[{j}]", port) for j, port in enumerate(s.ports)]
        ports.append((f"services[{i}].backend_port", s.backend_port))
        ports += [(f"services[{i}].backends[{j}].port", b.port) for j, b in enumerate(s.backends)]
        if s.fallback is not None:
            ports.append((f"services[{i}].fallback.port", s.fallback.port))
        errs += [f"{where}: {port} is also {cluster_ports[port]}; a service must not use the "
                 "members' Raft or gRPC ports, pick another port"
                 for where, port in ports if port is not None and port in cluster_ports]
    return errs


def _snat_errors(p: str, s: ServiceSpec, vips: set[str]) -> list[str]:
    """The SNAT address must float with the VIP: a configured VIP (claimed, renewed,
    announced and released under the same lease), or the next holder could not carry
    the flows (docs/snat.md)."""
    a = s.snat_address
    if a is None:
        return []
    if not s.snat:
        return [f"{p}.snat_address: set with `snat: false`; give `snat: true` to SNAT to "
                f"{a}, or drop snat_address (gateway mode: backends route via a floating gateway)"]
    if not _ipv4(a):
        return [f"{p}.snat_address: must be an IPv4 address, got {a!r}"]
    if a not in vips:
        return [f"{p}.snat_address: {a} is not one of the configured vips "
                f"({', '.join(sorted(vips)) or 'none'}); add it to `vips` so that it moves "
                "with the service's VIP"]
    return []


def external_check_name(check: str, address: str) -> str:
    """The derived check that probes an external backend for a service's check."""
    return f"{check}@{address}"


def external_checks(services: Sequence[ServiceSpec], checks: Sequence[Any]) -> list[Any]:
    """Copies of the services' checks aimed at their external backends (see the module
    docstring), one per (check, address), in config order."""
    by_name = {c.name: c for c in checks}
    out: dict[str, Any] = {}
    for s in services:
        spec = by_name.get(s.check) if s.check is not None else None
        if spec is None:
            continue
        for b in s.backends:
            if b.address is not None:
                name = external_check_name(spec.name, b.address)
                out.setdefault(name, spec.model_copy(update={"name": name, "host": b.address}))
    return list(out.values())
