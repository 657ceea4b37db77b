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
    __slots__ = ("node", "cluster", "version", "uptime_s", "role", "term", "leader", "has_quorum", "commit_index", "last_applied", "lease_ok", "lease_remaining_ms", "handoff", "vips", "members", "epoch_term", "generation", "sentence")
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
    LEASE_OK_FIELD_NUMBER: _ClassVar[int]
    LEASE_REMAINING_MS_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    VIPS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_TERM_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_FIELD_NUMBER: _ClassVar[int]
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
    lease_ok: bool
    lease_remaining_ms: float
    handoff: bool
    vips: _containers.RepeatedCompositeFieldContainer[VipStatus]
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    epoch_term: int
    generation: int
    sentence: str
    def __init__(self, node: _Optional[str] = ..., cluster: _Optional[str] = ..., version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., role: _Optional[_Union[Role, str]] = ..., term: _Optional[int] = ..., leader: _Optional[str] = ..., has_quorum: _Optional[bool] = ..., commit_index: _Optional[int] = ..., last_applied: _Optional[int] = ..., lease_ok: _Optional[bool] = ..., lease_remaining_ms: _Optional[float] = ..., handoff: _Optional[bool] = ..., vips: _Optional[_Iterable[_Union[VipStatus, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., epoch_term: _Optional[int] = ..., generation: _Optional[int] = ..., sentence: _Optional[str] = ...) -> None: ...

class VipStatus(_message.Message):
    __slots__ = ("address", "prefixlen", "interface", "held")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIXLEN_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    address: str
    prefixlen: int
    interface: str
    held: bool
    def __init__(self, address: _Optional[str] = ..., prefixlen: _Optional[int] = ..., interface: _Optional[str] = ..., held: _Optional[bool] = ...) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("id", "address", "is_self", "connected", "last_ack_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_ACK_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    is_self: bool
    connected: bool
    last_ack_ms: float
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., is_self: _Optional[bool] = ..., connected: _Optional[bool] = ..., last_ack_ms: _Optional[float] = ...) -> None: ...
