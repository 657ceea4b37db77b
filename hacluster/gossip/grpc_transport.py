"""Gossip over gRPC: the Transport the engine calls, and the servicer that feeds it.

Client side: one channel per peer address, reused (HTTP/2 multiplexes the probes); every
call has a deadline; network errors become None/False, never exceptions, as the Transport
contract says. Server side: token check, sender check (a configured member), conversion and
validation in wire.py, then the engine's inbound handler. Channels come from
hacluster/channels.py so that the security issue can switch them to mTLS in one place.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc

from hacluster.api import gossip_pb2 as pb
from hacluster.api import gossip_pb2_grpc as pb_grpc
from hacluster.auth import TOKEN_METADATA_KEY, metadata_refusal
from hacluster.channels import peer_channel
from hacluster.gossip import wire
from hacluster.gossip.types import Ack, NodeRecord
from hacluster.model import NodeId

log = logging.getLogger("hacluster.gossip")

GOSSIP_SEND_TIMEOUT_S = 1.0  # fire-and-forget calls still get a deadline
PING_REQ_MAX_TIMEOUT_S = 5.0  # a via never waits longer than this for a target, whatever asked

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class GrpcTransport:
    """hacluster.gossip.types.Transport over gRPC."""

    def __init__(self, node_id: NodeId, token: str,
                 channel_factory: Callable[[str], grpc.Channel] = peer_channel):
        self.node_id = node_id
        self._metadata = ((TOKEN_METADATA_KEY, token),)
        self._factory = channel_factory
        self._stubs: dict[str, pb_grpc.GossipStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()

    def _stub(self, address: str) -> pb_grpc.GossipStub:
        with self._lock:
            stub = self._stubs.get(address)
            if stub is None:
                channel = self._factory(address)
                self._channels.append(channel)
                stub = self._stubs[address] = pb_grpc.GossipStub(channel)
            return stub

    def close(self) -> None:
        with self._lock:
            for c in self._channels:
                c.close()
            self._channels.clear()
            self._stubs.clear()

    def ping(self, address: str, updates: tuple[NodeRecord, ...], timeout: float) -> Ack | None:
        req = pb.PingRequest(sender=self.node_id, updates=wire.records_to_pb(updates))
        try:
            reply = self._stub(address).Ping(req, timeout=timeout, metadata=self._metadata)
            return wire.ack_from_pb(reply)
        except grpc.RpcError as e:
            log.debug("ping %s: %s", address, _why(e))
        except wire.WireError as e:
            log.warning("ping %s: bad answer: %s", address, e)
        return None

    def ping_req(self, vias: list[str], target: NodeId, target_address: str,
                 timeout: float) -> list[bool | None]:
        req = pb.PingReqRequest(sender=self.node_id, target=target, target_address=target_address,
                                timeout_s=timeout * 0.8)  # leave the via time to answer us
        calls = [self._stub(v).PingReq.future(req, timeout=timeout, metadata=self._metadata)
                 for v in vias]
        out: list[bool | None] = []
        for via, call in zip(vias, calls, strict=True):
            try:
                out.append(call.result().acked)
            except grpc.RpcError as e:
                log.debug("ping-req via %s for %s: %s", via, target, _why(e))
                out.append(None)
        return out

    def gossip(self, address: str, updates: tuple[NodeRecord, ...]) -> None:
        req = pb.GossipRequest(sender=self.node_id, updates=wire.records_to_pb(updates))
        call = self._stub(address).Gossip.future(req, timeout=GOSSIP_SEND_TIMEOUT_S,
                                                  metadata=self._metadata)
        call.add_done_callback(lambda f: f.exception() and log.debug(
            "gossip to %s: %s", address, _why(f.exception())))

    def push_pull(self, address: str, records: tuple[NodeRecord, ...], join: bool,
                  timeout: float) -> tuple[NodeRecord, ...] | None:
        req = pb.PushPullRequest(sender=self.node_id, records=wire.records_to_pb(records), join=join)
        try:
            reply = self._stub(address).PushPull(req, timeout=timeout, metadata=self._metadata)
            return wire.records_from_pb(reply.records, "records")
        except grpc.RpcError as e:
            log.debug("push-pull %s: %s", address, _why(e))
        except wire.WireError as e:
            log.warning("push-pull %s: bad answer: %s", address, e)
        return None


def _why(err: BaseException | None) -> str:
    if isinstance(err, grpc.RpcError):
        return f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
    return repr(err)


def _inbound(handler: _Handler) -> _Handler:
    """Authenticate the caller, check the sender and validate, then run a Gossip handler."""
    method = handler.__name__

    @functools.wraps(handler)
    def wrapper(self: GossipService, request: Any, context: grpc.ServicerContext) -> Any:
        refusal = metadata_refusal(context.invocation_metadata(), self._token, "gossip")
        if refusal is not None:
            self._refused(context, grpc.StatusCode.UNAUTHENTICATED, method, refusal)
        try:
            sender = wire.sender_from(request.sender)
            if sender not in self._members:
                self._refused(context, grpc.StatusCode.PERMISSION_DENIED, method,
                              f"sender {sender!r} is not a member of this cluster")
            return handler(self, sender, request, context)
        except wire.WireError as e:
            self._refused(context, grpc.StatusCode.INVALID_ARGUMENT, method, str(e))

    wrapper._hacluster_guarded = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class GossipService(pb_grpc.GossipServicer):
    """Feeds inbound gossip to the engine (a Membership, or anything with its handlers)."""

    def __init__(self, engine: Any, token: str, members: Mapping[NodeId, str]):
        """members: every configured member id -> its gossip address. A ping-req is always
        sent to the configured address, never to one named in the request, so a caller
        cannot use us to probe arbitrary hosts."""
        if not token:
            raise ValueError("GossipService needs a non-empty token")
        self._engine = engine
        self._token = token
        self._members = dict(members)
        self._warned: set[tuple[str, str]] = set()

    def _refused(self, context: grpc.ServicerContext, code: grpc.StatusCode, method: str,
                 why: str) -> None:
        key = (context.peer(), why[:80])
        if key not in self._warned and len(self._warned) < 1000:
            self._warned.add(key)  # once per peer and reason: a misconfigured peer retries a lot
            log.warning("gossip %s from %s refused: %s", method, context.peer(), why)
        context.abort(code, why)

    @_inbound
    def Ping(self, sender: NodeId, request: pb.PingRequest,
             context: grpc.ServicerContext) -> pb.PingReply:
        updates = wire.records_from_pb(request.updates, "updates")
        return wire.ack_to_pb(self._engine.handle_ping(sender, updates))

    @_inbound
    def PingReq(self, sender: NodeId, request: pb.PingReqRequest,
                context: grpc.ServicerContext) -> pb.PingReqReply:
        target = request.target
        wire.sender_from(target)
        if target not in self._members:
            raise wire.WireError(f"target: {target!r} is not a member of this cluster")
        if not (0 < request.timeout_s <= PING_REQ_MAX_TIMEOUT_S):
            raise wire.WireError(f"timeout_s: must be in (0, {PING_REQ_MAX_TIMEOUT_S}], "
                                 f"got {request.timeout_s}")
        acked = self._engine.handle_ping_req(sender, target, self._members[target],
                                             request.timeout_s)
        return pb.PingReqReply(acked=acked)

    @_inbound
    def Gossip(self, sender: NodeId, request: pb.GossipRequest,
               context: grpc.ServicerContext) -> pb.GossipReply:
        self._engine.handle_gossip(sender, wire.records_from_pb(request.updates, "updates"))
        return pb.GossipReply()

    @_inbound
    def PushPull(self, sender: NodeId, request: pb.PushPullRequest,
                 context: grpc.ServicerContext) -> pb.PushPullReply:
        records = wire.records_from_pb(request.records, "records")
        theirs = self._engine.handle_push_pull(sender, records, request.join)
        return pb.PushPullReply(records=wire.records_to_pb(theirs))
