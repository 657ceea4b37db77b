"""The read model: what `hacluster status / members / checks / backends`, the metrics and the
status page show about this agent.

Read-only and callable from any thread (gRPC workers, the metrics listener): it reads the
loop's last published report, Raft's view and the gossip table, and never asks the loop for
anything. Model types out; the admin service converts them to protobuf.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hacluster import __version__
from hacluster.config import Config
from hacluster.consensus.protocol import Consensus
from hacluster.dataplane.status import backends_status
from hacluster.ha.decide import status_sentence
from hacluster.ha.loop import LoopReport
from hacluster.hostops.connsync import ConnSync, NoSync
from hacluster.model import (
    AgentStatus,
    BackendsStatus,
    ChecksStatus,
    CheckState,
    CommittedHealth,
    ConsensusView,
    GossipMemberStatus,
    GossipState,
    MembersStatus,
    MemberStatus,
    NodeChecks,
    PeerLink,
    Role,
    VipStatus,
    is_draining,
    maintenance_on,
)


class StatusViews:
    def __init__(self, config: Config, raft: Consensus, report: Callable[[], LoopReport],
                 clock: Callable[[], float], gossip: Any = None, dataplane: Any = None,
                 sync: ConnSync | None = None):
        """report: the loop's last published LoopReport. gossip: a Membership (or a fake
        with members() and awareness()), or None. dataplane: a DataplaneWorker, or None.
        sync: the connection-state sync, or None (shown as off)."""
        self._config = config
        self._raft = raft
        self._report = report
        self._clock = clock
        self._gossip = gossip
        self._dataplane = dataplane
        self._sync: ConnSync = sync or NoSync()
        self._started = clock()

    def status(self) -> AgentStatus:
        cfg, view, state, rep = self._config, self._raft.view(), self._raft.state, self._report()
        me = cfg.me
        admin = {m.id: m.grpc_endpoint for m in cfg.members}
        members = [MemberStatus(me.id, me.raft_endpoint, True, True, None, admin[me.id], not me.voter)]
        members += [MemberStatus(p.id, p.address, False, p.connected,
                                 None if p.last_ack_age_s is None else p.last_ack_age_s * 1000,
                                 admin.get(p.id, ""))
                    for p in view.peers]
        # non-voters carry no Raft link of their own (read-only nodes): gossip says if they live
        alive = {m.node for m in self._gossip.members() if m.state is GossipState.ALIVE} \
            if self._gossip else set()
        members += [MemberStatus(m.id, m.raft_endpoint, False, m.id in alive, None, m.grpc_endpoint, True)
                    for m in cfg.members if not m.voter and m.id != me.id]
        now = self._clock()
        wall_offset = time.time() - now
        claimed = rep.claimed_at
        return AgentStatus(
            node=cfg.node_id, cluster=cfg.cluster, version=__version__,
            role=view.role, term=view.term, leader=view.leader, lease_ok=view.lease_ok,
            lease_remaining_ms=view.lease_remaining_s * 1000, has_quorum=view.has_quorum,
            handoff=rep.releasing,
            # held: what the kernel has (at the last tick), not what we meant to hold: a
            # release that failed must show (hacluster status then sees two holders)
            vips=tuple(VipStatus(v.address, v.prefixlen, v.interface,
                                 v.address in claimed or v.address in rep.kernel_has,
                                 None if v.address not in claimed
                                 else (claimed[v.address] + wall_offset) * 1000,
                                 rep.waiting.get(v.address, ""))
                       for v in cfg.vips),
            members=tuple(members), sentence=status_sentence(rep.sentence, now - rep.tick_done_at),
            commit_index=view.commit_index, last_applied=view.last_applied,
            epoch_term=state.epoch_term, generation=state.generation,
            uptime_s=now - self._started, maintenance=maintenance_on(state.flags),
            connection_sync=self._sync.status(),
            raft_disk_problem=view.disk_problem, journal_write_errors=view.journal_write_errors,
        )

    def members_status(self) -> MembersStatus:
        view, flags = self._raft.view(), self._raft.state.flags
        out = []
        links = {p.id: p for p in view.peers}
        for m in self._gossip.members() if self._gossip else ():
            checks = m.meta.checks if m.meta else ()
            load = m.meta.load if m.meta else None
            out.append(GossipMemberStatus(
                id=m.node, address=m.address, is_self=m.is_self, state=m.state,
                incarnation=m.incarnation, last_seen_s=m.last_seen_age, state_age_s=m.state_age,
                confirmations=m.confirmations, raft_role=self._raft_role_of(m.node, view, links.get(m.node)),
                checks_passing=sum(c.state is CheckState.PASSING for c in checks),
                # the replicated flag, the fact the balancing table follows: a member's own
                # gossip meta repeats it only at its next publish (seconds later)
                checks_total=len(checks), draining=is_draining(flags, m.node),
                version=m.meta.version if m.meta else "",
                cpu_percent=load.cpu_percent if load else 0.0,
                mem_percent=load.mem_percent if load else 0.0, meta_known=m.meta is not None))
        awareness = self._gossip.awareness() if self._gossip else 0
        return MembersStatus(node=self._config.node_id, awareness=awareness, members=tuple(out))

    def _raft_role_of(self, node: str, view: ConsensusView, link: PeerLink | None) -> str:
        """What this agent can tell about a member's Raft role: a leader knows who answers
        its heartbeats; a follower knows who leads and whose Raft link is up."""
        if node == view.leader:
            return "leader"
        m = self._config.member(node)
        if m is not None and not m.voter:
            return "non-voter"  # a read-only node: no Raft link of its own to judge by
        if view.leader is None:
            return "unknown"
        if node == self._config.node_id:
            return "follower"
        if view.role is Role.LEADER:
            ok = link is not None and link.last_ack_age_s is not None \
                and link.last_ack_age_s < self._config.timing.election_max
        else:
            ok = link is not None and link.connected
        return "follower" if ok else "unreachable"

    def checks_status(self, node: str | None = None) -> ChecksStatus:
        state = self._raft.state
        nodes = tuple(NodeChecks(m.node, m.state, m.meta.checks if m.meta else ())
                      for m in (self._gossip.members() if self._gossip else ())
                      if node is None or m.node == node)
        committed = []
        for key, healthy in sorted(state.health.items()):
            n, _, check = key.partition("/")
            if node is None or n == node:
                committed.append(CommittedHealth(n, check, healthy))
        return ChecksStatus(node=self._config.node_id, nodes=nodes, committed=tuple(committed),
                            generation=state.generation)

    def backends_status(self, _service: str | None = None) -> BackendsStatus:
        """The committed table with this node's data-plane counters (the admin service
        filters by service)."""
        return backends_status(self._config.node_id, self._raft.state, self._dataplane)
