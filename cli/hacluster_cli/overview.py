"""`hacluster status --cluster`: the whole cluster at a glance, from one agent plus the leader.

gather() asks the contacted agent for Status, Members and Backends and, when that agent does
not lead, the leader's Status too: only the leader's view says reliably who holds the VIPs
(each agent reports only what it holds itself). Only the contacted agent's Status is
required; anything else that fails becomes a `missing` note and the screen shows the rest.
overview_screen.py draws the Overview (and runs --watch).

`Overview.to_dict()` (`--json`) has these keys, in this order, in every version:

    cluster            str   the cluster name
    asked              str   the node id of the contacted agent
    asked_role         str   its Raft role: leader, follower, candidate, stopped
    leader             str|null  the leader the contacted agent knows of
    term               int   Raft term (the leader's when it was asked)
    lease_ok           bool|null  the leader's lease; null when the leader was not asked
    lease_remaining_ms float|null
    quorum             bool  (the leader's view when it was asked)
    handoff            bool  the leader is releasing its VIPs in a graceful handoff
    sentence           str   the last tick's sentence of the leader (else the contacted agent)
    vips               [{address ("10.0.0.100/24"), interface, holders [node ids],
                         known (false: the leader was not asked, holders are a guess),
                         waiting (str: why the leader does not hold it yet, e.g. "waiting up
                         to 2 s for n1's address lifetime to end; n1's kernel still
                         answers"; "" when it is not waiting)}]
    members            [{id, is_self, gossip (alive|suspect|dead|left|null), raft_role,
                         raft_link (self|up|down|null, as the leader sees it), checks_passing,
                         checks_total (null: unknown), draining (bool|null)}]
    members_alive      int|null  members ALIVE in gossip (null: Members unavailable)
    services           [{name, vip, ports, protocol, healthy, total, down [ids],
                         draining [ids], disabled [ids], fallback (id|null)}] | null
    table              {node, committed, applied (int|null), dataplane} | null
    events             [{at_unix_ms, node, kind, text}] | null  (null: not gathered: no hook)
    connection_sync    [{node, state (off|ok|down), detail, restarts, last_commit_ms (float|null)}]
                       each agent asked that reports it (older agents do not: left out)
    problems           [str]  what is wrong; empty when nothing is
    missing            [str]  what could not be learned, and why
    healthy            bool  problems and missing are both empty (exit code 0)

Exit code of `hacluster status --cluster`: 0 when `healthy`, 1 otherwise (a problem, or a
part of the cluster that could not be seen: an unverified cluster is not reported healthy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from hacluster.model import (
    AgentStatus,
    BackendsStatus,
    GossipMemberStatus,
    GossipState,
    MembersStatus,
    Role,
    SyncState,
    SyncStatus,
    VipStatus,
)
from hacluster_cli.client import AdminCallError, fetch_backends, fetch_members, fetch_status
from hacluster_cli.render import SYNC_DOWN_COST

LAST_EVENTS = 5


@dataclass(frozen=True)
class OverviewEvent:
    """One cluster event, for the `events` hook of gather() (main.py passes the contacted
    agent's last events).

    The fields are those of the admin Events call's dicts (client.event_from_pb), so the
    hook can be `lambda t, k, to: [OverviewEvent.from_dict(e) for e in
    fetch_events(t, k, 0, LAST_EVENTS, to)]`."""

    at_unix_ms: float
    node: str
    kind: str  # leader, vip, health, table, failover, admin, agent
    text: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OverviewEvent:
        return cls(float(d["at_unix_ms"]), str(d["node"]), str(d.get("kind", "")), str(d["text"]))


# (target, creds, timeout) -> the latest events, oldest first; raises AdminCallError
EventsFetcher = Callable[[str, grpc.ChannelCredentials, float], Sequence[OverviewEvent]]


@dataclass(frozen=True)
class VipLine:
    address: str  # address/prefixlen
    interface: str
    holders: tuple[str, ...]  # nodes whose own status says they hold it, among those asked
    known: bool  # the leader was asked: `holders` is the truth, not a partial view
    waiting: str = ""  # the leader's words on why it does not hold it yet ("": not waiting)


@dataclass(frozen=True)
class MemberLine:
    id: str
    is_self: bool  # the contacted agent
    gossip: GossipState | None  # None: Members unavailable
    raft_role: str
    raft_link: str | None  # self, up, down as the leader sees it; None: leader not asked
    checks_passing: int | None
    checks_total: int | None
    draining: bool | None


@dataclass(frozen=True)
class ServiceLine:
    name: str
    vip: str
    ports: tuple[int, ...]
    protocol: str
    healthy: int  # backends in state active
    total: int
    down: tuple[str, ...]
    draining: tuple[str, ...]
    disabled: tuple[str, ...]
    fallback: str | None


@dataclass(frozen=True)
class TableLine:
    node: str  # whose data plane
    committed: int
    applied: int | None
    dataplane: str


@dataclass(frozen=True)
class SyncLine:
    node: str
    sync: SyncStatus  # as that agent reports it in its own status


@dataclass(frozen=True)
class Overview:
    cluster: str
    asked: str
    asked_role: Role
    leader: str | None
    term: int
    lease_ok: bool | None
    lease_remaining_ms: float | None
    quorum: bool
    handoff: bool
    sentence: str
    sentence_by: str
    vips: tuple[VipLine, ...]
    members: tuple[MemberLine, ...]
    members_alive: int | None
    services: tuple[ServiceLine, ...] | None
    table: TableLine | None
    problems: tuple[str, ...]
    missing: tuple[str, ...]
    events: tuple[OverviewEvent, ...] | None = None  # None: the agent does not serve events
    syncs: tuple[SyncLine, ...] = ()  # the agents asked that report their connection sync

    @property
    def healthy(self) -> bool:
        return not self.problems and not self.missing

    @property
    def exit_code(self) -> int:
        return 0 if self.healthy else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the keys listed in the module docstring."""
        return {
            "cluster": self.cluster, "asked": self.asked, "asked_role": self.asked_role.value,
            "leader": self.leader, "term": self.term, "lease_ok": self.lease_ok,
            "lease_remaining_ms": self.lease_remaining_ms, "quorum": self.quorum,
            "handoff": self.handoff, "sentence": self.sentence,
            "vips": [{"address": v.address, "interface": v.interface, "holders": list(v.holders),
                      "known": v.known, "waiting": v.waiting} for v in self.vips],
            "members": [{"id": m.id, "is_self": m.is_self,
                         "gossip": None if m.gossip is None else m.gossip.value,
                         "raft_role": m.raft_role, "raft_link": m.raft_link,
                         "checks_passing": m.checks_passing, "checks_total": m.checks_total,
                         "draining": m.draining} for m in self.members],
            "members_alive": self.members_alive,
            "services": None if self.services is None else [
                {"name": s.name, "vip": s.vip, "ports": list(s.ports), "protocol": s.protocol,
                 "healthy": s.healthy, "total": s.total, "down": list(s.down),
                 "draining": list(s.draining), "disabled": list(s.disabled),
                 "fallback": s.fallback} for s in self.services],
            "table": None if self.table is None else {
                "node": self.table.node, "committed": self.table.committed,
                "applied": self.table.applied, "dataplane": self.table.dataplane},
            "events": None if self.events is None else [
                {"at_unix_ms": e.at_unix_ms, "node": e.node, "kind": e.kind, "text": e.text}
                for e in self.events],
            "connection_sync": [
                {"node": x.node, "state": x.sync.state.value, "detail": x.sync.detail,
                 "restarts": x.sync.restarts, "last_commit_ms": x.sync.last_commit_ms}
                for x in self.syncs],
            "problems": list(self.problems), "missing": list(self.missing),
            "healthy": self.healthy,
        }


# ------------------------------------------------------------------ gathering


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def gather(target: str, creds: grpc.ChannelCredentials, timeout: float,
           events: EventsFetcher | None = None) -> Overview:
    """Ask the agent at `target` (and the leader, if that is another agent) and sum up.

    Raises AdminCallError only when the contacted agent's own Status fails: then there is
    nothing to show. `events` is the hook for the cluster event feed; without it (today)
    `Overview.events` is None.
    """
    st = fetch_status(target, creds, timeout)
    missing: list[str] = []
    ms: MembersStatus | None = None
    bs: BackendsStatus | None = None
    try:
        ms = fetch_members(target, creds, timeout)
    except AdminCallError as e:
        missing.append(f"gossip members (Members on {st.node}: {_first_line(e)})")
    try:
        bs = fetch_backends(target, creds, None, timeout)
    except AdminCallError as e:
        missing.append(f"services and backends (Backends on {st.node}: {_first_line(e)})")
    leader_st = _leader_status(st, target, creds, timeout, missing)
    # Every other member's own word on the VIPs: a node that failed to let go of one (or a
    # frozen old leader) is a second holder only it can report.
    alive = {m.id for m in ms.members if m.state is GossipState.ALIVE} if ms is not None else set()
    others = []
    for m in st.members:
        if m.id in (st.node, st.leader) or not m.admin_address:
            continue
        try:
            others.append(fetch_status(m.admin_address, creds, timeout))
        except AdminCallError as e:
            if m.id in alive:
                missing.append(f"{m.id}'s own view of the VIPs (alive in gossip, but: {_first_line(e)})")
    got_events: tuple[OverviewEvent, ...] | None = None
    if events is not None:
        try:
            got_events = tuple(events(target, creds, timeout))
        except AdminCallError:
            got_events = None  # the timeline is a convenience: its absence is no problem
    return summarize(st, ms, bs, leader_st, tuple(missing), got_events, tuple(others))


def _leader_status(st: AgentStatus, target: str, creds: grpc.ChannelCredentials, timeout: float,
                   missing: list[str]) -> AgentStatus | None:
    """The leader's own Status (st itself when the contacted agent leads), or None with a
    note in `missing` saying why not. No leader known is a problem, not a missing piece."""
    if st.leader is None:
        return None
    if st.leader == st.node:
        if st.role is not Role.LEADER:
            missing.append(f"the leader's view: {st.node} names itself leader but is "
                           f"{st.role.value} (leadership changing? run again)")
            return None
        return st
    m = next((m for m in st.members if m.id == st.leader), None)
    if m is None or not m.admin_address:
        missing.append(f"the leader's view: {st.node} does not know {st.leader}'s admin address "
                       "(an older agent?); VIP holders are what the agents asked say of themselves")
        return None
    try:
        lst = fetch_status(m.admin_address, creds, timeout)
    except AdminCallError as e:
        missing.append(f"the leader's view: cannot ask {st.leader} at {m.admin_address}: "
                       f"{_first_line(e)}")
        return None
    if lst.role is not Role.LEADER:
        missing.append(f"the leader's view: {lst.node} answered as {lst.role.value}, not leader "
                       "(leadership moved while asking? run again)")
        return None
    return lst


def summarize(st: AgentStatus, ms: MembersStatus | None, bs: BackendsStatus | None,
              leader_st: AgentStatus | None, missing: tuple[str, ...] = (),
              events: tuple[OverviewEvent, ...] | None = None,
              others: tuple[AgentStatus, ...] = ()) -> Overview:
    """The pure part of gather(): build the overview and its problem list from the answers
    (`others`: the other members' own statuses, for the VIPs they say they hold)."""
    view = leader_st or st
    problems: list[str] = []
    if st.leader is None:
        problems.append(f"no leader: {st.node} knows none (an election under way, or no quorum)")
    if not view.has_quorum:
        problems.append(f"no quorum, as {view.node} sees it")
    if view.maintenance:
        problems.append("MAINTENANCE mode is on: the balancing table is frozen and a drained leader "
                        "stays (hacluster maintenance off)")
    if leader_st is not None and not leader_st.lease_ok:
        problems.append(f"the leader {leader_st.node} holds no lease (it may not hold the VIPs)")
    vips = _vips(st, leader_st, problems, others)
    members = _members(st, ms, leader_st, problems)
    services, table = _services(bs, problems)
    syncs = _syncs(st, leader_st, others, problems)
    for s in {s.node: s for s in (st, leader_st, *others) if s is not None}.values():
        if s.raft_disk_problem:  # it cannot keep its Raft journal on disk: it does not lead
            problems.append(f"{s.node}: {s.raft_disk_problem}")
    return Overview(
        cluster=st.cluster, asked=st.node, asked_role=st.role, leader=st.leader,
        term=view.term,
        lease_ok=None if leader_st is None else leader_st.lease_ok,
        lease_remaining_ms=None if leader_st is None else leader_st.lease_remaining_ms,
        quorum=view.has_quorum, handoff=view.handoff, sentence=view.sentence,
        sentence_by=view.node, vips=vips, members=members,
        members_alive=None if ms is None else sum(m.state is GossipState.ALIVE for m in ms.members),
        services=services, table=table, problems=tuple(problems), missing=missing, events=events,
        syncs=syncs)


def _vip_key(v: VipStatus) -> str:
    return f"{v.address}/{v.prefixlen}"


def _vips(st: AgentStatus, leader_st: AgentStatus | None, problems: list[str],
          others: tuple[AgentStatus, ...] = ()) -> tuple[VipLine, ...]:
    asked = [st] if leader_st is None or leader_st is st else [leader_st, st]
    asked += [o for o in others if o.node not in {s.node for s in asked}]
    order: dict[str, str] = {}
    for s in asked:
        for v in s.vips:
            order.setdefault(_vip_key(v), v.interface)
    lines = []
    handoff = " (a handoff is under way)" if leader_st is not None and leader_st.handoff else ""
    for key, interface in order.items():
        holders = tuple(s.node for s in asked if any(_vip_key(v) == key and v.held for v in s.vips))
        # the leader's own word on a claim it holds back (an old holder's kernel still answers)
        waiting = "" if leader_st is None or holders else next(
            (v.waiting for v in leader_st.vips if _vip_key(v) == key), "")
        lines.append(VipLine(key, interface, holders, leader_st is not None, waiting))
        if leader_st is not None and waiting:
            problems.append(f"VIP {key} is not held yet: the leader {leader_st.node} is {waiting}")
        elif leader_st is not None and not holders:
            problems.append(f"VIP {key} is held by no one: the leader {leader_st.node} does not "
                            f"hold it{handoff}")
        elif len(holders) > 1:
            problems.append(f"VIP {key} is held by {' and '.join(holders)} at once")
        elif holders and holders[0] != st.leader:
            problems.append(f"VIP {key} is held by {holders[0]}, which is not the leader "
                            f"({st.leader or 'none known'})")
    return tuple(lines)


def _members(st: AgentStatus, ms: MembersStatus | None, leader_st: AgentStatus | None,
             problems: list[str]) -> tuple[MemberLine, ...]:
    gossip: dict[str, GossipMemberStatus] = {m.id: m for m in ms.members} if ms else {}
    links = {m.id: ("self" if m.is_self else "up" if m.connected else "down")
             for m in leader_st.members} if leader_st else {}
    ids = list(dict.fromkeys([m.id for m in st.members] + list(gossip)))
    lines = []
    for mid in ids:
        g = gossip.get(mid)
        known = g is not None and g.meta_known
        role = g.raft_role if g is not None else (
            st.role.value if mid == st.node else "leader" if mid == st.leader else "-")
        lines.append(MemberLine(
            id=mid, is_self=mid == st.node, gossip=None if g is None else g.state,
            raft_role=role, raft_link=links.get(mid),
            checks_passing=g.checks_passing if known else None,
            checks_total=g.checks_total if known else None,
            draining=None if g is None else g.draining))  # replicated: known without meta
        why = []
        if g is not None and g.state in (GossipState.DEAD, GossipState.SUSPECT):
            why.append(f"{g.state.value.upper()} in gossip (as {ms.node if ms else '?'} sees it)")
        if links.get(mid) == "down":
            why.append(f"no Raft link from the leader {st.leader}")
        if ms is not None and g is None:
            why.append(f"unknown to gossip on {ms.node}")
        if why:
            problems.append(f"member {mid}: " + ", ".join(why))
    return tuple(lines)


def _syncs(st: AgentStatus, leader_st: AgentStatus | None, others: tuple[AgentStatus, ...],
           problems: list[str]) -> tuple[SyncLine, ...]:
    """Each answering agent's own word on its connection sync, in the members' order; a
    sync that is down anywhere is a problem (the VIP may move to or from that agent)."""
    answered = {s.node: s for s in (st, leader_st, *others) if s is not None}
    order = list(dict.fromkeys([m.id for m in st.members] + list(answered)))
    lines = []
    for node in order:
        s = answered.get(node)
        if s is None or s.connection_sync is None:  # not asked, or older than the field
            continue
        lines.append(SyncLine(node, s.connection_sync))
        if s.connection_sync.state is SyncState.DOWN:
            why = f" ({s.connection_sync.detail})" if s.connection_sync.detail else ""
            problems.append(f"connection sync DOWN on {node}{why}: {SYNC_DOWN_COST} to or from "
                            f"{node}")
    return tuple(lines)


def _services(bs: BackendsStatus | None,
              problems: list[str]) -> tuple[tuple[ServiceLine, ...] | None, TableLine | None]:
    if bs is None:
        return None, None
    lines = []
    for s in bs.services:
        ids = {state: tuple(b.id for b in s.backends if b.state == state)
               for state in ("active", "down", "draining", "disabled")}
        line = ServiceLine(s.name, s.vip, s.ports, s.protocol, len(ids["active"]), len(s.backends),
                           ids["down"], ids["draining"], ids["disabled"],
                           s.fallback.id if s.fallback else None)
        lines.append(line)
        if line.down:
            problems.append(f"service {s.name}: backend{'s' if len(line.down) > 1 else ''} "
                            f"{', '.join(line.down)} down")
        if line.total and not line.healthy:
            rescue = f" (fallback {line.fallback} takes its traffic)" if line.fallback else ""
            problems.append(f"service {s.name}: no backend serving{rescue}")
    table = TableLine(bs.node, bs.table_generation, bs.applied_generation, bs.dataplane)
    if bs.table_generation and bs.applied_generation != bs.table_generation:
        applied = "none" if bs.applied_generation is None else str(bs.applied_generation)
        problems.append(f"balancing table generation {bs.table_generation} is committed but "
                        f"{applied} is applied in {bs.node}'s data plane ({bs.dataplane})")
    return tuple(lines), table
