"""Gossip over gRPC: the Transport the engine calls, and the servicer that feeds it.

Client side: one channel per peer address, reused (HTTP/2 multiplexes the probes); every
call has a deadline; network errors become None/False, never exceptions, as the Transport
contract says. A channel whose calls keep timing out is replaced (keepalive, in
channels.py, should already have noticed a dead connection; this is the second line).
Server side: the caller's certificate (mutual TLS, hacluster/tls.py) must be a node
certificate of this cluster naming the very member the message says it comes from (the
sender, a configured member); then conversion and validation in wire.py, then the engine's
inbound handler. Ping-reqs are bounded in number, since each holds a worker of the server
it shares with the admin API. Channels come from hacluster/channels.py (peer_channel).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from hacluster.api import gossip_pb2 as pb
from hacluster.api import gossip_pb2_grpc as pb_grpc
from hacluster.endpoints import peer_host
from hacluster.gossip import wire
from hacluster.gossip.types import Ack, NodeRecord
from hacluster.model import NodeId
from hacluster.tls import NODE_ROLES, Authority

log = logging.getLogger("hacluster.gossip")

GOSSIP_SEND_TIMEOUT_S = 1.0  # fire-and-forget calls still get a deadline
PING_REQ_MAX_TIMEOUT_S = 5.0  # a via never waits longer than this for a target, whatever asked
# Ping-reqs handled at once. Each blocks a worker of the shared server (8 workers, also the
# admin API's) for up to its timeout; beyond this we nack at once rather than queue.
PING_REQ_CONCURRENCY = 3
# Consecutive timeouts/unavailables to one address before its channel is replaced: a
# connection stuck after a healed partition fails every call until gRPC notices.
CHANNEL_RESET_FAILURES = 3
WARN_INTERVAL_S = 60.0  # the same warning (same peer host, same kind) at most this often
_WARN_KEYS = 1000

_CHANNEL_FAILURES = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class _Tally:
    """Counters, and warnings at most once per key and WARN_INTERVAL_S: a misbehaving peer
    retries many times a second, and the first line says what is wrong. Thread-safe."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (logged at, held)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def warn(self, key: tuple[str, str], msg: str, *args: object) -> None:
        with self._lock:
            now = self._clock()
            if key not in self._last and len(self._last) >= _WARN_KEYS:
                self._last = {k: v for k, v in self._last.items() if now - v[0] < WARN_INTERVAL_S}
                if len(self._last) >= _WARN_KEYS:
                    key = ("*", "*")  # many peers misbehave at once: one line for all of them
            last = self._last.get(key)
            if last is not None and now - last[0] < WARN_INTERVAL_S:
                self._last[key] = (last[0], last[1] + 1)
                return
            held = last[1] if last is not None else 0
            self._last[key] = (now, 0)
        if held:
            msg, args = msg + " (and %d more like it since the last warning)", (*args, held)
        log.warning(msg, *args)


@dataclass
class _Peer:
    channel: grpc.Channel
    stub: pb_grpc.GossipStub
    failures: int = 0  # consecutive DEADLINE_EXCEEDED/UNAVAILABLE


class GrpcTransport:
    """hacluster.gossip.types.Transport over gRPC."""

    def __init__(self, node_id: NodeId, channel_factory: Callable[[str], grpc.Channel],
                 clock: Callable[[], float] = time.monotonic,
                 on_rtt: Callable[[float], None] | None = None):
        """channel_factory(address): a channel to that peer, e.g.
        `lambda a: peer_channel(a, tls.channel_credentials())`. on_rtt(seconds): told the
        round trip of every answered direct probe (the metrics' histogram)."""
        self.node_id = node_id
        self.on_rtt = on_rtt
        self._factory = channel_factory
        self._peers: dict[str, _Peer] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._tally = _Tally(clock)

    def stats(self) -> dict[str, int]:
        """channel_resets, records_dropped, metas_dropped (records kept without their meta)."""
        return self._tally.counts()

    def _peer(self, address: str) -> _Peer:
        """Raises ValueError once closed, as gRPC does for a call on a closed channel."""
        with self._lock:
            if self._closed:
                raise ValueError("gossip transport closed")
            peer = self._peers.get(address)
            if peer is None:
                channel = self._factory(address)
                peer = self._peers[address] = _Peer(channel, pb_grpc.GossipStub(channel))
            return peer

    def _outcome(self, address: str, peer: _Peer, err: BaseException | None) -> None:
        """Count consecutive channel failures; replace the channel after too many. Calls
        still in flight on the old channel end CANCELLED, which the callers treat as no
        answer. Closing happens outside the lock: it runs the calls' done-callbacks."""
        code = err.code() if isinstance(err, grpc.RpcError) else None  # type: ignore[attr-defined]
        if err is not None and code is grpc.StatusCode.CANCELLED:
            return  # our own close, not the peer's fault
        with self._lock:
            if self._peers.get(address) is not peer:
                return  # an outcome on a channel already replaced
            if code not in _CHANNEL_FAILURES:
                peer.failures = 0  # any answer, even a refusal, proves the connection works
                return
            peer.failures += 1
            if peer.failures < CHANNEL_RESET_FAILURES:
                return
            del self._peers[address]
        self._tally.count("channel_resets")
        log.debug("gossip channel to %s replaced after %d failures in a row", address,
                  peer.failures)
        peer.channel.close()

    def close(self) -> None:
        """Close every channel; later calls return no answer instead of reopening one."""
        with self._lock:
            self._closed = True
            peers, self._peers = list(self._peers.values()), {}
        for p in peers:
            p.channel.close()

    def ping(self, address: str, updates: tuple[NodeRecord, ...], timeout: float) -> Ack | None:
        req = pb.PingRequest(sender=self.node_id, updates=wire.records_to_pb(updates))
        try:
            peer = self._peer(address)
            sent = time.monotonic()
            reply = peer.stub.Ping(req, timeout=timeout)
            if self.on_rtt is not None:
                self.on_rtt(time.monotonic() - sent)
            self._outcome(address, peer, None)
            ack, problems = wire.ack_from_pb(reply)
        except grpc.RpcError as e:
            self._outcome(address, peer, e)
            log.debug("ping %s: %s", address, _why(e))
        except wire.WireError as e:
            self._tally.warn((address, "bad answer"), "ping %s: bad answer: %s", address, e)
        except ValueError as e:  # closed, by us or by a channel reset
            log.debug("ping %s: %s", address, e)
        else:
            self._problems(address, "ping", problems)
            return ack
        return None

    def ping_req(self, vias: list[str], target: NodeId, target_address: str,
                 timeout: float) -> list[bool | None]:
        # The via gets 80% of our deadline, to have time to nack; and never more than it
        # accepts, or long probe intervals and a high awareness score make every via
        # clamp anyway, with less time left for its nack than we think.
        req = pb.PingReqRequest(sender=self.node_id, target=target, target_address=target_address,
                                timeout_s=min(timeout * 0.8, PING_REQ_MAX_TIMEOUT_S))
        calls: list[tuple[_Peer, grpc.Future] | None] = []
        for via in vias:
            try:
                peer = self._peer(via)
                calls.append((peer, peer.stub.PingReq.future(req, timeout=timeout)))
            except ValueError as e:
                log.debug("ping-req via %s for %s: %s", via, target, e)
                calls.append(None)
        out: list[bool | None] = []
        for via, call in zip(vias, calls, strict=True):
            if call is None:
                out.append(None)
                continue
            peer, future = call
            try:
                out.append(future.result().acked)
                self._outcome(via, peer, None)
            except grpc.RpcError as e:
                self._outcome(via, peer, e)
                log.debug("ping-req via %s for %s: %s", via, target, _why(e))
                out.append(None)
            except grpc.FutureCancelledError:
                out.append(None)
        return out

    def gossip(self, address: str, updates: tuple[NodeRecord, ...]) -> None:
        req = pb.GossipRequest(sender=self.node_id, updates=wire.records_to_pb(updates))
        try:
            peer = self._peer(address)
            call = peer.stub.Gossip.future(req, timeout=GOSSIP_SEND_TIMEOUT_S)
        except ValueError as e:
            log.debug("gossip to %s: %s", address, e)
            return

        def done(f: grpc.Future) -> None:
            if f.cancelled():  # exception() would raise on a cancelled call
                return
            err = f.exception()
            self._outcome(address, peer, err)
            if err is not None:
                log.debug("gossip to %s: %s", address, _why(err))

        call.add_done_callback(done)

    def push_pull(self, address: str, records: tuple[NodeRecord, ...], join: bool,
                  timeout: float) -> tuple[NodeRecord, ...] | None:
        req = pb.PushPullRequest(sender=self.node_id, records=wire.records_to_pb(records), join=join)
        try:
            peer = self._peer(address)
            reply = peer.stub.PushPull(req, timeout=timeout)
            self._outcome(address, peer, None)
            decoded = wire.records_from_pb(reply.records, "records")
        except grpc.RpcError as e:
            self._outcome(address, peer, e)
            log.debug("push-pull %s: %s", address, _why(e))
        except wire.WireError as e:
            self._tally.warn((address, "bad answer"), "push-pull %s: bad answer: %s", address, e)
        except ValueError as e:
            log.debug("push-pull %s: %s", address, e)
        else:
            self._problems(address, "push-pull", decoded.problems)
            return decoded.records
        return None

    def _problems(self, address: str, method: str, problems: tuple[str, ...]) -> None:
        _note_problems(self._tally, address, f"{method} answer from {address}", problems)


def _note_problems(tally: _Tally, host: str, what: str, problems: tuple[str, ...]) -> None:
    """Count the records wire.py dropped or stripped of meta; debug each, warn rarely."""
    if not problems:
        return
    for p in problems:
        tally.count("metas_dropped" if p.endswith("(meta dropped)") else "records_dropped")
        log.debug("%s: %s", what, p)
    tally.warn((host, "records"), "%s: %d unreadable record(s), e.g. %s", what, len(problems),
               problems[0])


def _why(err: BaseException | None) -> str:
    if isinstance(err, grpc.RpcError):
        return f"{err.code().name}: {err.details()}"  # type: ignore[attr-defined]
    return repr(err)


def _inbound(handler: _Handler) -> _Handler:
    """Authenticate the caller, check the sender and validate, then run a Gossip handler."""
    method = handler.__name__

    @functools.wraps(handler)
    def wrapper(self: GossipService, request: Any, context: grpc.ServicerContext) -> Any:
        who, refusal = self._authority.check(context, NODE_ROLES, "gossip")
        if refusal is not None:
            self._refused(context, grpc.StatusCode.UNAUTHENTICATED if who is None
                          else grpc.StatusCode.PERMISSION_DENIED, method, refusal)
        try:
            sender = wire.sender_from(request.sender)
            if sender not in self._members:
                self._refused(context, grpc.StatusCode.PERMISSION_DENIED, method,
                              f"sender {sender!r} is not a member of this cluster")
            if who is not None and who.name != sender:
                self._refused(context, grpc.StatusCode.PERMISSION_DENIED, method,
                              f"the certificate of node {who.name!r} cannot speak for {sender!r}")
            return handler(self, sender, request, context)
        except wire.WireError as e:
            self._refused(context, grpc.StatusCode.INVALID_ARGUMENT, method, str(e))

    wrapper._hacluster_guarded = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class GossipService(pb_grpc.GossipServicer):
    """Feeds inbound gossip to the engine (a Membership, or anything with its handlers)."""

    def __init__(self, engine: Any, authority: Authority, members: Mapping[NodeId, str],
                 clock: Callable[[], float] = time.monotonic):
        """members: every configured member id -> its gossip address. A ping-req is always
        sent to the configured address, never to one named in the request, so a caller
        cannot use us to probe arbitrary hosts."""
        self._engine = engine
        self._authority = authority
        self._members = dict(members)
        self._ping_reqs = threading.BoundedSemaphore(PING_REQ_CONCURRENCY)
        self._tally = _Tally(clock)

    def set_members(self, members: Mapping[NodeId, str]) -> None:
        """The committed membership changed (issue 16): who may gossip with us, and where a
        ping-req goes. Replaced whole (one store: handlers read it from gRPC's threads)."""
        self._members = dict(members)

    def stats(self) -> dict[str, int]:
        """records_dropped, metas_dropped, ping_reqs_shed (nacked because too many ran)."""
        return self._tally.counts()

    def _refused(self, context: grpc.ServicerContext, code: grpc.StatusCode, method: str,
                 why: str) -> None:
        # Keyed on host and code: a misconfigured peer retries from new ports, with texts
        # that name a different record each time.
        self._tally.warn((peer_host(context.peer()), code.name), "gossip %s from %s refused: %s",
                         method, context.peer(), why)
        context.abort(code, why)

    def _decode(self, context: grpc.ServicerContext, sender: NodeId, method: str,
                records: Any, where: str) -> tuple[NodeRecord, ...]:
        decoded = wire.records_from_pb(records, where)
        _note_problems(self._tally, peer_host(context.peer()), f"gossip {method} from {sender}",
                       decoded.problems)
        return decoded.records

    @_inbound
    def Ping(self, sender: NodeId, request: pb.PingRequest,
             context: grpc.ServicerContext) -> pb.PingReply:
        updates = self._decode(context, sender, "Ping", request.updates, "updates")
        return wire.ack_to_pb(self._engine.handle_ping(sender, updates))

    @_inbound
    def PingReq(self, sender: NodeId, request: pb.PingReqRequest,
                context: grpc.ServicerContext) -> pb.PingReqReply:
        target = request.target
        wire.sender_from(target)
        if target not in self._members:
            raise wire.WireError(f"target: {target!r} is not a member of this cluster")
        timeout = request.timeout_s
        if not (math.isfinite(timeout) and timeout > 0):
            raise wire.WireError(f"timeout_s: must be a finite number > 0, got {timeout}")
        # Clamp rather than refuse: a requester with long probe intervals or a high
        # awareness score asks for more, and a refusal from every via would read as our
        # network failing, pinning its awareness at the maximum.
        timeout = min(timeout, PING_REQ_MAX_TIMEOUT_S)
        if not self._ping_reqs.acquire(blocking=False):
            self._tally.count("ping_reqs_shed")
            log.debug("ping-req from %s for %s: %d already running, nacked", sender, target,
                      PING_REQ_CONCURRENCY)
            return pb.PingReqReply(acked=False)
        try:
            acked = self._engine.handle_ping_req(sender, target, self._members[target], timeout)
        finally:
            self._ping_reqs.release()
        return pb.PingReqReply(acked=acked)

    @_inbound
    def Gossip(self, sender: NodeId, request: pb.GossipRequest,
               context: grpc.ServicerContext) -> pb.GossipReply:
        self._engine.handle_gossip(sender, self._decode(context, sender, "Gossip",
                                                        request.updates, "updates"))
        return pb.GossipReply()

    @_inbound
    def PushPull(self, sender: NodeId, request: pb.PushPullRequest,
                 context: grpc.ServicerContext) -> pb.PushPullReply:
        records = self._decode(context, sender, "PushPull", request.records, "records")
        theirs = self._engine.handle_push_pull(sender, records, request.join)
        return pb.PushPullReply(records=wire.records_to_pb(theirs))
