"""Balancing table -> one nftables script (pure; DESIGN.md §6).

`render(table)` returns a script that `nft -f` applies as ONE transaction: it creates
`table inet hacluster` if missing, deletes it and declares it anew, so the kernel switches
from the previous generation to this one atomically whether or not one existed. It never
names any other table: the agent owns `inet hacluster` alone.

What the table does, per service (VIP, tcp|udp, ports):

- **DNAT** (chain `services`, jumped to from nat base chains at prerouting priority dstnat
  and at output priority -100 for locally generated traffic): a new flow to VIP:port is
  sent to one of the *serving* backends, chosen through a named map of slots
  (algorithms.py, which the userspace proxy follows too):
  ROUND_ROBIN `numgen inc mod N`; WEIGHTED the same over slots repeated per weight;
  SOURCE_HASH `jhash ip saddr` over the weighted slots (sticky per client address);
  MAGLEV `jhash` of the 4-tuple over a Maglev table (maglev.py), so every node that holds
  the same table maps a flow to the same backend (e.g. after a VIP failover, when the
  new holder has no conntrack entry for a flow that was in progress), and a proxy
  member to the one the kernel would.
  The target is `address . port` when the backend has a port (backend_port), the address
  alone (the client's port kept) otherwise.
- **Draining and down backends keep their established flows**: nat chains are consulted
  only for the first packet of a flow; conntrack carries the DNAT mapping of every later
  packet. Leaving a backend out of the map therefore stops new flows only. (apply.py's
  `flush_backend` cuts the survivors after the drain timeout.)
- **No serving backend**: new flows go to the `fallback` ("sorry") backend if the
  service has one. Otherwise they are *rejected* (TCP reset, ICMP port-unreachable for
  UDP) and counted in the service's drop counter, in a filter chain at input (the VIP is
  a local address on its holder; traffic generated on the holder itself also ends there).
  We reject rather than drop, as kube-proxy does for a service without endpoints and
  HAProxy answers 503: a client learns at once that the service is down and can show an
  error or fail over, instead of hanging for its whole connect timeout (often 20-120 s).
- **SNAT to a floating address** (docs/snat.md): with `snat`, a DNATed flow leaves for its
  backend from the service's SNAT address (`snat_address`, else the VIP), through the map
  `snat_addresses` (VIP . protocol . VIP port -> address) at postrouting, and a flow
  delivered to a backend on this node too, at input (priority 100): every backend sees
  and answers an address that moves with the VIP. `masquerade` (this node's own address)
  would tie the flow to this node: the next holder, given the flow's conntrack entry by
  conntrackd, could not carry it, since the backend would answer an address nobody holds.
- **Backends keep no conntrack entry for balanced flows**: a backend on a member tracking
  `SNAT:x -> me:port` would, once that member becomes the holder, clash on the reply tuple
  with the holder's synced entry (`client -> VIP:port`, reply `me:port -> SNAT:x`): the
  commit takes the entry but NAT gives it another port, so the backend sees a stranger and
  resets the flow (measured: all of them). So raw chains `notrack` packets from a floating
  address (`floating_addresses`: every SNAT address) arriving from the wire, and packets
  to one that is not local here (`fib daddr type != local`): sent, and received when they
  are TCP segments that open nothing (a SYN through a standby is still balanced by its copy
  of the table, the same way as by the holder); on the holder, where the address is local,
  its balanced flows are tracked as they must be. Received matters at a graceful move:
  the old holder's backend keeps streaming to the VIP, and a neighbour entry left from an
  earlier term can send those packets to the next
  holder's MAC before it claims. Tracked there, each would start an entry (picked up
  mid-stream) that the commit of the synced one then clashes with, and NAT would give
  the client's next packet another port: the backend resets it (measured: 3 of 20 flows
  in a `failover --to`, before this rule).
- **Counters**: a named counter per backend (also for the fallback) counts packets and
  bytes, in both directions, of the flows DNATed to it; one map from (VIP, protocol,
  VIP port, backend address, backend port) to the counter is looked up from filter chains
  at prerouting and output, priority dstnat + 10 (after the DNAT). Counters exist for
  every configured backend, serving or not, so draining flows stay counted and the names
  do not come and go with health. `render(table, counters)` declares them with carried-over
  values, so they keep counting across generations (see NftApplier.apply).

Deterministic: services sorted by name, backends by id, ports ascending; the same Table
renders to the same bytes on every node. The first line is `# generation N`; the table's
comment carries the generation too, for NftApplier.applied_generation().
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hacluster.dataplane.algorithms import slots_for
from hacluster.dataplane.table import Backend, Service, Table
from hacluster.dataplane.validate import table_errors

TABLE = "hacluster"
FAMILY = "inet"
GENERATION_COMMENT = "hacluster generation {}"

_ELEMENTS_PER_LINE = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


# ------------------------------------------------------------------------- names


def _object_name(kind: str, *parts: str) -> str:
    """An nft object name: a readable part ([A-Za-z0-9_] only, bounded) plus 8 hex digits
    of a hash of the exact parts, so sanitizing ("a-b" and "a_b") or truncating never
    makes two names equal. The one-letter kind prefix keeps names off nft's keywords."""
    readable = "_".join(_UNSAFE.sub("_", p) for p in parts)[:40]
    digest = hashlib.sha256("\0".join((kind, *parts)).encode()).hexdigest()[:8]
    return f"{kind}_{readable}_{digest}"


def counter_name(service: str, backend_id: str) -> str:
    """Name of the counter of flows DNATed to a backend of a service."""
    return _object_name("b", service, backend_id)


def fallback_counter_name(service: str, fallback_id: str) -> str:
    return _object_name("f", service, fallback_id)


def drop_counter_name(service: str) -> str:
    """Name of the counter of new flows refused for want of any serving backend."""
    return _object_name("d", service)


def _map_name(service: str, *extra: str) -> str:
    return _object_name("m", service, *extra)


# ------------------------------------------------------------------------ pieces


def _port_of(s: Service, b: Backend) -> int | None:
    """The backend's port, or None: keep the port the client used (Backend.port 0)."""
    return b.port or s.backend_port or None


def _set_of(ports: Iterable[int]) -> str:
    items = sorted(set(ports))
    return str(items[0]) if len(items) == 1 else "{ " + ", ".join(map(str, items)) + " }"


def _target(address: str, port: int | None) -> str:
    return address if port is None else f"{address} . {port}"


def _elements(items: Sequence[str], indent: str, per_line: int = _ELEMENTS_PER_LINE) -> list[str]:
    lines = []
    for k in range(0, len(items), per_line):
        chunk = ", ".join(items[k:k + per_line])
        last = k + per_line >= len(items)
        lines.append(indent + ("elements = { " if k == 0 else "             ") + chunk
                     + (" }" if last else ","))
    return lines


@dataclass
class _Parts:
    counters: list[str] = field(default_factory=list)
    # (VIP, protocol, VIP port, backend address, backend port) -> counter name
    counter_keys: dict[tuple[str, str, int, str, int], str] = field(default_factory=dict)
    maps: list[list[str]] = field(default_factory=list)
    dnat: list[str] = field(default_factory=list)
    reject: list[str] = field(default_factory=list)
    # (VIP, protocol, VIP port) -> the address flows to the backends leave from
    snat: dict[tuple[str, str, int], str] = field(default_factory=dict)


def _service(s: Service, parts: _Parts) -> None:
    l4 = s.protocol.value
    ports = sorted(set(s.ports))
    if not ports:
        return
    backends = sorted(s.backends, key=lambda b: b.id)
    counted = [(b, counter_name(s.name, b.id)) for b in backends]
    if s.fallback is not None:
        counted.append((s.fallback, fallback_counter_name(s.name, s.fallback.id)))
    for b, name in counted:
        parts.counters.append(name)
        for vport in ports:
            key = (s.vip, l4, vport, b.address, _port_of(s, b) or vport)
            parts.counter_keys.setdefault(key, name)
    parts.counters.append(drop_counter_name(s.name))
    if s.snat_to is not None:
        parts.snat.update({(s.vip, l4, p): s.snat_to for p in ports})

    match = f"ip daddr {s.vip} {l4} dport"
    serving = [b for b in backends if b.serving]
    if serving:
        _balance(s, serving, ports, parts)
    elif s.fallback is not None:
        fport = _port_of(s, s.fallback)
        to = s.fallback.address if fport is None else f"{s.fallback.address}:{fport}"
        parts.dnat.append(f"{match} {_set_of(ports)} dnat ip to {to}")
    else:
        how = "tcp reset" if l4 == "tcp" else "icmp type port-unreachable"
        drops = drop_counter_name(s.name)
        parts.reject.append(f'{match} {_set_of(ports)} ct state new counter name "{drops}" reject with {how}')


def _balance(s: Service, serving: list[Backend], ports: list[int], parts: _Parts) -> None:
    """The DNAT rule(s) and slot map(s) of a service with serving backends."""
    l4 = s.protocol.value
    chosen = slots_for(s)  # the proxy picks from the same slots (algorithms.py)
    expr, slots = chosen.nft_selector(l4), chosen.backends
    with_port = [_port_of(s, b) is not None for b in serving]
    if all(with_port) or not any(with_port):
        groups: list[tuple[list[int], str, int | None]] = [(ports, _map_name(s.name), None)]
    else:  # some backends keep the client's port, others not: one map per VIP port
        groups = [([p], _map_name(s.name, str(p)), p) for p in ports]
    value = "ip daddr" + (f" . {l4} dport" if any(with_port) else "")
    how = "ip addr . port" if any(with_port) else "ip"
    # The key is a slot number, typed as numgen's: `typeof jhash ...` would read better,
    # but nft 1.0.6 (Debian 12) segfaults when it lists such a map.
    key = f"numgen inc mod {len(slots)}"
    for group_ports, name, fixed in groups:
        targets = [_target(b.address, _port_of(s, b) or fixed) for b in slots]
        parts.maps.append([f"map {name} {{", f"\ttypeof {key} : {value}",
                           *_elements([f"{i} : {t}" for i, t in enumerate(targets)], "\t"), "}"])
        parts.dnat.append(f"ip daddr {s.vip} {l4} dport {_set_of(group_ports)} dnat {how} to {expr} "
                          f"map @{name}")


def _concat(key: tuple[str | int, ...]) -> str:
    return " . ".join(map(str, key))


def _protocols(keys: Iterable[tuple[str | int, ...]]) -> list[str]:
    return sorted({str(k[1]) for k in keys})


# ------------------------------------------------------------------------ render


def render(table: Table, counters: Mapping[str, tuple[int, int]] | None = None) -> str:
    """The nft script for `table` (see the module docstring). `counters` (name -> packets,
    bytes) seeds the counters that exist in this generation too. ValueError for a table
    that fails validate.table_errors: nothing from outside is written into rule text
    unchecked."""
    errors = table_errors(table)
    if errors:
        raise ValueError(f"refusing to render table generation {table.generation}: "
                         + "; ".join(errors))
    parts = _Parts()
    for s in sorted(table.services, key=lambda s: s.name):
        _service(s, parts)
    if len(set(parts.counters)) != len(parts.counters):
        raise ValueError("two services share a name, or two backends of a service an id")
    out = [f"# generation {table.generation}",
           f"table {FAMILY} {TABLE} {{}}",
           f"delete table {FAMILY} {TABLE}",
           f"table {FAMILY} {TABLE} {{",
           f'\tcomment "{GENERATION_COMMENT.format(table.generation)}"']
    if table.services:
        out += _declarations(parts, counters or {}) + _chains(parts)
    out.append("}")
    return "\n".join(out) + "\n"


_KEY_TYPE = "ipv4_addr . inet_proto . inet_service"  # VIP, protocol, VIP port


def _declarations(parts: _Parts, carry: Mapping[str, tuple[int, int]]) -> list[str]:
    out = [""]
    for name in parts.counters:
        if name in carry:
            packets, nbytes = carry[name]
            out.append(f"\tcounter {name} {{ packets {packets} bytes {nbytes} }}")
        else:
            out.append(f"\tcounter {name} {{}}")
    out += ["", "\tmap backend_counters {", f"\t\ttype {_KEY_TYPE} . ipv4_addr . inet_service : counter"]
    if parts.counter_keys:
        out += _elements([f'{_concat(k)} : "{v}"' for k, v in sorted(parts.counter_keys.items())],
                         "\t\t", per_line=1)
    out.append("\t}")
    if parts.snat:
        out += ["", "\tmap snat_addresses {", f"\t\ttype {_KEY_TYPE} : ipv4_addr",
                *_elements([f"{_concat(k)} : {v}" for k, v in sorted(parts.snat.items())], "\t\t",
                           per_line=2), "\t}",
                "", "\tset floating_addresses {", "\t\ttype ipv4_addr",
                *_elements(sorted(set(parts.snat.values())), "\t\t"), "\t}",
                "", "\tset service_endpoints {", f"\t\ttype {_KEY_TYPE}",
                *_elements([_concat(k) for k in sorted(parts.snat)], "\t\t", per_line=2), "\t}"]
    for m in parts.maps:
        out += ["", *("\t" + line for line in m)]
    return out


def _chains(parts: _Parts) -> list[str]:
    out: list[str] = []

    def chain(name: str, hook: str | None, rules: list[str]) -> None:
        out.extend(["", f"\tchain {name} {{", *([f"\t\t{hook}; policy accept;"] if hook else []),
                    *("\t\t" + r for r in rules), "\t}"])

    chain("services", None, parts.dnat)
    # Only where the VIP is local: a server that just handed it over (a switchover) still
    # gets the clients' packets sent before they heard the new holder's GARP. Balanced here,
    # a new flow's backend would answer the VIP, which routes to the new holder, which has no
    # entry for it (lost SYN, a client waiting 1 s); not balanced, the kernel forwards it to
    # the VIP's holder (its ARP queue waits for the claim), which balances it.
    chain("nat_prerouting", "type nat hook prerouting priority dstnat",
          ["fib daddr type local jump services"])
    chain("nat_output", "type nat hook output priority -100", ["jump services"])
    if parts.snat:
        snat = [f"ct status dnat meta l4proto {p} snat ip to ct original ip daddr . meta l4proto . "
                "ct original proto-dst map @snat_addresses" for p in _protocols(parts.snat)]
        chain("nat_postrouting", "type nat hook postrouting priority srcnat", snat)
        # The holder's own backend: after a failover to another holder, it answers the
        # floating address, which routes to the new holder, which has the flow's entry.
        chain("nat_input", "type nat hook input priority 100", snat)
        # Before conntrack (raw): see the module docstring. Packets from a floating address
        # on the wire are a balancer's, to a backend here; on lo they are this holder's own.
        chain("raw_prerouting", "type filter hook prerouting priority raw",
              ['iifname != "lo" ip saddr @floating_addresses notrack',
               # A client's SYN too: a non-holder only forwards it (nat_prerouting); tracked,
               # its entry would be synced and committed by the next holder without NAT. Not
               # a backend's SYN-ACK: it answers a flow this server balanced before it
               # released the address, whose entry takes it back to the client.
               "ip daddr @floating_addresses fib daddr type != local "
               "tcp flags & (syn | ack) != syn | ack notrack"])
        chain("raw_output", "type filter hook output priority raw",
              ["ip daddr @floating_addresses fib daddr type != local notrack"])
        # After conntrack, before NAT: a TCP packet to a floating address that starts no
        # connection (no SYN) and is not for a service port is a backend answering a flow
        # this holder has no entry for (not synced, or its commit still running). Tracked, it
        # would take the flow's reply tuple and NAT would move the client's port when the
        # client's next packet comes (the backend then resets it); dropped, the backend
        # retransmits and its next try meets the entry the client's packet makes (picked up
        # mid-stream and balanced to the same backend by Maglev or source-hash).
        chain("pickup_guard", "type filter hook prerouting priority mangle",
              ["ct state new ip daddr @floating_addresses tcp flags & syn == 0 "
               "ip daddr . meta l4proto . tcp dport != @service_endpoints drop"])
    lookup = ("counter name ct original ip daddr . meta l4proto . ct original proto-dst"
              " . ct reply ip saddr . ct reply proto-src map @backend_counters")
    count_protos = _protocols(parts.counter_keys)
    # Packets between local sockets pass output and then prerouting on lo: count them once.
    chain("count_prerouting", "type filter hook prerouting priority dstnat + 10",
          [f'iifname != "lo" ct status dnat meta l4proto {p} {lookup}' for p in count_protos])
    chain("count_output", "type filter hook output priority -90",
          [f"ct status dnat meta l4proto {p} {lookup}" for p in count_protos])
    if parts.reject:
        chain("reject_input", "type filter hook input priority filter - 10", parts.reject)
    return out
