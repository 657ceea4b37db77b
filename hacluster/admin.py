"""The admin gRPC service that the `hacluster` CLI talks to.

AgentStatus -> StatusReply conversion happens here and nowhere else on the server side; the
agent hands us a `status_provider` returning a model.AgentStatus and never sees protobuf.
Every Admin call is authenticated by the `x-hacluster-token` metadata (hacluster/auth.py);
a call without the right token is refused with UNAUTHENTICATED before it does anything.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc

from hacluster.api import admin_pb2, admin_pb2_grpc
from hacluster.auth import TOKEN_METADATA_KEY, admin_token, token_matches
from hacluster.model import AgentStatus, Role

__all__ = ["AdminBindError", "AdminService", "admin_token", "serve_admin", "start_admin",
           "status_to_pb"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20  # admin messages are small; refuse anything bigger early

_ROLE_TO_PB = {
    Role.LEADER: admin_pb2.ROLE_LEADER,
    Role.FOLLOWER: admin_pb2.ROLE_FOLLOWER,
    Role.CANDIDATE: admin_pb2.ROLE_CANDIDATE,
    Role.STOPPED: admin_pb2.ROLE_STOPPED,
}

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class AdminBindError(OSError):
    """The admin server could not listen on the requested address."""


def status_to_pb(st: AgentStatus) -> admin_pb2.StatusReply:
    reply = admin_pb2.StatusReply(
        node=st.node, cluster=st.cluster, version=st.version, uptime_s=st.uptime_s,
        role=_ROLE_TO_PB.get(st.role, admin_pb2.ROLE_UNSPECIFIED), term=st.term,
        has_quorum=st.has_quorum, commit_index=st.commit_index, last_applied=st.last_applied,
        lease_ok=st.lease_ok, lease_remaining_ms=st.lease_remaining_ms, handoff=st.handoff,
        epoch_term=st.epoch_term, generation=st.generation, sentence=st.sentence,
    )
    if st.leader is not None:
        reply.leader = st.leader
    for v in st.vips:
        reply.vips.add(address=v.address, prefixlen=v.prefixlen, interface=v.interface,
                       held=v.held)
    for m in st.members:
        pm = reply.members.add(id=m.id, address=m.address, is_self=m.is_self,
                               connected=m.connected)
        if m.last_ack_ms is not None:
            pm.last_ack_ms = m.last_ack_ms
    return reply


def _guarded(handler: _Handler) -> _Handler:
    """Authenticate, then run an Admin RPC handler; log peer, method and result at debug.

    Every Admin method must be wrapped with this (tests/unit/test_admin.py checks it), so a
    newly added call cannot forget authentication.
    """
    method = handler.__name__

    @functools.wraps(handler)
    def wrapper(self: AdminService, request: Any, context: grpc.ServicerContext) -> Any:
        peer = context.peer()
        refusal = self._refusal(context)
        if refusal is not None:
            log.debug("admin %s from %s: refused (%s)", method, peer, refusal)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        try:
            reply = handler(self, request, context)
        except Exception:
            code = context.code() if hasattr(context, "code") else None
            log.debug("admin %s from %s: failed (%s)", method, peer,
                      code.name if code else "exception")
            raise
        log.debug("admin %s from %s: ok", method, peer)
        return reply

    wrapper._hacluster_guarded = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class AdminService(admin_pb2_grpc.AdminServicer):
    """The Admin servicer. `token` is admin_token(cluster secret), never the secret itself."""

    def __init__(self, status_provider: Callable[[], AgentStatus], token: str):
        if not token:
            raise ValueError("AdminService needs a non-empty token: it never serves "
                             "unauthenticated calls")
        self._status_provider = status_provider
        self._token = token

    def _refusal(self, context: grpc.ServicerContext) -> str | None:
        """None if the call carries the right token, else why it is refused."""
        presented = None
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_METADATA_KEY and isinstance(value, str):
                presented = value
        if presented is None:
            return (f"missing {TOKEN_METADATA_KEY} metadata: admin calls need a token "
                    "derived from the cluster secret")
        if not token_matches(presented, self._token):
            return (f"{TOKEN_METADATA_KEY} does not match this agent's cluster secret "
                    "(wrong secret file, or a member of another cluster?)")
        return None

    @_guarded
    def Status(self, request: admin_pb2.StatusRequest,
               context: grpc.ServicerContext) -> admin_pb2.StatusReply:
        try:
            status = self._status_provider()
        except Exception as e:
            log.exception("admin Status: the status provider failed")
            context.abort(grpc.StatusCode.INTERNAL, f"agent status unavailable: {e}")
        return status_to_pb(status)


def _bind_diagnosis(host: str, port: int) -> str:
    """grpc only says 'Failed to bind'; ask the OS why, for the operator's sake."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve {host!r}: {e.strerror}"
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(addr)
        except OSError as e:
            hint = {errno.EADDRINUSE: " (another hacluster-agent, or another program, "
                                      "already listens there)",
                    errno.EADDRNOTAVAIL: " (that address is not configured on this host)",
                    errno.EACCES: " (ports below 1024 need privileges)"}.get(e.errno, "")
            return f"{e.strerror}{hint}"
    return "grpc refused the address"


def _split_bind(bind: str) -> tuple[str, int]:
    host, sep, port_s = bind.rpartition(":")
    if not sep or not port_s.isdigit() or int(port_s) > 65535:
        raise ValueError(f"admin bind address must be HOST:PORT, got {bind!r}")
    return host.strip("[]"), int(port_s)


def start_admin(bind: str, service: AdminService,
                max_workers: int = 4) -> tuple[grpc.Server, int]:
    """Start the admin server on `bind` (HOST:PORT, [v6]:PORT; port 0 picks a free one).

    Returns the started server and the port it listens on. Raises AdminBindError when the
    address cannot be bound.
    """
    host, _ = _split_bind(bind)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="admin"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # grpc sets SO_REUSEPORT by default: a second agent on the same port would then
            # bind "successfully" and steal half the calls. We want the bind to fail instead.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_workers * 4,
    )
    admin_pb2_grpc.add_AdminServicer_to_server(service, server)
    _add_health(server)
    try:
        port = server.add_insecure_port(bind)
    except RuntimeError:
        port = 0  # newer grpc raises; older returns 0
    if port == 0:
        _, want = _split_bind(bind)
        raise AdminBindError(f"cannot listen for admin calls on {bind}: "
                             f"{_bind_diagnosis(host, want)}")
    server.start()
    log.info("admin API listening on %s:%d", host, port)
    return server, port


def serve_admin(bind: str, service: AdminService, max_workers: int = 4) -> grpc.Server:
    """Start the admin server on `bind`; see start_admin(). Stop it with server.stop(grace)."""
    return start_admin(bind, service, max_workers)[0]


def _add_health(server: grpc.Server) -> None:
    """Register grpc.health.v1 (unauthenticated, liveness only) when the package exists."""
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except ImportError:
        return
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("hacluster.v1.Admin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
