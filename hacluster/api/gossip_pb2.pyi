from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GossipState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GOSSIP_STATE_UNSPECIFIED: _ClassVar[GossipState]
    GOSSIP_STATE_ALIVE: _ClassVar[GossipState]
    GOSSIP_STATE_SUSPECT: _ClassVar[GossipState]
    GOSSIP_STATE_DEAD: _ClassVar[GossipState]
    GOSSIP_STATE_LEFT: _ClassVar[GossipState]

class CheckState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATE_UNSPECIFIED: _ClassVar[CheckState]
    CHECK_STATE_PASSING: _ClassVar[CheckState]
    CHECK_STATE_FAILING: _ClassVar[CheckState]
    CHECK_STATE_UNKNOWN: _ClassVar[CheckState]
GOSSIP_STATE_UNSPECIFIED: GossipState
GOSSIP_STATE_ALIVE: GossipState
GOSSIP_STATE_SUSPECT: GossipState
GOSSIP_STATE_DEAD: GossipState
GOSSIP_STATE_LEFT: GossipState
CHECK_STATE_UNSPECIFIED: CheckState
CHECK_STATE_PASSING: CheckState
CHECK_STATE_FAILING: CheckState
CHECK_STATE_UNKNOWN: CheckState

class CheckReport(_message.Message):
    __slots__ = ("name", "kind", "target", "state", "latency_ms", "error", "output", "changed_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    target: str
    state: CheckState
    latency_ms: float
    error: str
    output: str
    changed_at: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., target: _Optional[str] = ..., state: _Optional[_Union[CheckState, str]] = ..., latency_ms: _Optional[float] = ..., error: _Optional[str] = ..., output: _Optional[str] = ..., changed_at: _Optional[float] = ...) -> None: ...

class NodeMeta(_message.Message):
    __slots__ = ("checks", "cpu_percent", "mem_percent", "draining", "version")
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEM_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[CheckReport]
    cpu_percent: float
    mem_percent: float
    draining: bool
    version: str
    def __init__(self, checks: _Optional[_Iterable[_Union[CheckReport, _Mapping]]] = ..., cpu_percent: _Optional[float] = ..., mem_percent: _Optional[float] = ..., draining: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class NodeRecord(_message.Message):
    __slots__ = ("node", "address", "incarnation", "state", "origin", "meta_seq", "meta")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    META_SEQ_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    incarnation: int
    state: GossipState
    origin: str
    meta_seq: int
    meta: NodeMeta
    def __init__(self, node: _Optional[str] = ..., address: _Optional[str] = ..., incarnation: _Optional[int] = ..., state: _Optional[_Union[GossipState, str]] = ..., origin: _Optional[str] = ..., meta_seq: _Optional[int] = ..., meta: _Optional[_Union[NodeMeta, _Mapping]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("sender", "updates")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    sender: str
    updates: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, sender: _Optional[str] = ..., updates: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("responder", "updates")
    RESPONDER_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    responder: NodeRecord
    updates: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, responder: _Optional[_Union[NodeRecord, _Mapping]] = ..., updates: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...

class PingReqRequest(_message.Message):
    __slots__ = ("sender", "target", "target_address", "timeout_s")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TARGET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    sender: str
    target: str
    target_address: str
    timeout_s: float
    def __init__(self, sender: _Optional[str] = ..., target: _Optional[str] = ..., target_address: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class PingReqReply(_message.Message):
    __slots__ = ("acked",)
    ACKED_FIELD_NUMBER: _ClassVar[int]
    acked: bool
    def __init__(self, acked: _Optional[bool] = ...) -> None: ...

class GossipRequest(_message.Message):
    __slots__ = ("sender", "updates")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    sender: str
    updates: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, sender: _Optional[str] = ..., updates: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...

class GossipReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PushPullRequest(_message.Message):
    __slots__ = ("sender", "records", "join")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    sender: str
    records: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    join: bool
    def __init__(self, sender: _Optional[str] = ..., records: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ..., join: _Optional[bool] = ...) -> None: ...

class PushPullReply(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[NodeRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[NodeRecord, _Mapping]]] = ...) -> None: ...
