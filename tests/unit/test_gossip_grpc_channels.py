"""Gossip connections that go dark and come back, over real gRPC on loopback.

A partition that heals leaves the old TCP connection ESTABLISHED but silent. `FrozenProxy`
reproduces that between a client and a server: freeze() stalls every connection open at the
time (no bytes either way, no FIN, no RST) while new connections are relayed as usual.
Every connection is mutual TLS (tests/unit/pki.py), which the proxy relays as plain bytes;
it listens on 127.0.0.1 too, so the server's node certificate still matches the target.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

from hacluster.admin import AdminService, start_admin
from hacluster.api import gossip_pb2 as pb
from hacluster.api import gossip_pb2_grpc as pb_grpc
from hacluster.channels import (
    ADMIN_CHANNEL_OPTIONS,
    CHANNEL_OPTIONS,
    KEEPALIVE_TIME_MS,
    SERVER_OPTIONS,
    admin_channel,
    peer_channel,
)
from hacluster.gossip.grpc_transport import CHANNEL_RESET_FAILURES, GossipService, GrpcTransport
from tests.support.wait import wait_until
from tests.unit.pki import PKI
from tests.unit.test_admin import STATUS
from tests.unit.test_gossip_grpc import MEMBERS, Engine

_C, _S = dict(CHANNEL_OPTIONS), dict(SERVER_OPTIONS)


def _peer(target: str) -> grpc.Channel:
    """A gossip channel as agent n1 opens it (its node certificate)."""
    return peer_channel(target, PKI.client("n1"))


def _admin(target: str) -> grpc.Channel:
    """An admin channel (a tool's options) with n1's certificate, so gossip calls pass too."""
    return admin_channel(target, PKI.client("n1"))


class FrozenProxy:
    """A TCP relay to `target` whose open connections can be frozen."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._gates: list[threading.Event] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        with self._lock:
            for gate in self._gates:
                gate.clear()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for gate in self._gates:
                gate.set()
            for s in self._sockets:
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._target)
            except OSError:
                return
            gate = threading.Event()
            gate.set()
            with self._lock:
                self._gates.append(gate)
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, gate), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, gate: threading.Event) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            gate.wait()  # frozen: hold the bytes, like a path that went dark
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                return
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def _agent(options: list | None = None) -> Iterator[tuple[Engine, int]]:
    """The agent's server (SERVER_OPTIONS unless `options` says otherwise)."""
    engine = Engine()
    if options is None:
        service = GossipService(engine, PKI.authority(), MEMBERS)
        server, port = start_admin("127.0.0.1:0", AdminService(lambda: STATUS, PKI.authority()),
                                   PKI.server("n1"), gossip=service)
    else:  # an older agent: gRPC's default server options
        server = grpc.server(futures.ThreadPoolExecutor(2), options=options)
        pb_grpc.add_GossipServicer_to_server(GossipService(engine, PKI.authority(), MEMBERS), server)
        port = server.add_secure_port("127.0.0.1:0", PKI.server("n1"))
        server.start()
    try:
        yield engine, port
    finally:
        server.stop(None)


@contextlib.contextmanager
def _proxied() -> Iterator[tuple[Engine, FrozenProxy]]:
    with _agent() as (engine, port):
        proxy = FrozenProxy(("127.0.0.1", port))
        try:
            yield engine, proxy
        finally:
            proxy.close()


def _ping(channel: grpc.Channel, timeout: float) -> bool:
    try:
        pb_grpc.GossipStub(channel).Ping(pb.PingRequest(sender="n1"), timeout=timeout)
        return True
    except grpc.RpcError:
        return False


def _states(channel: grpc.Channel) -> list[grpc.ChannelConnectivity]:
    seen: list[grpc.ChannelConnectivity] = []
    channel.subscribe(seen.append, try_to_connect=True)
    return seen


def test_client_and_server_options_agree() -> None:
    assert _C["grpc.keepalive_permit_without_calls"] == _S["grpc.keepalive_permit_without_calls"] == 1
    assert _C["grpc.http2.max_pings_without_data"] == 0 and _S["grpc.http2.max_ping_strikes"] == 0
    # ours, and older agents' (they pinged every second)
    assert _S["grpc.http2.min_ping_interval_without_data_ms"] <= min(_C["grpc.keepalive_time_ms"], 1000) // 2
    assert _C["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS
    # gRPC's minimum connect timeout: a CPU-starved peer needs time for its SETTINGS frame.
    assert _C["grpc.min_reconnect_backoff_ms"] >= 1000
    assert _C["grpc.initial_reconnect_backoff_ms"] <= 100
    # Admin tools must work against older agents, whose servers count pings as abuse.
    assert not any("keepalive" in k or "ping" in k for k, _ in ADMIN_CHANNEL_OPTIONS)


def test_keepalive_pings_draw_no_goaway_from_our_server() -> None:
    with _agent() as (_, ours), _agent(options=[]) as (_, older):
        to_ours, to_older = _peer(f"127.0.0.1:{ours}"), _peer(f"127.0.0.1:{older}")
        try:
            seen_ours, seen_older = _states(to_ours), _states(to_older)
            assert _ping(to_ours, 2) and _ping(to_older, 2)
            # An older agent's server GOAWAYs "too_many_pings" after a few idle seconds: the
            # channel drops to IDLE. That is how long ours must stay READY.
            wait_until(lambda: seen_older[-1] is grpc.ChannelConnectivity.IDLE, timeout=40,
                       what="the older channel to go IDLE", interval=0.01)
            assert seen_ours[-1] is grpc.ChannelConnectivity.READY
            assert seen_ours.count(grpc.ChannelConnectivity.READY) == 1, seen_ours
        finally:
            to_ours.close()
            to_older.close()


def test_admin_channels_draw_no_goaway_from_an_older_agent() -> None:
    with _agent(options=[]) as (_, older), _agent(options=[]) as (_, control):
        admin, peer = _admin(f"127.0.0.1:{older}"), _peer(f"127.0.0.1:{control}")
        try:
            seen_admin, seen_peer = _states(admin), _states(peer)
            assert _ping(admin, 2) and _ping(peer, 2)
            wait_until(lambda: seen_peer[-1] is grpc.ChannelConnectivity.IDLE, timeout=40,
                       what="the peer channel to go IDLE", interval=0.01)
            assert seen_admin[-1] is grpc.ChannelConnectivity.READY
        finally:
            admin.close()
            peer.close()


def test_keepalive_replaces_a_connection_that_went_dark() -> None:
    with _proxied() as (_, proxy):
        peer, admin = _peer(proxy.address), _admin(proxy.address)
        try:
            assert _ping(peer, 2) and _ping(admin, 2)
            proxy.freeze()
            # Keepalive notices the silent connection and gRPC opens a new one: within about
            # keepalive time + ping timeout (6 s), not the minute TCP would take.
            wait_until(lambda: _ping(peer, 0.3), timeout=15, what="a ping over the peer channel",
                       interval=0.01)
            assert not _ping(admin, 0.5)  # without keepalive the dead connection stays
        finally:
            peer.close()
            admin.close()


class _Started(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.calls = 0

    def intercept_unary_unary(self, continuation, client_call_details, request):
        self.calls += 1
        return continuation(client_call_details, request)


def test_the_transport_replaces_a_channel_that_keeps_failing() -> None:
    started = _Started()
    with _proxied() as (_, proxy):
        # Without keepalive, so that only the transport's own reset can help.
        t = GrpcTransport("n1", channel_factory=lambda a: grpc.intercept_channel(_admin(a), started))
        try:
            assert t.ping(proxy.address, (), timeout=2) is not None
            proxy.freeze()
            in_flight: list[object] = []
            waiter = threading.Thread(
                target=lambda: in_flight.append(t.ping(proxy.address, (), timeout=20)))
            waiter.start()
            wait_until(lambda: started.calls == 2, timeout=5, what="the second call started",
                       interval=0.01)  # in flight on the old channel
            for _ in range(CHANNEL_RESET_FAILURES):
                assert t.ping(proxy.address, (), timeout=0.2) is None
            assert t.stats()["channel_resets"] == 1
            waiter.join(5)  # the call on the old channel ends with it: no answer, no exception
            assert not waiter.is_alive() and in_flight == [None]
            assert t.ping(proxy.address, (), timeout=2) is not None  # a new connection
            assert t.ping_req([proxy.address], "n3", "x:1", timeout=2) == [True]
        finally:
            t.close()


class _SlowEngine(Engine):
    delay = 0.0

    def handle_ping(self, sender, updates):
        time.sleep(self.delay)
        return super().handle_ping(sender, updates)


def test_an_answer_in_between_resets_the_failure_count() -> None:
    opened: list[grpc.Channel] = []

    def factory(target: str) -> grpc.Channel:
        opened.append(_admin(target))
        return opened[-1]

    engine = _SlowEngine()
    service = GossipService(engine, PKI.authority(), MEMBERS)
    server, port = start_admin("127.0.0.1:0", AdminService(lambda: STATUS, PKI.authority()),
                               PKI.server("n1"), max_workers=8, gossip=service)
    t = GrpcTransport("n1", channel_factory=factory)
    try:
        addr = f"127.0.0.1:{port}"
        for _ in range(3):
            engine.delay = 0.3
            for _ in range(CHANNEL_RESET_FAILURES - 1):
                assert t.ping(addr, (), timeout=0.1) is None  # DEADLINE_EXCEEDED
            engine.delay = 0.0
            assert t.ping(addr, (), timeout=2) is not None
        assert len(opened) == 1 and "channel_resets" not in t.stats()
        engine.delay = 0.3
        for _ in range(CHANNEL_RESET_FAILURES):
            assert t.ping(addr, (), timeout=0.1) is None
        assert t.stats()["channel_resets"] == 1
        engine.delay = 0.0
        assert t.ping(addr, (), timeout=2) is not None and len(opened) == 2
    finally:
        t.close()
        server.stop(None)


def test_failed_gossip_sends_count_too_and_their_callbacks_can_reset_the_channel() -> None:
    with _proxied() as (_, proxy):
        t = GrpcTransport("n1", channel_factory=_admin)
        try:
            assert t.ping(proxy.address, (), timeout=2) is not None
            proxy.freeze()
            for _ in range(CHANNEL_RESET_FAILURES):
                t.gossip(proxy.address, ())  # each times out after GOSSIP_SEND_TIMEOUT_S
            # The last done-callback closes the channel, from a gRPC thread: no deadlock.
            wait_until(lambda: t.stats().get("channel_resets") == 1, timeout=10,
                       what="one channel reset", interval=0.01)
            assert t.ping(proxy.address, (), timeout=2) is not None
        finally:
            t.close()
