"""Human-readable rendering of an AgentStatus for `hacluster status` (and of members,
checks, backends). Every render_* function scrubs what it is given first (safe_text.py):
the values come from agents and gossip, and a control character in them must not reach
the operator's terminal as a command.
"""

from __future__ import annotations

from collections.abc import Sequence

from hacluster.model import (
    AgentStatus,
    BackendsStatus,
    ChecksStatus,
    CheckState,
    GossipState,
    MembersStatus,
    SyncState,
    SyncStatus,
)
from hacluster_cli.safe_text import scrub

# What a connection sync that is down costs, said wherever it is shown as down.
SYNC_DOWN_COST = "established flows through the VIP will break when it moves"


def _columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _age(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms ago" if ms < 10_000 else f"{ms / 1000:.1f} s ago"


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86_400)
    h, s = divmod(s, 3_600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _ms(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def sync_word(s: SyncStatus) -> str:
    return "DOWN" if s.state is SyncState.DOWN else s.state.value


def sync_detail(s: SyncStatus) -> str:
    """Why it is off or down (how it runs when ok), then its restarts and the last claim's
    commit time when there are any."""
    extra = []
    if s.restarts:
        extra.append(f"restarted {s.restarts} time{'s' if s.restarts != 1 else ''}")
    if s.last_commit_ms is not None:
        extra.append(f"last claim's commit took {_ms(s.last_commit_ms)}")
    return "; ".join(p for p in (s.detail, ", ".join(extra)) if p)


def sync_text(s: SyncStatus) -> str:
    """One agent's connection-state sync for people: `ok (how)`, `DOWN (why) — what it
    costs`, `off (why)`."""
    detail = sync_detail(s)
    text = sync_word(s) + (f" ({detail})" if detail else "")
    return text + (f" — {SYNC_DOWN_COST}" if s.state is SyncState.DOWN else "")


def render_status(st: AgentStatus) -> str:
    st = scrub(st)
    lease = f"ok, {st.lease_remaining_ms:.0f} ms left" if st.lease_ok else "not held"
    held = [f"{v.address}/{v.prefixlen}" for v in st.vips if v.held]
    head = [
        ("node", f"{st.node}  (cluster {st.cluster}, hacluster {st.version}, "
                 f"up {_duration(st.uptime_s)})"),
        ("role", f"{st.role.value}, term {st.term}"),
        ("leader", st.leader or "none known"),
        ("lease", lease),
        ("quorum", "yes" if st.has_quorum else "NO"),
        ("VIPs held", ", ".join(held) or "none"),
    ]
    if st.maintenance:
        head.insert(0, ("MAINTENANCE", "ON: balancing table frozen, no automatic handoff "
                        "(hacluster maintenance off)"))
    if st.handoff:
        head.append(("handoff", "in progress: this node releases its VIPs"))
    if st.connection_sync is not None:  # None: an agent older than the field
        head.append(("connection sync", sync_text(st.connection_sync)))
    if st.raft_disk_problem:
        head.insert(0, ("RAFT DISK", st.raft_disk_problem))
    head += [
        ("status", st.sentence or "-"),
        ("raft", f"commit index {st.commit_index}, applied {st.last_applied}"),
        ("state", f"epoch term {st.epoch_term}, generation {st.generation}"),
    ]
    width = max(len(k) for k, _ in head)
    lines = [f"{k.ljust(width)}  {v}" for k, v in head]
    if st.vips:
        lines += ["", "VIPs"]
        lines += _columns([("ADDRESS", "INTERFACE", "HERE")] + [
            (f"{v.address}/{v.prefixlen}", v.interface, "held" if v.held else "-")
            for v in st.vips])
    if st.members:
        lines += ["", "members"]
        lines += _columns([("ID", "RAFT ADDRESS", "RAFT LINK", "LAST ACK")] + [
            (m.id, m.address, "self" if m.is_self else ("up" if m.connected else "DOWN"),
             _age(m.last_ack_ms))
            for m in st.members])
    return "\n".join(lines)


def _seen(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return _age(seconds * 1000)


def render_members(ms: MembersStatus) -> str:
    ms = scrub(ms)
    rows: list[tuple[str, ...]] = [("ID", "ADDRESS", "GOSSIP", "INC", "RAFT", "CHECKS", "LOAD",
                                    "LAST SEEN")]
    for m in ms.members:
        state = m.state.value.upper() if m.state is not GossipState.ALIVE else "alive"
        if m.state is GossipState.SUSPECT and m.confirmations:
            state += f" ({m.confirmations} confirm)"
        if m.draining:
            state += ", draining"
        gone = m.state in (GossipState.DEAD, GossipState.LEFT)
        checks = f"{m.checks_passing}/{m.checks_total} ok" if m.meta_known else "-"
        load = f"cpu {m.cpu_percent:.0f}% mem {m.mem_percent:.0f}%" if m.meta_known else "-"
        if gone and m.meta_known:  # what it said before it went away: not current
            checks, load = f"({checks}, stale)", "-"
        rows.append((m.id + (" (self)" if m.is_self else ""), m.address, state,
                     str(m.incarnation), m.raft_role, checks, load,
                     "-" if m.is_self else _seen(m.last_seen_s)))
    head = f"members as seen by {ms.node}"
    if ms.awareness:
        head += f" (its local health score is {ms.awareness}: it is slow itself, so it " \
                "slows its own verdicts)"
    return "\n".join([head, *_columns(rows)])


def render_checks(cs: ChecksStatus) -> str:
    cs = scrub(cs)
    committed = {(c.node, c.check): c.healthy for c in cs.committed}
    rows: list[tuple[str, ...]] = [("NODE", "CHECK", "KIND", "STATE", "LATENCY", "COMMITTED",
                                    "TARGET", "LAST ERROR")]
    for n in cs.nodes:
        if not n.checks:
            rows.append((n.node, "-", "-", f"(gossip {n.state.value}, no checks reported)",
                         "-", "-", "-", ""))
        gone = n.state in (GossipState.DEAD, GossipState.LEFT)
        for c in n.checks:
            state = c.state.value if c.state is CheckState.PASSING else c.state.value.upper()
            if gone:  # its last report before it died or left
                state = f"({state}, stale: {n.state.value.upper()})"
            latency = "-" if c.latency_ms is None else f"{c.latency_ms:.1f} ms"
            verdict = committed.get((n.node, c.name))
            rows.append((n.node, c.name, c.kind, state, latency,
                         "-" if verdict is None else ("up" if verdict else "DOWN"),
                         c.target, c.error or ""))
    lines = [f"health checks as seen by {cs.node} (committed verdicts: generation "
             f"{cs.generation})", *_columns(rows)]
    outputs = [(n.node, c) for n in cs.nodes for c in n.checks if c.output and c.state
               is not CheckState.PASSING]
    for node, c in outputs:
        lines += ["", f"{node}/{c.name} output:", *("  " + ln for ln in c.output.splitlines())]
    return "\n".join(lines)


def render_backends(bs: BackendsStatus) -> str:
    bs = scrub(bs)
    applied = "none" if bs.applied_generation is None else str(bs.applied_generation)
    lag = "" if bs.applied_generation == bs.table_generation else "  (NOT YET APPLIED HERE)"
    lines = [f"balancing table as seen by {bs.node}: generation {bs.table_generation} committed, "
             f"{applied} applied in its data plane ({bs.dataplane}){lag}"]
    if not bs.services:
        lines.append("  no services (none configured, or no table committed yet)")
    for s in bs.services:
        ports = ",".join(str(p) for p in s.ports)
        serving = sum(b.state == "active" for b in s.backends)
        lines += ["", f"{s.name}  {s.vip}:{ports}/{s.protocol}  {s.algorithm}  "
                      f"{serving}/{len(s.backends)} serving"]
        rows: list[tuple[str, ...]] = [("BACKEND", "ADDRESS", "WEIGHT", "STATE", "PACKETS", "BYTES")]
        for b in s.backends + ((s.fallback,) if s.fallback else ()):
            state = b.state if b.state == "active" else b.state.upper()
            name = b.id + (" (fallback)" if b is s.fallback else "")
            rows.append((name, f"{b.address}:{b.port or 'same'}", str(b.weight), state,
                         "-" if b.packets is None else str(b.packets),
                         "-" if b.bytes is None else str(b.bytes)))
        lines += _columns(rows)
    return "\n".join(lines)
