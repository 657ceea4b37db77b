"""Gossip value types and the Transport interface (DESIGN.md §5, STYLE.md §3).

The membership engine (membership.py) speaks only these types. The gRPC transport
(grpc_transport.py) converts them to and from protobuf at the edge; tests use an in-memory
transport with the same methods (memberlist's `Transport` + `MockTransport`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hacluster.model import CheckReport, GossipState, Load, NodeId

__all__ = ["Ack", "GossipState", "GossipTiming", "NodeMeta", "NodeRecord", "Transport"]


@dataclass(frozen=True)
class GossipTiming:
    """Seconds and multipliers; the defaults suit a hospital LAN (sub-millisecond RTT)."""

    probe_interval: float = 0.5
    probe_timeout: float = 0.2  # must stay well below probe_interval: ping-reqs use the rest
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    push_pull_interval: float = 10.0
    reconnect_interval: float = 2.0  # dead/left members retried with a push-pull this often
    awareness_max: int = 8
    max_updates_per_message: int = 16  # bound on piggybacked records per message


@dataclass(frozen=True)
class NodeMeta:
    """What a node tells the cluster about itself, besides being alive."""

    checks: tuple[CheckReport, ...] = ()
    load: Load = Load()
    draining: bool = False
    version: str = ""


@dataclass(frozen=True)
class NodeRecord:
    """One claim about one member, as gossiped.

    Ordering (SWIM): a record about a node supersedes another by incarnation first. Only
    the node itself raises its incarnation (to refute a suspicion, or on restart past what
    the cluster remembers). For ALIVE records of the same incarnation, a higher meta_seq
    carries newer meta; suspect/dead/left records carry no meta. Meta and LEFT count only
    from the node itself, and others move its incarnation only so far (provenance.py).
    """

    node: NodeId
    address: str  # gossip endpoint host:port
    incarnation: int
    state: GossipState
    origin: NodeId = ""  # who declared it suspect/dead ("" for alive; node itself for left)
    meta_seq: int = 0
    meta: NodeMeta | None = None


@dataclass(frozen=True)
class Ack:
    """A probe's answer: the responder's own ALIVE record plus piggybacked updates."""

    responder: NodeRecord
    updates: tuple[NodeRecord, ...] = ()


class Transport(Protocol):
    """How the engine reaches other members. Every call is bounded by `timeout` (seconds)
    and returns None (or False) when the other side did not answer in time; none raises
    for network errors."""

    def ping(self, address: str, updates: tuple[NodeRecord, ...], timeout: float) -> Ack | None:
        """Direct probe of the member at `address`, carrying piggybacked updates."""

    def ping_req(self, vias: list[str], target: NodeId, target_address: str,
                 timeout: float) -> list[bool | None]:
        """Ask each member in `vias` (addresses), in parallel, to probe `target` for us.
        Per via: True = the target acked through it, False = the via answered with a nack
        (it could not reach the target), None = the via itself did not answer."""

    def gossip(self, address: str, updates: tuple[NodeRecord, ...]) -> None:
        """Fire-and-forget delivery of updates (no answer awaited)."""

    def push_pull(self, address: str, records: tuple[NodeRecord, ...], join: bool,
                  timeout: float) -> tuple[NodeRecord, ...] | None:
        """Full-state exchange: send ours, get theirs (None: no answer)."""
