"""Frozen value types shared by every part of hacluster.

Nothing here does I/O. Protobuf and pysyncobj types are converted to these at the edges
(admin.py, gossip/, consensus/raft.py) and never travel further inside the agent.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

NodeId = str


class Role(enum.StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    STOPPED = "stopped"


# The replicated admin flags (ReplicatedState.flags): their names and meaning, said once for
# the loop, the leader's duties, failover planning, the table builder and the admin actions.
MAINTENANCE_FLAG = "maintenance"  # "true": table frozen, no automatic handoff


def draining_flag(node: str) -> str:
    return f"draining/{node}"  # "true": no new flows to node's backends, not eligible to lead


def maintenance_on(flags: Mapping[str, str]) -> bool:
    return flags.get(MAINTENANCE_FLAG) == "true"


def is_draining(flags: Mapping[str, str], node: str) -> bool:
    return flags.get(draining_flag(node)) == "true"


@dataclass(frozen=True)
class Vip:
    """A virtual IP: the address, its prefix length and the interface it lives on."""

    address: str
    prefixlen: int
    interface: str

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.address)

    @property
    def family(self) -> int:
        return self.ip.version

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen} on {self.interface}"


@dataclass(frozen=True)
class Member:
    """A cluster member as configured: where its Raft and gRPC ports are."""

    id: NodeId
    address: str
    raft_port: int
    grpc_port: int
    voter: bool = True  # False: a non-voting member (pysyncobj read-only node)

    @property
    def raft_endpoint(self) -> str:
        return f"{self.address}:{self.raft_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.address}:{self.grpc_port}"


@dataclass(frozen=True)
class PeerLink:
    """Raft's view of one other member: whether its TCP link is up right now."""

    id: NodeId
    address: str
    connected: bool
    last_ack_age_s: float | None  # leader only: time since its last acknowledged heartbeat
    # leader only: how long its kernel has left our Raft traffic unacknowledged (TCP; 0 when
    # nothing is in flight; None when unknown or not read: only read while its Raft acks are
    # late). A starved process's kernel still acks.
    tcp_silent_s: float | None = None


@dataclass(frozen=True)
class ConsensusView:
    """One consistent read of the Raft layer, taken at the start of a tick."""

    role: Role
    term: int
    leader: NodeId | None
    lease_ok: bool
    lease_remaining_s: float
    epoch_applied: bool  # this leader's epoch entry for its current term is applied here
    won_by_transfer: bool  # leadership came from a graceful transfer: claim without probing
    has_quorum: bool
    commit_index: int
    last_applied: int
    peers: tuple[PeerLink, ...] = ()  # the voters
    observers: tuple[PeerLink, ...] = ()  # the non-voting members (connected: to the leader)
    disk_problem: str = ""  # what keeps the Raft journal off its disk (full, failing); "" if none
    journal_write_errors: int = 0  # failed journal allocations, writes and flushes since start


@dataclass(frozen=True)
class VipState:
    """What the agent currently knows about one VIP on this host."""

    vip: Vip
    present: bool  # the kernel holds the address on the interface right now


@dataclass(frozen=True)
class Snapshot:
    """Everything decide() may look at: one consistent picture of the world."""

    now: float  # monotonic seconds
    node: NodeId
    consensus: ConsensusView
    vips: tuple[VipState, ...]
    handoff: bool  # a graceful handoff is under way: hold nothing
    maintenance: bool = False
    claimed_at: dict[str, float] = field(default_factory=dict)  # vip -> when we claimed it


@dataclass(frozen=True)
class VipStatus:
    address: str
    prefixlen: int
    interface: str
    held: bool  # this node holds it right now
    claimed_at_unix_ms: float | None = None  # when this node claimed it (wall clock), if held
    # why this node, which should hold it, does not yet (a new leader waiting for an old
    # holder's kernel to let the address go); "" when it is not waiting
    waiting: str = ""


@dataclass(frozen=True)
class MemberStatus:
    id: NodeId
    address: str  # Raft endpoint host:port
    is_self: bool
    connected: bool  # Raft TCP link up (always True for self)
    last_ack_ms: float | None  # leader only: age of the newest acknowledged heartbeat
    admin_address: str = ""  # its admin API host:port
    non_voter: bool = False  # a non-voting member (issue 16); connected = gossip sees it alive


@dataclass(frozen=True)
class AgentStatus:
    """What `hacluster status` shows for one agent. Built by the agent, served by admin.py."""

    node: NodeId
    cluster: str
    version: str
    role: Role
    term: int
    leader: NodeId | None
    lease_ok: bool
    lease_remaining_ms: float
    has_quorum: bool
    handoff: bool
    vips: tuple[VipStatus, ...]
    members: tuple[MemberStatus, ...]
    sentence: str  # the last tick's one-line status sentence
    commit_index: int
    last_applied: int
    epoch_term: int  # highest leader epoch in the replicated state
    generation: int  # replicated state generation
    uptime_s: float
    maintenance: bool = False  # cluster-wide maintenance mode (table frozen)
    connection_sync: SyncStatus | None = None  # None: an agent without the field (older)
    raft_disk_problem: str = ""  # why the Raft journal cannot be kept on disk (full, failing)
    journal_write_errors: int = 0  # failed journal allocations, writes, flushes since start


# ------------------------------------------------------------------ connection-state sync


class SyncState(enum.StrEnum):
    """Connection-state sync (conntrackd) on one agent, as `hacluster status` shows it."""

    OFF = "off"  # not configured (conntrack_sync: off, or auto without conntrackd installed)
    OK = "ok"  # conntrackd runs: established flows survive a move of the VIP
    DOWN = "down"  # configured but not running: flows through the VIP break when it moves


@dataclass(frozen=True)
class SyncStatus:
    state: SyncState
    detail: str = ""  # why it is off or down; the transport when ok
    restarts: int = 0  # times the agent restarted conntrackd
    last_commit_ms: float | None = None  # how long the last claim's commit of the synced flows took


@dataclass(frozen=True)
class SyncSettings:
    """What the config asks of the connection-state sync (config.py builds it; the agent
    resolves `auto` when it starts, by looking for conntrackd)."""

    mode: str = "off"  # off | auto | on
    interface: str = ""  # the sync link's interface
    address: str = ""  # this member's address on it (conntrackd binds there)
    peers: tuple[str, ...] = ()  # the other members' addresses
    transport: str = "auto"  # auto (unicast for 2 members, multicast for more) | unicast | multicast
    port: int = 3780
    multicast_group: str = "225.0.0.50"
    commit_timeout: float = 0.1  # seconds a claim may wait for the commit of the synced flows


# ------------------------------------------------------------------ health and gossip


class CheckState(enum.StrEnum):
    """A health check's verdict after rise/fall hysteresis on the node that runs it."""

    PASSING = "passing"
    FAILING = "failing"
    UNKNOWN = "unknown"  # not enough results yet (fewer than `rise` or `fall` in a row)


@dataclass(frozen=True)
class CheckReport:
    """The latest state of one health check on one node: what gossip carries about it."""

    name: str
    kind: str  # tcp, http, https, exec, mllp, dicom, sip
    target: str  # what it checks, for humans: host:port, URL or command
    state: CheckState
    latency_ms: float | None  # of the last attempt; None when it did not complete
    error: str  # the last failure's reason ("" after a success)
    output: str = ""  # exec checks: the captured output (truncated)
    changed_at: float = 0.0  # unix time of the last state change (0: never changed)


@dataclass(frozen=True)
class Load:
    cpu_percent: float = 0.0
    mem_percent: float = 0.0


class GossipState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"  # announced its own departure (graceful leave)


@dataclass(frozen=True)
class GossipMemberStatus:
    """One line of `hacluster members`."""

    id: NodeId
    address: str  # gossip endpoint host:port
    is_self: bool
    state: GossipState
    incarnation: int
    last_seen_s: float | None  # None: never heard from directly
    state_age_s: float
    confirmations: int
    raft_role: str  # "leader", "follower" or "unknown", as the answering agent sees it
    checks_passing: int
    checks_total: int
    draining: bool
    version: str
    cpu_percent: float
    mem_percent: float
    meta_known: bool


@dataclass(frozen=True)
class MembersStatus:
    node: NodeId  # the agent that answered
    awareness: int
    members: tuple[GossipMemberStatus, ...]


@dataclass(frozen=True)
class NodeChecks:
    node: NodeId
    state: GossipState
    checks: tuple[CheckReport, ...]


@dataclass(frozen=True)
class CommittedHealth:
    node: NodeId
    check: str
    healthy: bool


@dataclass(frozen=True)
class ChecksStatus:
    node: NodeId  # the agent that answered
    nodes: tuple[NodeChecks, ...]
    committed: tuple[CommittedHealth, ...]
    generation: int


@dataclass(frozen=True)
class BackendStatus:
    id: str
    address: str
    port: int
    weight: int
    state: str  # active, draining, disabled, down
    packets: int | None = None  # this agent's data plane counters (None: unknown)
    bytes: int | None = None


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    vip: str
    protocol: str
    ports: tuple[int, ...]
    algorithm: str
    backends: tuple[BackendStatus, ...]
    fallback: BackendStatus | None = None


@dataclass(frozen=True)
class BackendsStatus:
    """What `hacluster backends` shows: the committed table and this agent's data plane."""

    node: NodeId
    table_generation: int
    applied_generation: int | None
    dataplane: str
    services: tuple[ServiceStatus, ...]


@dataclass(frozen=True)
class TlsFiles:
    """Where a certificate, its key and the cluster CA are (config `tls`; hacluster/tls.py)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
