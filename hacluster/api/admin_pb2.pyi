from hacluster.api import gossip_pb2 as _gossip_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_LEADER: _ClassVar[Role]
    ROLE_FOLLOWER: _ClassVar[Role]
    ROLE_CANDIDATE: _ClassVar[Role]
    ROLE_STOPPED: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_LEADER: Role
ROLE_FOLLOWER: Role
ROLE_CANDIDATE: Role
ROLE_STOPPED: Role

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node", "cluster", "version", "uptime_s", "role", "term", "leader", "has_quorum", "commit_index", "last_applied", "raft_disk_problem", "journal_write_errors", "lease_ok", "lease_remaining_ms", "handoff", "vips", "members", "epoch_term", "generation", "maintenance", "sentence", "connection_sync")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_FIELD_NUMBER: _ClassVar[int]
    RAFT_DISK_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_WRITE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    LEASE_OK_FIELD_NUMBER: _ClassVar[int]
    LEASE_REMAINING_MS_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    VIPS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_TERM_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_SYNC_FIELD_NUMBER: _ClassVar[int]
    node: str
    cluster: str
    version: str
    uptime_s: float
    role: Role
    term: int
    leader: str
    has_quorum: bool
    commit_index: int
    last_applied: int
    raft_disk_problem: str
    journal_write_errors: int
    lease_ok: bool
    lease_remaining_ms: float
    handoff: bool
    vips: _containers.RepeatedCompositeFieldContainer[VipStatus]
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    epoch_term: int
    generation: int
    maintenance: bool
    sentence: str
    connection_sync: SyncStatus
    def __init__(self, node: _Optional[str] = ..., cluster: _Optional[str] = ..., version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., role: _Optional[_Union[Role, str]] = ..., term: _Optional[int] = ..., leader: _Optional[str] = ..., has_quorum: _Optional[bool] = ..., commit_index: _Optional[int] = ..., last_applied: _Optional[int] = ..., raft_disk_problem: _Optional[str] = ..., journal_write_errors: _Optional[int] = ..., lease_ok: _Optional[bool] = ..., lease_remaining_ms: _Optional[float] = ..., handoff: _Optional[bool] = ..., vips: _Optional[_Iterable[_Union[VipStatus, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., epoch_term: _Optional[int] = ..., generation: _Optional[int] = ..., maintenance: _Optional[bool] = ..., sentence: _Optional[str] = ..., connection_sync: _Optional[_Union[SyncStatus, _Mapping]] = ...) -> None: ...

class SyncStatus(_message.Message):
    __slots__ = ("state", "detail", "restarts", "last_commit_ms")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMIT_MS_FIELD_NUMBER: _ClassVar[int]
    state: str
    detail: str
    restarts: int
    last_commit_ms: float
    def __init__(self, state: _Optional[str] = ..., detail: _Optional[str] = ..., restarts: _Optional[int] = ..., last_commit_ms: _Optional[float] = ...) -> None: ...

class VipStatus(_message.Message):
    __slots__ = ("address", "prefixlen", "interface", "held", "claimed_at_unix_ms", "waiting")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIXLEN_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    address: str
    prefixlen: int
    interface: str
    held: bool
    claimed_at_unix_ms: float
    waiting: str
    def __init__(self, address: _Optional[str] = ..., prefixlen: _Optional[int] = ..., interface: _Optional[str] = ..., held: _Optional[bool] = ..., claimed_at_unix_ms: _Optional[float] = ..., waiting: _Optional[str] = ...) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("id", "address", "is_self", "connected", "last_ack_ms", "admin_address", "non_voter")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_ACK_MS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NON_VOTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    is_self: bool
    connected: bool
    last_ack_ms: float
    admin_address: str
    non_voter: bool
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., is_self: _Optional[bool] = ..., connected: _Optional[bool] = ..., last_ack_ms: _Optional[float] = ..., admin_address: _Optional[str] = ..., non_voter: _Optional[bool] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembersReply(_message.Message):
    __slots__ = ("node", "awareness", "members")
    NODE_FIELD_NUMBER: _ClassVar[int]
    AWARENESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    node: str
    awareness: int
    members: _containers.RepeatedCompositeFieldContainer[GossipMember]
    def __init__(self, node: _Optional[str] = ..., awareness: _Optional[int] = ..., members: _Optional[_Iterable[_Union[GossipMember, _Mapping]]] = ...) -> None: ...

class GossipMember(_message.Message):
    __slots__ = ("id", "address", "is_self", "state", "incarnation", "last_seen_s", "state_age_s", "confirmations", "raft_role", "checks_passing", "checks_total", "draining", "version", "cpu_percent", "mem_percent", "meta_known")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_S_FIELD_NUMBER: _ClassVar[int]
    STATE_AGE_S_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    RAFT_ROLE_FIELD_NUMBER: _ClassVar[int]
    CHECKS_PASSING_FIELD_NUMBER: _ClassVar[int]
    CHECKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEM_PERCENT_FIELD_NUMBER: _ClassVar[int]
    META_KNOWN_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    is_self: bool
    state: _gossip_pb2.GossipState
    incarnation: int
    last_seen_s: float
    state_age_s: float
    confirmations: int
    raft_role: str
    checks_passing: int
    checks_total: int
    draining: bool
    version: str
    cpu_percent: float
    mem_percent: float
    meta_known: bool
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., is_self: _Optional[bool] = ..., state: _Optional[_Union[_gossip_pb2.GossipState, str]] = ..., incarnation: _Optional[int] = ..., last_seen_s: _Optional[float] = ..., state_age_s: _Optional[float] = ..., confirmations: _Optional[int] = ..., raft_role: _Optional[str] = ..., checks_passing: _Optional[int] = ..., checks_total: _Optional[int] = ..., draining: _Optional[bool] = ..., version: _Optional[str] = ..., cpu_percent: _Optional[float] = ..., mem_percent: _Optional[float] = ..., meta_known: _Optional[bool] = ...) -> None: ...

class ChecksRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class ChecksReply(_message.Message):
    __slots__ = ("node", "nodes", "committed", "generation")
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    node: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeChecks]
    committed: _containers.RepeatedCompositeFieldContainer[CommittedHealth]
    generation: int
    def __init__(self, node: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeChecks, _Mapping]]] = ..., committed: _Optional[_Iterable[_Union[CommittedHealth, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class NodeChecks(_message.Message):
    __slots__ = ("node", "state", "checks")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    node: str
    state: _gossip_pb2.GossipState
    checks: _containers.RepeatedCompositeFieldContainer[_gossip_pb2.CheckReport]
    def __init__(self, node: _Optional[str] = ..., state: _Optional[_Union[_gossip_pb2.GossipState, str]] = ..., checks: _Optional[_Iterable[_Union[_gossip_pb2.CheckReport, _Mapping]]] = ...) -> None: ...

class CommittedHealth(_message.Message):
    __slots__ = ("node", "check", "healthy")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    node: str
    check: str
    healthy: bool
    def __init__(self, node: _Optional[str] = ..., check: _Optional[str] = ..., healthy: _Optional[bool] = ...) -> None: ...

class BackendsRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class BackendsReply(_message.Message):
    __slots__ = ("node", "table_generation", "applied_generation", "dataplane", "services")
    NODE_FIELD_NUMBER: _ClassVar[int]
    TABLE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    DATAPLANE_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    node: str
    table_generation: int
    applied_generation: int
    dataplane: str
    services: _containers.RepeatedCompositeFieldContainer[ServiceView]
    def __init__(self, node: _Optional[str] = ..., table_generation: _Optional[int] = ..., applied_generation: _Optional[int] = ..., dataplane: _Optional[str] = ..., services: _Optional[_Iterable[_Union[ServiceView, _Mapping]]] = ...) -> None: ...

class ServiceView(_message.Message):
    __slots__ = ("name", "vip", "protocol", "ports", "algorithm", "backends", "fallback")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIP_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    name: str
    vip: str
    protocol: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    algorithm: str
    backends: _containers.RepeatedCompositeFieldContainer[BackendView]
    fallback: BackendView
    def __init__(self, name: _Optional[str] = ..., vip: _Optional[str] = ..., protocol: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., algorithm: _Optional[str] = ..., backends: _Optional[_Iterable[_Union[BackendView, _Mapping]]] = ..., fallback: _Optional[_Union[BackendView, _Mapping]] = ...) -> None: ...

class BackendView(_message.Message):
    __slots__ = ("id", "address", "port", "weight", "state", "packets", "bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    port: int
    weight: int
    state: str
    packets: int
    bytes: int
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., port: _Optional[int] = ..., weight: _Optional[int] = ..., state: _Optional[str] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("target", "undo", "disable")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    DISABLE_FIELD_NUMBER: _ClassVar[int]
    target: str
    undo: bool
    disable: bool
    def __init__(self, target: _Optional[str] = ..., undo: _Optional[bool] = ..., disable: _Optional[bool] = ...) -> None: ...

class DrainReply(_message.Message):
    __slots__ = ("detail", "generation")
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    detail: str
    generation: int
    def __init__(self, detail: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class WeightRequest(_message.Message):
    __slots__ = ("service", "backend", "weight")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    service: str
    backend: str
    weight: int
    def __init__(self, service: _Optional[str] = ..., backend: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class WeightReply(_message.Message):
    __slots__ = ("detail", "generation")
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    detail: str
    generation: int
    def __init__(self, detail: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class FailoverRequest(_message.Message):
    __slots__ = ("to", "dry_run", "timeout_s")
    TO_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    to: str
    dry_run: bool
    timeout_s: float
    def __init__(self, to: _Optional[str] = ..., dry_run: _Optional[bool] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class FailoverReply(_message.Message):
    __slots__ = ("source", "target", "vips", "dry_run", "detail", "released_at_unix_ms", "handed_over_ms")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VIPS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RELEASED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HANDED_OVER_MS_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    vips: _containers.RepeatedScalarFieldContainer[str]
    dry_run: bool
    detail: str
    released_at_unix_ms: float
    handed_over_ms: float
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., vips: _Optional[_Iterable[str]] = ..., dry_run: _Optional[bool] = ..., detail: _Optional[str] = ..., released_at_unix_ms: _Optional[float] = ..., handed_over_ms: _Optional[float] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("after_seq", "follow", "limit")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    follow: bool
    limit: int
    def __init__(self, after_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "at_unix_ms", "node", "kind", "text", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at_unix_ms: float
    node: str
    kind: str
    text: str
    fields: _containers.ScalarMap[str, str]
    def __init__(self, seq: _Optional[int] = ..., at_unix_ms: _Optional[float] = ..., node: _Optional[str] = ..., kind: _Optional[str] = ..., text: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ChangeMembersRequest(_message.Message):
    __slots__ = ("op", "node", "new_node", "address", "raft_port", "grpc_port", "non_voter", "allow_even")
    OP_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NEW_NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RAFT_PORT_FIELD_NUMBER: _ClassVar[int]
    GRPC_PORT_FIELD_NUMBER: _ClassVar[int]
    NON_VOTER_FIELD_NUMBER: _ClassVar[int]
    ALLOW_EVEN_FIELD_NUMBER: _ClassVar[int]
    op: str
    node: str
    new_node: str
    address: str
    raft_port: int
    grpc_port: int
    non_voter: bool
    allow_even: bool
    def __init__(self, op: _Optional[str] = ..., node: _Optional[str] = ..., new_node: _Optional[str] = ..., address: _Optional[str] = ..., raft_port: _Optional[int] = ..., grpc_port: _Optional[int] = ..., non_voter: _Optional[bool] = ..., allow_even: _Optional[bool] = ...) -> None: ...

class ChangeMembersReply(_message.Message):
    __slots__ = ("detail", "steps", "members_generation")
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_GENERATION_FIELD_NUMBER: _ClassVar[int]
    detail: str
    steps: _containers.RepeatedScalarFieldContainer[str]
    members_generation: int
    def __init__(self, detail: _Optional[str] = ..., steps: _Optional[_Iterable[str]] = ..., members_generation: _Optional[int] = ...) -> None: ...

class MaintenanceRequest(_message.Message):
    __slots__ = ("on",)
    ON_FIELD_NUMBER: _ClassVar[int]
    on: bool
    def __init__(self, on: _Optional[bool] = ...) -> None: ...

class MaintenanceReply(_message.Message):
    __slots__ = ("detail", "generation")
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    detail: str
    generation: int
    def __init__(self, detail: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("dry_run",)
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    def __init__(self, dry_run: _Optional[bool] = ...) -> None: ...

class ReloadReply(_message.Message):
    __slots__ = ("applied", "dry_run", "detail", "source", "changes", "restart_keys", "ignored", "errors", "warnings")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    RESTART_KEYS_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    dry_run: bool
    detail: str
    source: str
    changes: _containers.RepeatedScalarFieldContainer[str]
    restart_keys: _containers.RepeatedCompositeFieldContainer[RestartKey]
    ignored: _containers.RepeatedScalarFieldContainer[str]
    errors: _containers.RepeatedScalarFieldContainer[str]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, applied: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., detail: _Optional[str] = ..., source: _Optional[str] = ..., changes: _Optional[_Iterable[str]] = ..., restart_keys: _Optional[_Iterable[_Union[RestartKey, _Mapping]]] = ..., ignored: _Optional[_Iterable[str]] = ..., errors: _Optional[_Iterable[str]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class RestartKey(_message.Message):
    __slots__ = ("key", "reason")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    key: str
    reason: str
    def __init__(self, key: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
