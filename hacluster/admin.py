"""The admin gRPC service that the `hacluster` CLI talks to.

AgentStatus -> StatusReply conversion happens here and nowhere else on the server side; the
agent hands us a `status_provider` returning a model.AgentStatus and never sees protobuf.
Every Admin call comes over mutual TLS and is authorized from the caller's certificate
(hacluster/tls.py): reads need an admin, reader or node certificate, actions an admin one.
A call without an acceptable certificate is refused (UNAUTHENTICATED / PERMISSION_DENIED)
before it does anything, and logged.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc

from hacluster.api import admin_pb2, admin_pb2_grpc
from hacluster.channels import SERVER_OPTIONS
from hacluster.endpoints import parse_hostport
from hacluster.errors import Refusal, Refused
from hacluster.events import CAPACITY, Event, EventLog
from hacluster.gossip.wire import check_to_pb, state_to_pb
from hacluster.model import (
    AgentStatus,
    BackendsStatus,
    BackendStatus,
    ChecksStatus,
    MembersStatus,
    Role,
    SyncStatus,
)
from hacluster.tls import ACT_ROLES, READ_ROLES, Authority

_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # config_spec.MemberSpec.id

__all__ = ["AdminBindError", "AdminService", "serve_admin", "start_admin", "status_to_pb"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20  # admin messages are small; refuse anything bigger early

_ROLE_TO_PB = {
    Role.LEADER: admin_pb2.ROLE_LEADER,
    Role.FOLLOWER: admin_pb2.ROLE_FOLLOWER,
    Role.CANDIDATE: admin_pb2.ROLE_CANDIDATE,
    Role.STOPPED: admin_pb2.ROLE_STOPPED,
}

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
_T = TypeVar("_T")

MAX_NAME = 256  # any text field of an admin request: names and ids are far shorter
MAX_FOLLOWERS = 2  # `hacluster events --follow` streams at once (each holds a server thread)


def _long_text_field(request: Any) -> str | None:
    """The name of a text field of `request` longer than MAX_NAME, if any: refused before
    the handler, so that no refusal, event or log line ever echoes a megabyte of it."""
    for fd, value in request.ListFields():
        if isinstance(value, str) and len(value) > MAX_NAME:
            return fd.name
    return None


def _event_to_pb(e: Event) -> admin_pb2.Event:
    return admin_pb2.Event(seq=e.seq, at_unix_ms=e.at_unix_ms, node=e.node, kind=e.kind, text=e.text,
                           fields=e.fields)


class AdminBindError(OSError):
    """The admin server could not listen on the requested address."""


def status_to_pb(st: AgentStatus) -> admin_pb2.StatusReply:
    reply = admin_pb2.StatusReply(
        node=st.node, cluster=st.cluster, version=st.version, uptime_s=st.uptime_s,
        role=_ROLE_TO_PB.get(st.role, admin_pb2.ROLE_UNSPECIFIED), term=st.term,
        has_quorum=st.has_quorum, commit_index=st.commit_index, last_applied=st.last_applied,
        lease_ok=st.lease_ok, lease_remaining_ms=st.lease_remaining_ms, handoff=st.handoff,
        epoch_term=st.epoch_term, generation=st.generation, sentence=st.sentence,
        maintenance=st.maintenance, raft_disk_problem=st.raft_disk_problem,
        journal_write_errors=st.journal_write_errors,
    )
    if st.leader is not None:
        reply.leader = st.leader
    for v in st.vips:
        pv = reply.vips.add(address=v.address, prefixlen=v.prefixlen, interface=v.interface,
                            held=v.held, waiting=v.waiting)
        if v.claimed_at_unix_ms is not None:
            pv.claimed_at_unix_ms = v.claimed_at_unix_ms
    for m in st.members:
        pm = reply.members.add(id=m.id, address=m.address, is_self=m.is_self,
                               connected=m.connected, admin_address=m.admin_address,
                               non_voter=m.non_voter)
        if m.last_ack_ms is not None:
            pm.last_ack_ms = m.last_ack_ms
    if st.connection_sync is not None:
        _sync_to_pb(st.connection_sync, reply.connection_sync)
    return reply


def _sync_to_pb(s: SyncStatus, out: admin_pb2.SyncStatus) -> None:
    out.state, out.detail, out.restarts = s.state.value, s.detail, s.restarts
    if s.last_commit_ms is not None:
        out.last_commit_ms = s.last_commit_ms


def members_to_pb(ms: MembersStatus) -> admin_pb2.MembersReply:
    reply = admin_pb2.MembersReply(node=ms.node, awareness=ms.awareness)
    for m in ms.members:
        pm = reply.members.add(
            id=m.id, address=m.address, is_self=m.is_self, state=state_to_pb(m.state),
            incarnation=m.incarnation, state_age_s=m.state_age_s, confirmations=m.confirmations,
            raft_role=m.raft_role, checks_passing=m.checks_passing, checks_total=m.checks_total,
            draining=m.draining, version=m.version, cpu_percent=m.cpu_percent,
            mem_percent=m.mem_percent, meta_known=m.meta_known)
        if m.last_seen_s is not None:
            pm.last_seen_s = m.last_seen_s
    return reply


def checks_to_pb(cs: ChecksStatus) -> admin_pb2.ChecksReply:
    reply = admin_pb2.ChecksReply(node=cs.node, generation=cs.generation)
    for n in cs.nodes:
        reply.nodes.add(node=n.node, state=state_to_pb(n.state),
                        checks=[check_to_pb(c) for c in n.checks])
    for c in cs.committed:
        reply.committed.add(node=c.node, check=c.check, healthy=c.healthy)
    return reply


def _backend_to_pb(b: BackendStatus, out: admin_pb2.BackendView) -> None:
    out.id, out.address, out.port, out.weight, out.state = b.id, b.address, b.port, b.weight, b.state
    if b.packets is not None:
        out.packets = b.packets
    if b.bytes is not None:
        out.bytes = b.bytes


def backends_to_pb(bs: BackendsStatus) -> admin_pb2.BackendsReply:
    reply = admin_pb2.BackendsReply(node=bs.node, table_generation=bs.table_generation,
                                    dataplane=bs.dataplane)
    if bs.applied_generation is not None:
        reply.applied_generation = bs.applied_generation
    for s in bs.services:
        ps = reply.services.add(name=s.name, vip=s.vip, protocol=s.protocol, ports=list(s.ports),
                                algorithm=s.algorithm)
        for b in s.backends:
            _backend_to_pb(b, ps.backends.add())
        if s.fallback is not None:
            _backend_to_pb(s.fallback, ps.fallback)
    return reply


# The domain says why it refuses (hacluster.errors); this edge says it in gRPC's words.
REFUSAL_CODES = {
    Refusal.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Refusal.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Refusal.ABORTED: grpc.StatusCode.ABORTED,
    Refusal.INTERNAL: grpc.StatusCode.INTERNAL,
}


def _guarded(roles: frozenset[str]) -> Callable[[_Handler], _Handler]:
    """Authorize the caller's certificate for `roles`, then run an Admin RPC handler; log
    refusals at WARNING, peer, method and result at debug.

    Every Admin method must be wrapped with this (tests/unit/test_admin.py checks it), so a
    newly added call cannot forget authorization.
    """
    return functools.partial(_guard, roles)


def _guard(roles: frozenset[str], handler: _Handler) -> _Handler:
    method = handler.__name__
    what = "act on the cluster" if roles == ACT_ROLES else "read the cluster's state"

    @functools.wraps(handler)
    def wrapper(self: AdminService, request: Any, context: grpc.ServicerContext) -> Any:
        peer = context.peer()
        who, refusal = self._authority.check(context, roles, what)
        if refusal is not None:
            log.warning("admin %s from %s: refused: %s", method, peer, refusal)
            context.abort(grpc.StatusCode.UNAUTHENTICATED if who is None
                          else grpc.StatusCode.PERMISSION_DENIED, refusal)
        self._caller.identity = who
        peer = f"{who} ({peer})"
        too_long = _long_text_field(request)
        if too_long is not None:
            log.warning("admin %s from %s: refused: %s over %d characters", method, peer, too_long, MAX_NAME)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{too_long}: at most {MAX_NAME} characters (names, ids, SERVICE/BACKEND)")
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
    """The Admin servicer; `authority` says who calls (tls.Authority of the cluster)."""

    def __init__(self, status_provider: Callable[[], AgentStatus], authority: Authority,
                 members_provider: Callable[[], MembersStatus] | None = None,
                 checks_provider: Callable[[str | None], ChecksStatus] | None = None,
                 backends_provider: Callable[[str | None], BackendsStatus] | None = None,
                 actions: Any = None,
                 failover: Callable[[str | None, bool, float], Any] | None = None,
                 events: EventLog | None = None, audit: Any = None, membership: Any = None,
                 reload: Callable[[bool, str], Any] | None = None):
        """actions: an object with drain(target, undo, disable) and weight(service, backend,
        weight), each returning (detail, generation) or raising errors.Refused. membership: a
        ha.members.MembershipChanges (add, remove, replace, set_voter).
        reload(dry_run, by): re-read the config file (reload.Reloader.reload), returning a
        reload.ReloadResult."""
        self._membership = membership
        self._status_provider = status_provider
        self._members_provider = members_provider
        self._checks_provider = checks_provider
        self._backends_provider = backends_provider
        self._actions = actions
        self._failover = failover
        self._authority = authority
        self._events = events
        self._audit = audit  # an audit.AuditLog: every action is appended before and after
        self._reload = reload
        self._followers = threading.BoundedSemaphore(MAX_FOLLOWERS)
        self._caller = threading.local()  # the identity _guard authorized, for this call

    @_guarded(READ_ROLES)
    def Status(self, request: admin_pb2.StatusRequest,
               context: grpc.ServicerContext) -> admin_pb2.StatusReply:
        try:
            status = self._status_provider()
        except Exception as e:
            log.exception("admin Status: the status provider failed")
            context.abort(grpc.StatusCode.INTERNAL, f"agent status unavailable: {e}")
        return status_to_pb(status)

    @_guarded(READ_ROLES)
    def Members(self, request: admin_pb2.MembersRequest,
                context: grpc.ServicerContext) -> admin_pb2.MembersReply:
        return members_to_pb(self._provide(self._members_provider, context, "membership"))

    @_guarded(READ_ROLES)
    def Checks(self, request: admin_pb2.ChecksRequest,
               context: grpc.ServicerContext) -> admin_pb2.ChecksReply:
        node = request.node if request.HasField("node") else None
        checks = self._provide(self._checks_provider, context, "health checks", None)
        if node is not None:
            if not any(n.node == node for n in checks.nodes):
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"no member {node!r}; members: "
                              f"{', '.join(n.node for n in checks.nodes) or 'none'}")
            checks = dataclasses.replace(
                checks, nodes=tuple(n for n in checks.nodes if n.node == node),
                committed=tuple(c for c in checks.committed if c.node == node))
        return checks_to_pb(checks)

    @_guarded(READ_ROLES)
    def Backends(self, request: admin_pb2.BackendsRequest,
                 context: grpc.ServicerContext) -> admin_pb2.BackendsReply:
        service = request.service if request.HasField("service") else None
        bs = self._provide(self._backends_provider, context, "the balancing table", None)
        if service is not None:
            if not any(s.name == service for s in bs.services):
                context.abort(grpc.StatusCode.NOT_FOUND, f"no service {service!r}; services: "
                              f"{', '.join(s.name for s in bs.services) or 'none'}")
            bs = dataclasses.replace(bs, services=tuple(s for s in bs.services if s.name == service))
        return backends_to_pb(bs)

    @_guarded(ACT_ROLES)
    def Drain(self, request: admin_pb2.DrainRequest,
              context: grpc.ServicerContext) -> admin_pb2.DrainReply:
        action = "undrain" if request.undo else "drain"
        args = {"target": request.target, "disable": request.disable}
        detail, gen = self._act(context, action, args, lambda: self._actions.drain(
            request.target, request.undo, request.disable))
        return admin_pb2.DrainReply(detail=detail, generation=gen)

    @_guarded(ACT_ROLES)
    def Weight(self, request: admin_pb2.WeightRequest,
               context: grpc.ServicerContext) -> admin_pb2.WeightReply:
        args = {"service": request.service, "backend": request.backend, "weight": request.weight}
        detail, gen = self._act(context, "weight", args, lambda: self._actions.weight(
            request.service, request.backend, request.weight))
        return admin_pb2.WeightReply(detail=detail, generation=gen)

    @_guarded(ACT_ROLES)
    def Failover(self, request: admin_pb2.FailoverRequest,
                 context: grpc.ServicerContext) -> admin_pb2.FailoverReply:
        to = request.to if request.HasField("to") else None
        args = {"to": to or "(best)", "dry_run": request.dry_run}
        if request.dry_run:  # changes nothing: not an action to audit
            out = self._run(context, "failover", lambda: self._failover(to, True, request.timeout_s))
        else:
            out = self._act(context, "failover", args,
                            lambda: self._failover(to, False, request.timeout_s),
                            describe=lambda o: o.detail)
        return admin_pb2.FailoverReply(
            source=out.plan.source, target=out.plan.target, vips=list(out.plan.vips),
            dry_run=out.dry_run, detail=out.detail, released_at_unix_ms=out.released_at_unix_ms,
            handed_over_ms=out.handed_over_ms)

    @_guarded(ACT_ROLES)
    def Maintenance(self, request: admin_pb2.MaintenanceRequest,
                    context: grpc.ServicerContext) -> admin_pb2.MaintenanceReply:
        action = "maintenance on" if request.on else "maintenance off"
        detail, gen = self._act(context, action, {"on": request.on},
                                lambda: self._actions.maintenance(request.on))
        return admin_pb2.MaintenanceReply(detail=detail, generation=gen)

    @_guarded(ACT_ROLES)
    def ChangeMembers(self, request: admin_pb2.ChangeMembersRequest,
                      context: grpc.ServicerContext) -> admin_pb2.ChangeMembersReply:
        if self._membership is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this agent does not change membership")
        m, r, steps = self._membership, request, []
        say = steps.append
        ops: dict[str, Callable[[], str]] = {
            "add": lambda: m.add(r.node, r.address, r.raft_port, r.grpc_port, not r.non_voter,
                                 r.allow_even, say),
            "remove": lambda: m.remove(r.node, r.allow_even, say),
            "replace": lambda: m.replace(r.node, r.new_node, r.address, r.raft_port, r.grpc_port,
                                         r.allow_even, say),
            "promote": lambda: m.set_voter(r.node, True, r.allow_even, say),
            "demote": lambda: m.set_voter(r.node, False, r.allow_even, say),
        }
        if r.op not in ops:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"op must be one of {', '.join(ops)}, got {r.op[:32]!r}")
        for name in ("node", "new_node") if r.op == "replace" else ("node",):
            if not _MEMBER_ID.fullmatch(getattr(r, name)):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be a member id (1-63 of "
                              f"A-Z a-z 0-9 _ . -), got {getattr(r, name)[:64]!r}")
        args = {k: v for k, v in (("node", r.node), ("new_node", r.new_node), ("address", r.address),
                                  ("raft_port", r.raft_port), ("grpc_port", r.grpc_port),
                                  ("non_voter", r.non_voter), ("allow_even", r.allow_even)) if v}
        detail = self._act(context, f"members {r.op}", args, ops[r.op], describe=str)
        return admin_pb2.ChangeMembersReply(detail=detail, steps=steps,
                                            members_generation=m.raft.state.members_generation)

    @_guarded(READ_ROLES)
    def Events(self, request: admin_pb2.EventsRequest,
               context: grpc.ServicerContext) -> Iterator[admin_pb2.Event]:
        if self._events is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this agent does not keep events")
        events = self._events
        limit = min(request.limit or CAPACITY, CAPACITY)
        after = request.after_seq if request.after_seq <= events.last_seq else 0  # agent restarted
        past = events.after(after, limit)
        seq = past[-1].seq if past else after
        for e in past:
            yield _event_to_pb(e)
        if not request.follow:
            return
        if not self._followers.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"already {MAX_FOLLOWERS} followers of this agent's events; try later")
        try:
            while context.is_active():
                for e in events.wait_after(seq, 1.0):
                    seq = e.seq
                    yield _event_to_pb(e)
        finally:
            self._followers.release()

    @_guarded(ACT_ROLES)
    def Reload(self, request: admin_pb2.ReloadRequest,
               context: grpc.ServicerContext) -> admin_pb2.ReloadReply:
        if self._reload is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this agent does not reload its config")
        reload, by = self._reload, f"admin {self._caller.identity}"
        if request.dry_run:  # changes nothing: not an action to audit
            r = self._run(context, "reload", lambda: reload(True, by))
        else:
            r = self._act(context, "reload", {}, lambda: reload(False, by),
                          describe=lambda o: "; ".join(
                              [o.detail, *o.changes, *(f"{k}: restart needed" for k, _ in o.restart),
                               *o.errors]), succeeded=lambda o: o.applied)
        return admin_pb2.ReloadReply(
            applied=r.applied, dry_run=r.dry_run, detail=r.detail, source=r.source,
            changes=list(r.changes), ignored=list(r.ignored), errors=list(r.errors),
            warnings=list(r.warnings),
            restart_keys=[admin_pb2.RestartKey(key=k, reason=why) for k, why in r.restart])

    # ------------------------------------------------------------------ actions

    def _run(self, context: grpc.ServicerContext, action: str, fn: Callable[[], _T]) -> _T:
        """A read-only action (a dry run): no audit, no event."""
        if self._failover is None and action == "failover":
            context.abort(grpc.StatusCode.UNAVAILABLE, "this agent does not take admin actions")
        try:
            return fn()
        except Refused as e:
            context.abort(REFUSAL_CODES[e.kind], str(e))
            raise  # not reached: abort raises

    def _act(self, context: grpc.ServicerContext, action: str, args: dict[str, Any],
             fn: Callable[[], Any], describe: Callable[[Any], str] | None = None,
             succeeded: Callable[[Any], bool] | None = None) -> Any:
        """Run an admin action: audit it before (no audit, no action) and after, record an
        event, log it with who asked. succeeded(out): whether it did what was asked (a
        refusal that is an answer, not an error: a reload that changed nothing)."""
        who = str(self._caller.identity)
        where = f"{who} ({context.peer()})"
        if (action == "failover" and self._failover is None) or \
                (action not in ("failover", "reload") and self._actions is None):
            context.abort(grpc.StatusCode.UNAVAILABLE, "this agent does not take admin actions")
        if self._audit is not None:
            try:
                self._audit.append(who, action, args, "started", True)
            except Exception as e:  # noqa: BLE001 - any failure to audit refuses the action
                log.error("admin %s from %s: refused: cannot write the audit log: %s", action, where, e)
                context.abort(grpc.StatusCode.INTERNAL, f"the audit log cannot be written ({e}): "
                              "no action without a trace; see the agent's log")
        try:
            out = fn()
        except Refused as e:
            log.warning("admin %s %s from %s: refused: %s", action, args, where, e)
            self._trace(who, action, args, f"refused: {e}", False)
            context.abort(REFUSAL_CODES[e.kind], str(e))
        except Exception as e:
            log.exception("admin %s %s from %s: failed", action, args, where)
            self._trace(who, action, args, f"failed: {e}", False)
            raise
        detail = describe(out) if describe else str(out[0])
        ok = succeeded(out) if succeeded else True
        log.log(logging.INFO if ok else logging.WARNING, "admin %s %s from %s: %s", action, args,
                where, detail)
        self._trace(who, action, args, detail, ok)
        return out

    def _trace(self, who: str, action: str, args: dict[str, Any], result: str, ok: bool) -> None:
        if self._events is not None:
            self._events.add("admin", f"{action} by {who}: {result}", who=who, action=action, ok=ok,
                             **{k: v for k, v in args.items()})
        if self._audit is not None:
            try:
                self._audit.append(who, action, args, result, ok)
            except Exception:  # noqa: BLE001 - the action is done; say loudly the trace is not
                log.exception("admin %s by %s: done (%s) but the audit log could not record it",
                              action, who, result)

    @staticmethod
    def _provide(provider: Callable[..., Any] | None, context: grpc.ServicerContext,
                 what: str, *args: Any) -> Any:
        if provider is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"this agent does not serve {what}")
        try:
            return provider(*args)
        except Exception as e:
            log.exception("admin: the %s provider failed", what)
            context.abort(grpc.StatusCode.INTERNAL, f"{what} unavailable: {e}")


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


def start_admin(bind: str, service: AdminService, credentials: grpc.ServerCredentials,
                max_workers: int = 4, gossip: Any = None) -> tuple[grpc.Server, int]:
    """Start the agent's gRPC server on `bind` (HOST:PORT, [v6]:PORT; port 0 picks one),
    mutual TLS only (`credentials`: TlsMaterial.server_credentials()): the Admin service,
    grpc.health.v1, and the Gossip service when `gossip` (a GossipService) is given.

    Returns the started server and the port it listens on. Raises AdminBindError when the
    address cannot be bound.
    """
    try:
        host, want = parse_hostport(bind)
    except ValueError as e:
        raise ValueError(f"admin bind address {e}") from None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=max_workers * 4,
    )
    admin_pb2_grpc.add_AdminServicer_to_server(service, server)
    if gossip is not None:
        from hacluster.api import gossip_pb2_grpc
        gossip_pb2_grpc.add_GossipServicer_to_server(gossip, server)
    _add_health(server)
    try:
        port = server.add_secure_port(bind, credentials)
    except RuntimeError:
        port = 0  # newer grpc raises; older returns 0
    if port == 0:
        raise AdminBindError(f"cannot listen for admin calls on {bind}: "
                             f"{_bind_diagnosis(host, want)}")
    server.start()
    log.info("admin API listening on %s:%d", host, port)
    return server, port


def serve_admin(bind: str, service: AdminService, credentials: grpc.ServerCredentials,
                max_workers: int = 4, gossip: Any = None) -> grpc.Server:
    """Start the agent's gRPC server on `bind`; see start_admin(). Stop with server.stop(grace)."""
    return start_admin(bind, service, credentials, max_workers, gossip)[0]


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
