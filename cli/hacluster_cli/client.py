"""The CLI's side of the admin API: one call per command, errors turned into exit codes.

A thin client: it imports only the generated API, the config loader and the TLS helpers,
never the agent. Every call is mutual TLS with the operator's admin or reader certificate.
StatusReply -> AgentStatus conversion lives here (the server's opposite direction is
hacluster.admin.status_to_pb); a round-trip test keeps the two in step.

From Python:  fetch_status(target_from_config(cfg), load_tls(cfg.cli_tls, cfg.cluster,
                                                          ("admin",)).channel_credentials())
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import time
from typing import Any

import grpc

from hacluster.api import admin_pb2, admin_pb2_grpc
from hacluster.channels import admin_channel
from hacluster.config import Config
from hacluster.gossip.wire import WireError, check_from_pb, state_from_pb
from hacluster.model import (
    AgentStatus,
    BackendsStatus,
    BackendStatus,
    ChecksStatus,
    CommittedHealth,
    GossipMemberStatus,
    GossipState,
    MembersStatus,
    MemberStatus,
    NodeChecks,
    Role,
    ServiceStatus,
    SyncState,
    SyncStatus,
    VipStatus,
)

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4

DEFAULT_TIMEOUT_S = 3.0
MAX_MESSAGE_BYTES = 1 << 20

_ROLE_FROM_PB = {
    admin_pb2.ROLE_LEADER: Role.LEADER,
    admin_pb2.ROLE_FOLLOWER: Role.FOLLOWER,
    admin_pb2.ROLE_CANDIDATE: Role.CANDIDATE,
    admin_pb2.ROLE_STOPPED: Role.STOPPED,
}


class AdminCallError(Exception):
    """An admin call that did not succeed; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FAILED


class AgentUnreachable(AdminCallError):
    exit_code = EXIT_UNREACHABLE


class AgentRefused(AdminCallError):
    exit_code = EXIT_REFUSED


class TlsFailed(AgentRefused):
    """The TLS handshake with the agent failed. Said in one line, with its likely cause;
    `line(ca_file)` names the CA the CLI trusted (the caller knows it, the channel not)."""

    def __init__(self, target: str, cause: str):
        """cause: a str.format template; {ca} is the CA file's place in the sentence."""
        self.target = target
        self.cause = cause
        super().__init__(self.line())

    def line(self, ca_file: str = "") -> str:
        cause = self.cause.format(ca=f" {ca_file}" if ca_file else "")
        return f"cannot reach agent {self.target}: TLS handshake failed ({cause})"


def grpc_target(host: str, port: int) -> str:
    """host:port as gRPC wants it (IPv6 literals in brackets)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def target_from_config(cfg: Config) -> str:
    """The admin address of the server whose config this is."""
    return grpc_target(cfg.me.address, cfg.me.grpc_port)


def status_from_pb(reply: admin_pb2.StatusReply) -> AgentStatus:
    role = _ROLE_FROM_PB.get(reply.role)
    if role is None:
        raise AdminCallError(f"the agent reported role {reply.role}, unknown to this CLI "
                             "(is the agent newer than the CLI?)")
    return AgentStatus(
        node=reply.node, cluster=reply.cluster, version=reply.version, role=role,
        term=reply.term, leader=reply.leader if reply.HasField("leader") else None,
        lease_ok=reply.lease_ok, lease_remaining_ms=reply.lease_remaining_ms,
        has_quorum=reply.has_quorum, handoff=reply.handoff,
        vips=tuple(VipStatus(v.address, v.prefixlen, v.interface, v.held,
                             v.claimed_at_unix_ms if v.HasField("claimed_at_unix_ms") else None,
                             v.waiting)
                   for v in reply.vips),
        members=tuple(
            MemberStatus(m.id, m.address, m.is_self, m.connected,
                         m.last_ack_ms if m.HasField("last_ack_ms") else None, m.admin_address,
                         m.non_voter)
            for m in reply.members),
        sentence=reply.sentence, commit_index=reply.commit_index,
        last_applied=reply.last_applied, epoch_term=reply.epoch_term,
        generation=reply.generation, uptime_s=reply.uptime_s, maintenance=reply.maintenance,
        connection_sync=_sync_from_pb(reply), raft_disk_problem=reply.raft_disk_problem,
        journal_write_errors=reply.journal_write_errors,
    )


def _sync_from_pb(reply: admin_pb2.StatusReply) -> SyncStatus | None:
    """None for an agent older than the field, and for a state this CLI does not know (a
    newer agent's): the CLI cannot tell whether flows survive, so it says nothing."""
    if not reply.HasField("connection_sync"):
        return None
    s = reply.connection_sync
    try:
        state = SyncState(s.state)
    except ValueError:
        return None
    return SyncStatus(state, s.detail, s.restarts,
                      s.last_commit_ms if s.HasField("last_commit_ms") else None)


def status_to_dict(st: AgentStatus) -> dict[str, Any]:
    """JSON-ready: AgentStatus field names as keys, role as its lowercase name."""
    d = dataclasses.asdict(st)
    d["role"] = st.role.value
    d["vips"] = list(d["vips"])
    d["members"] = list(d["members"])
    if st.connection_sync is not None:
        d["connection_sync"]["state"] = st.connection_sync.state.value
    return d


def _grpc_details(details: str) -> str:
    """gRPC's error text without its wrapping: "failed to connect to all addresses; last
    error: UNKNOWN: ipv4:10.0.0.1:7101: " before the reason, and the ": OK" (the status of
    nothing) that C-core appends after some of them."""
    text = re.sub(r"^failed to connect to all addresses; last error: [A-Z_]+: "
                  r"(?:ipv[46]:\S+?:\d+: )?", "", details.strip())
    while text.endswith(": OK"):
        text = text[:-len(": OK")]
    return text


def _tls_failure(target: str, details: str) -> TlsFailed | None:
    """The failed handshake in `details` (a code UNAVAILABLE's), said with its likely cause;
    None when `details` is no TLS failure."""
    text = _grpc_details(details)
    low = text.lower()
    if "certificate_verify_failed" in low:  # the agent's certificate, checked against our CA
        return TlsFailed(target, "certificate not signed by the cluster CA{ca}?")
    if "hostname verification" in low:
        host = target.rsplit(":", 1)[0]
        return TlsFailed(target, f"the agent's certificate does not name {host}; ask it at an "
                                 "address its certificate names, see hacluster certs show")
    if any(w in low for w in ("handshake", "ssl", "certificate", "tls")):
        return TlsFailed(target, text.replace("{", "{{").replace("}", "}}"))
    return None


def _call_error(target: str, timeout: float, err: grpc.RpcError) -> AdminCallError:
    code, details = err.code(), _grpc_details(err.details() or "")
    check = (f"is hacluster-agent running on this server? is {target} the member's "
             "grpc_port?")
    if code == grpc.StatusCode.UNAVAILABLE and (tls := _tls_failure(target, details)):
        return tls
    if code == grpc.StatusCode.UNAVAILABLE and details.lower() == "socket closed":
        # what an agent that refuses our certificate does in the handshake (or one stopping)
        return AgentUnreachable(f"cannot reach agent {target}: it closed the connection (does it "
                                "trust the CA that signed our certificate? is it stopping? is "
                                f"{target} its grpc_port?)")
    if code == grpc.StatusCode.UNAVAILABLE:
        return AgentUnreachable(f"cannot reach the hacluster agent at {target}: {details}\n"
                                f"  {check}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AgentUnreachable(f"no answer from the hacluster agent at {target} within "
                                f"{timeout:g} s (agent frozen or overloaded?)\n  {check}")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AgentRefused(f"the agent at {target} refused the call: {details}\n"
                            "  check the certificate (--cert/--key, or tls.cli_cert_file in the config):"
                            " signed by this cluster's CA, and an admin one for actions")
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED):
        return AdminCallError(details)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return AdminCallError(f"{target} does not serve this call: {details}\n  is {target} a "
                              "hacluster agent's grpc_port, and is the agent this version "
                              "or newer?")
    return AdminCallError(f"the agent at {target} failed the call: {code.name}: {details}")


# An action may take the agent this long (5 compare-and-set tries of 2 s each): the CLI
# waits for it rather than giving up while the change is still on its way.
ACTION_TIMEOUT_S = 12.0
_ACTIONS = {"Drain", "Weight", "Maintenance", "Failover"}


def _call(target: str, creds: grpc.ChannelCredentials, timeout: float, method: str, request: Any) -> Any:
    """One admin call on a fresh channel; grpc errors become AdminCallError."""
    if method in _ACTIONS and method != "Failover":
        timeout = max(timeout, ACTION_TIMEOUT_S)
    with admin_channel(target, creds) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        try:
            return getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            if method in _ACTIONS and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AdminCallError(
                    f"no answer from {target} within {timeout:g} s: the OUTCOME IS UNKNOWN, the "
                    "change may still be applied. Check `hacluster status` / `hacluster backends` "
                    "before retrying (retrying the same change is safe)") from None
            raise _call_error(target, timeout, e) from None


def fetch_status(target: str, creds: grpc.ChannelCredentials,
                 timeout: float = DEFAULT_TIMEOUT_S) -> AgentStatus:
    """Ask the agent at `target` (HOST:PORT) for its status; raise AdminCallError on failure."""
    return status_from_pb(_call(target, creds, timeout, "Status", admin_pb2.StatusRequest()))


def fetch_members(target: str, creds: grpc.ChannelCredentials,
                  timeout: float = DEFAULT_TIMEOUT_S) -> MembersStatus:
    return members_from_pb(_call(target, creds, timeout, "Members", admin_pb2.MembersRequest()))


def fetch_checks(target: str, creds: grpc.ChannelCredentials, node: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> ChecksStatus:
    request = admin_pb2.ChecksRequest() if node is None else admin_pb2.ChecksRequest(node=node)
    return checks_from_pb(_call(target, creds, timeout, "Checks", request))


def fetch_backends(target: str, creds: grpc.ChannelCredentials, service: str | None = None,
                   timeout: float = DEFAULT_TIMEOUT_S) -> BackendsStatus:
    request = admin_pb2.BackendsRequest() if service is None else admin_pb2.BackendsRequest(service=service)
    return backends_from_pb(_call(target, creds, timeout, "Backends", request))


def drain(target: str, creds: grpc.ChannelCredentials, what: str, undo: bool = False, disable: bool = False,
          timeout: float = DEFAULT_TIMEOUT_S) -> tuple[str, int]:
    r = _call(target, creds, timeout, "Drain",
              admin_pb2.DrainRequest(target=what, undo=undo, disable=disable))
    return r.detail, r.generation


def set_weight(target: str, creds: grpc.ChannelCredentials, service: str, backend: str, weight: int,
               timeout: float = DEFAULT_TIMEOUT_S) -> tuple[str, int]:
    r = _call(target, creds, timeout, "Weight",
              admin_pb2.WeightRequest(service=service, backend=backend, weight=weight))
    return r.detail, r.generation


def set_maintenance(target: str, creds: grpc.ChannelCredentials, on: bool,
                    timeout: float = DEFAULT_TIMEOUT_S) -> tuple[str, int]:
    r = _call(target, creds, timeout, "Maintenance", admin_pb2.MaintenanceRequest(on=on))
    return r.detail, r.generation


def _backend_from_pb(b: admin_pb2.BackendView) -> BackendStatus:
    return BackendStatus(b.id, b.address, b.port, b.weight, b.state,
                         b.packets if b.HasField("packets") else None,
                         b.bytes if b.HasField("bytes") else None)


def backends_from_pb(reply: admin_pb2.BackendsReply) -> BackendsStatus:
    return BackendsStatus(
        node=reply.node, table_generation=reply.table_generation,
        applied_generation=reply.applied_generation if reply.HasField("applied_generation") else None,
        dataplane=reply.dataplane,
        services=tuple(ServiceStatus(
            s.name, s.vip, s.protocol, tuple(s.ports), s.algorithm,
            tuple(_backend_from_pb(b) for b in s.backends),
            _backend_from_pb(s.fallback) if s.HasField("fallback") else None)
            for s in reply.services))


def _gossip_state(value: int) -> GossipState:
    try:
        return state_from_pb(value)
    except WireError:
        raise AdminCallError(f"the agent reported gossip state {value}, unknown to this CLI "
                             "(is the agent newer than the CLI?)") from None


def members_from_pb(reply: admin_pb2.MembersReply) -> MembersStatus:
    return MembersStatus(node=reply.node, awareness=reply.awareness, members=tuple(
        GossipMemberStatus(
            id=m.id, address=m.address, is_self=m.is_self, state=_gossip_state(m.state),
            incarnation=m.incarnation,
            last_seen_s=m.last_seen_s if m.HasField("last_seen_s") else None,
            state_age_s=m.state_age_s, confirmations=m.confirmations, raft_role=m.raft_role,
            checks_passing=m.checks_passing, checks_total=m.checks_total, draining=m.draining,
            version=m.version, cpu_percent=m.cpu_percent, mem_percent=m.mem_percent,
            meta_known=m.meta_known)
        for m in reply.members))


def checks_from_pb(reply: admin_pb2.ChecksReply) -> ChecksStatus:
    try:
        nodes = tuple(NodeChecks(n.node, _gossip_state(n.state),
                                 tuple(check_from_pb(c, f"nodes[{i}].checks[{j}]")
                                       for j, c in enumerate(n.checks)))
                      for i, n in enumerate(reply.nodes))
    except WireError as e:
        raise AdminCallError(f"the agent sent a check this CLI cannot read: {e}") from None
    return ChecksStatus(node=reply.node, nodes=nodes, generation=reply.generation,
                        committed=tuple(CommittedHealth(c.node, c.check, c.healthy)
                                        for c in reply.committed))


def to_dict(value: Any) -> Any:
    """A model dataclass as JSON-ready data (enums as their values)."""
    return json.loads(json.dumps(dataclasses.asdict(value), default=str))


def _leader_target(st: AgentStatus, asked: str) -> str:
    """The admin address of the leader `st` (one agent's status) knows of."""
    if st.leader is None:
        raise AdminCallError(f"{st.node} knows no leader right now (no quorum?): a failover "
                             "needs one; see `hacluster status`")
    if st.leader == st.node:
        return asked
    m = next((m for m in st.members if m.id == st.leader), None)
    if m is None or not m.admin_address:
        raise AdminCallError(f"{st.node} does not know the admin address of the leader "
                             f"{st.leader} (an agent older than this CLI?): ask the leader with "
                             "--admin")
    return m.admin_address


def failover(target: str, creds: grpc.ChannelCredentials, to: str | None = None, dry_run: bool = False,
             wait_s: float = 3.0, timeout: float = DEFAULT_TIMEOUT_S,
             progress: Any = None) -> dict[str, Any]:
    """Move leadership and the VIPs away from the leader (to `to`, or the member the leader
    picks), through the agent at `target`, which need not be the leader. Returns what
    happened, with the switch time measured from the old holder's release to the new
    holder's claim (both as the agents logged them; across servers this includes their
    clock difference). A move to the member that already leads changes nothing ("moved":
    false, the reply's detail says so), as does a dry run."""
    say = progress or (lambda _msg: None)
    st = fetch_status(target, creds, timeout)
    leader = _leader_target(st, target)
    say(f"leader: {st.leader} ({leader})")
    request = admin_pb2.FailoverRequest(dry_run=dry_run, timeout_s=wait_s)
    if to is not None:
        request.to = to
    # the leader's own work: releasing (up to 2 s), the transfer (wait_s), the settling (~1 s)
    r = _call(leader, creds, wait_s + timeout + 3.0, "Failover", request)
    moved = not r.dry_run and r.source != r.target  # the same member: it already leads
    out: dict[str, Any] = {"source": r.source, "target": r.target, "vips": list(r.vips),
                           "dry_run": r.dry_run, "detail": r.detail, "switch_ms": None,
                           "handed_over_ms": round(r.handed_over_ms, 1) if moved else None,
                           "moved": moved}
    if not moved:
        return out
    say(f"{r.source} released {', '.join(r.vips) or 'no VIPs'}; {r.target} leads after "
        f"{r.handed_over_ms:.0f} ms")
    if not r.vips:
        return out
    new = next((m.admin_address for m in st.members if m.id == r.target), "")
    if not new:
        return out
    deadline = time.monotonic() + wait_s + timeout
    while time.monotonic() < deadline:
        try:
            tst = fetch_status(new, creds, timeout)
        except AgentUnreachable:
            tst = None
        if tst is not None:
            claimed = [v.claimed_at_unix_ms for v in tst.vips if v.held and v.claimed_at_unix_ms]
            if len(claimed) == len(r.vips):
                out["switch_ms"] = round(max(claimed) - r.released_at_unix_ms, 1)
                return out
        time.sleep(0.02)
    raise AdminCallError(f"{r.target} leads but did not report holding {', '.join(r.vips)} "
                         f"within {wait_s + timeout:g} s: see `hacluster status`")


def event_from_pb(e: admin_pb2.Event) -> dict[str, Any]:
    return {"seq": e.seq, "at_unix_ms": e.at_unix_ms, "node": e.node, "kind": e.kind, "text": e.text,
            "fields": dict(e.fields)}


def fetch_events(target: str, creds: grpc.ChannelCredentials, after: int = 0, limit: int = 0,
                 timeout: float = DEFAULT_TIMEOUT_S) -> list[dict[str, Any]]:
    """The agent's kept events after seq `after` (the newest `limit`; 0 = all kept)."""
    with admin_channel(target, creds) as channel:
        try:
            return [event_from_pb(e) for e in admin_pb2_grpc.AdminStub(channel).Events(
                admin_pb2.EventsRequest(after_seq=after, limit=limit), timeout=timeout)]
        except grpc.RpcError as e:
            raise _call_error(target, timeout, e) from None


def follow_events(target: str, creds: grpc.ChannelCredentials, after: int = 0, limit: int = 0,
                  connect_timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """Yield the agent's events as they happen (after the kept ones), until interrupted."""
    with admin_channel(target, creds) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=connect_timeout)
        except grpc.FutureTimeoutError:
            raise AgentUnreachable(f"cannot reach the hacluster agent at {target} within "
                                   f"{connect_timeout:g} s") from None
        stream = admin_pb2_grpc.AdminStub(channel).Events(
            admin_pb2.EventsRequest(after_seq=after, limit=limit, follow=True))
        try:
            for e in stream:
                yield event_from_pb(e)
        except grpc.RpcError as e:
            raise _call_error(target, connect_timeout, e) from None
        finally:
            stream.cancel()


def fetch_cluster_events(target: str, creds: grpc.ChannelCredentials, limit: int = 0,
                         timeout: float = DEFAULT_TIMEOUT_S) -> tuple[list[dict[str, Any]], list[str]]:
    """Every reachable member's events merged by time, and the members that did not answer."""
    st = fetch_status(target, creds, timeout)
    out: list[dict[str, Any]] = []
    missing = []
    for m in st.members:
        where = target if m.is_self else m.admin_address
        try:
            out += fetch_events(where, creds, 0, limit, timeout)
        except AdminCallError as e:
            missing.append(f"{m.id}: {str(e).splitlines()[0]}")
    out.sort(key=lambda e: (e["at_unix_ms"], e["node"], e["seq"]))
    return (out[-limit:] if limit else out), missing
