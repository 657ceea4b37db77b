"""RaftNode.view(): the agent's read of Raft (role, lease, quorum, each member's link).

Read from the agent's thread: single fields of the RaftNode and of pysyncobj, each atomic
under the GIL (raft.py, "Threading").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hacluster.consensus.pysyncobj_compat import CANDIDATE, FOLLOWER, LEADER
from hacluster.model import ConsensusView, PeerLink, Role

log = logging.getLogger("hacluster.raft")

if TYPE_CHECKING:
    from hacluster.consensus.raft import RaftNode


_ROLES = {FOLLOWER: Role.FOLLOWER, CANDIDATE: Role.CANDIDATE, LEADER: Role.LEADER}


def role_of(state: int) -> Role:
    """Our Role for one of pysyncobj's states (STOPPED for anything else)."""
    return _ROLES.get(state, Role.STOPPED)


def consensus_view(node: RaftNode) -> ConsensusView:
    from hacluster.consensus import raft  # its _now, looked up at call time (tests drive it)

    s = node._sync
    now = raft._now()
    if s is None:
        return ConsensusView(Role.STOPPED, 0, None, False, 0.0, False, False, False, 0, 0)
    is_leader = s.is_leader()
    state = s.raft_state()
    term = s.term
    leader = node._by_addr.get(s.leader_address() or "", None)
    remaining = max(0.0, node.lease_expiry - now) if is_leader else 0.0
    # A peer that has not acked since we became leader has been silent at least that
    # long: a dead old leader's backends need not wait for gossip's dead verdict.
    tcp = node._tcp_silence
    peers = tuple(
        PeerLink(m.id, m.raft_endpoint, _connected(s, m.raft_endpoint),
                 (now - node._acks.get(m.id, node.leader_since)) if is_leader else None,
                 tcp.get(m.id) if is_leader else None)
        for m in node.config.peers if m.voter  # a non-voter's link carries no vote
    )
    # The non-voting members: no vote, but the leader judges their silence as a voter's (a
    # powered-off one's backends leave on Raft silence + SUSPECT, not at gossip's DEAD).
    observers = tuple(
        PeerLink(m.id, m.raft_endpoint, m.id in tcp,
                 node.observer_silence(m.id, now) if is_leader else None,
                 tcp.get(m.id) if is_leader else None)
        for m in node.config.peers if not m.voter
    )
    connected = sum(1 for p in peers if p.connected) + (0 if node.readonly else 1)
    lease_ok = is_leader and now < node.lease_expiry
    if node.lease_seen_ok and not lease_ok and is_leader:  # once per loss: what the acks were
        log.warning("lease lost (term %d): the newest heartbeat each voter acked was sent %s ago; "
                    "a majority within lease_ms (%.0f ms) keeps it", term,
                    ", ".join(f"{p.id} {p.last_ack_age_s * 1000:.0f} ms" for p in peers
                              if p.last_ack_age_s is not None), node.lease_s * 1000)
    node.lease_seen_ok = lease_ok
    return ConsensusView(
        role=role_of(state),
        term=term,
        leader=leader,
        lease_ok=lease_ok,
        lease_remaining_s=min(remaining, 3600.0),
        epoch_applied=is_leader and node._epoch_term_applied >= term,
        won_by_transfer=node.won_by_transfer,
        has_quorum=lease_ok or connected > node._n // 2,
        commit_index=s.commit_index,
        last_applied=s.last_applied,
        peers=peers, observers=observers,
        disk_problem=node._disk.problem, journal_write_errors=node._disk.write_errors,
    )


def _connected(s: Any, endpoint: str) -> bool:
    for peer in s.other_nodes():
        if getattr(peer, "address", None) == endpoint:
            return s.is_connected(peer)
    return False
