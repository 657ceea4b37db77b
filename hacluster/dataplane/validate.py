"""What a balancing table must be before any of it becomes rule text (pure).

A committed table arrives through Raft: whoever holds the cluster secret (or a leader with
a bug) can commit any JSON, and render.py writes names, addresses and ports into an nft
script that runs with CAP_NET_ADMIN. render() sanitizes object names, but addresses and
ports go in as they are; a service name such as `x"; flush ruleset` or an "address" with a
space would be rule text from outside the renderer. So every field is checked against the
same bounds the config puts on it (dataplane/spec.py, config.py) before a table is
rendered or served: the data plane worker refuses a table that fails (an ERROR, and the
last good generation stays in force), and render() raises rather than emit it.
"""

from __future__ import annotations

import ipaddress
import re

from hacluster.dataplane.table import Algorithm, Backend, BackendState, Protocol, Service, Table

SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")  # spec.ServiceSpec.name
MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # config.MemberSpec.id
MAX_PORTS = 64
MAX_BACKENDS = 256
MAX_WEIGHT = 1000
MAX_DRAIN_S = 86_400


def _ipv4(value: object) -> bool:
    """A canonical dotted-quad IPv4 address, nothing else (no spaces, no prefix, no zeros
    in front: exactly what str(IPv4Address) gives back)."""
    if not isinstance(value, str):
        return False
    try:
        return str(ipaddress.IPv4Address(value)) == value
    except ValueError:
        return False


def _int_in(value: object, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _backend_id(value: object) -> bool:
    """A member id, or an external host's ADDRESS:PORT (build.backend_id)."""
    if not isinstance(value, str):
        return False
    if MEMBER_ID.fullmatch(value):
        return True
    address, _, port = value.rpartition(":")
    return _ipv4(address) and port.isdigit() and len(port) <= 5 and int(port) <= 65535


def _backend_errors(p: str, b: object) -> list[str]:
    if not isinstance(b, Backend):
        return [f"{p}: not a backend"]
    errs = []
    if not _backend_id(b.id):
        errs.append(f"{p}.id: must be a member id or ADDRESS:PORT, got {b.id!r}")
    if not _ipv4(b.address):
        errs.append(f"{p}.address: must be an IPv4 address, got {b.address!r}")
    if not _int_in(b.port, 0, 65535):
        errs.append(f"{p}.port: must be 0-65535 (0: the client's port), got {b.port!r}")
    if not _int_in(b.weight, 1, MAX_WEIGHT):
        errs.append(f"{p}.weight: must be 1-{MAX_WEIGHT}, got {b.weight!r}")
    if not isinstance(b.state, BackendState):
        errs.append(f"{p}.state: must be one of {', '.join(s.value for s in BackendState)}, "
                    f"got {b.state!r}")
    return errs


def _service_errors(p: str, s: object) -> list[str]:
    if not isinstance(s, Service):
        return [f"{p}: not a service"]
    errs = []
    if not (isinstance(s.name, str) and SERVICE_NAME.fullmatch(s.name)):
        errs.append(f"{p}.name: must be 1-32 of A-Z a-z 0-9 _ - (starting with a letter or "
                    f"digit), got {s.name!r}")
    for field in ("vip", "snat_address"):
        value = getattr(s, field)
        if not (value is None and field == "snat_address") and not _ipv4(value):
            errs.append(f"{p}.{field}: must be an IPv4 address, got {value!r}")
    if not isinstance(s.protocol, Protocol):
        errs.append(f"{p}.protocol: must be tcp or udp, got {s.protocol!r}")
    if not isinstance(s.algorithm, Algorithm):
        errs.append(f"{p}.algorithm: must be one of {', '.join(a.value for a in Algorithm)}, "
                    f"got {s.algorithm!r}")
    if not isinstance(s.ports, tuple) or not 1 <= len(s.ports) <= MAX_PORTS:
        errs.append(f"{p}.ports: must be 1-{MAX_PORTS} ports")
    else:
        errs += [f"{p}.ports[{i}]: must be 1-65535, got {port!r}"
                 for i, port in enumerate(s.ports) if not _int_in(port, 1, 65535)]
    if s.backend_port is not None and not _int_in(s.backend_port, 1, 65535):
        errs.append(f"{p}.backend_port: must be 1-65535, got {s.backend_port!r}")
    if not isinstance(s.snat, bool):
        errs.append(f"{p}.snat: must be true or false, got {s.snat!r}")
    if not _int_in(s.drain_timeout_s, 0, MAX_DRAIN_S):
        errs.append(f"{p}.drain_timeout_s: must be 0-{MAX_DRAIN_S}, got {s.drain_timeout_s!r}")
    if not isinstance(s.backends, tuple) or len(s.backends) > MAX_BACKENDS:
        return errs + [f"{p}.backends: must be at most {MAX_BACKENDS} backends"]
    for j, b in enumerate(s.backends):
        errs += _backend_errors(f"{p}.backends[{j}]", b)
    ids = [b.id for b in s.backends if isinstance(b, Backend)]
    if len(set(ids)) != len(ids):
        errs.append(f"{p}.backends: two backends share an id")
    if s.fallback is not None:
        errs += _backend_errors(f"{p}.fallback", s.fallback)
    return errs


def table_errors(table: Table) -> list[str]:
    """Every problem of `table`, as 'services[i].field: message' lines; [] when it is fit
    to render and serve."""
    if not _int_in(table.generation, 0, 2**63 - 1):
        return [f"generation: must be a whole number >= 0, got {table.generation!r}"]
    if not isinstance(table.services, tuple):
        return ["services: must be a list of services"]
    errs = []
    for i, s in enumerate(table.services):
        errs += _service_errors(f"services[{i}]", s)
    names = [s.name for s in table.services if isinstance(s, Service)]
    if len(set(names)) != len(names):
        errs.append("services: two services share a name")
    return errs
