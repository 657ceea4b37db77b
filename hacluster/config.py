"""The agent's configuration: one YAML file per server.

load_config() returns a frozen Config or raises ConfigError carrying *every* problem found,
each with its dotted path (`members[1].raft_port: must be 1-65535, got 0`), so an operator
fixes a file in one pass. Timing invariants that the safety of VIP ownership rests on are
checked here, not discovered in production.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hacluster.dataplane.spec import ServiceSpec, external_checks, service_errors
from hacluster.endpoints import parse_hostport
from hacluster.gossip.types import GossipTiming
from hacluster.health.spec import USER_NAME, AnyCheck, CheckSpec, check_spec_errors, with_default_user
from hacluster.model import Member, SyncSettings, TlsFiles, Vip

SECRET_MIN_LEN = 16


class ConfigError(Exception):
    """A config that cannot be used. `errors` lists every problem as 'path: message'."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberSpec(_Strict):
    id: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    address: str
    raft_port: int = Field(ge=1, le=65535)
    grpc_port: int = Field(ge=1, le=65535)


class VipSpec(_Strict):
    address: str
    prefix: int = Field(ge=1, le=128)
    interface: str = Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.@:-]+$")


class TimingSpec(_Strict):
    # Defaults: 3 servers on one LAN (DESIGN.md §3), tuned by bench/failover.py.
    heartbeat_ms: int = Field(default=50, ge=5, le=10_000)
    election_timeout_min_ms: int = Field(default=250, ge=20, le=60_000)
    # 250-350: the first of two followers fires ~283 ms after the last heartbeat. A wider
    # spread only adds outage; with pre-vote a split vote costs one more round (bench/).
    election_timeout_max_ms: int = Field(default=350, ge=30, le=120_000)
    lease_ms: int = Field(default=200, ge=10, le=60_000)
    leader_fallback_ms: int = Field(default=200, ge=10, le=60_000)
    tick_ms: int = Field(default=10, ge=1, le=1_000)
    connection_retry_ms: int = Field(default=200, ge=10, le=60_000)
    vip_lifetime_s: int = Field(default=2, ge=1, le=3_600)
    probe_ms: int = Field(default=30, ge=1, le=5_000)


class GossipSpec(_Strict):
    # memberlist's LAN profile, faster: a hospital LAN has sub-millisecond RTTs, and the
    # balancing table should lose a dead server's backends within seconds, not tens.
    probe_interval_ms: int = Field(default=500, ge=50, le=60_000)
    probe_timeout_ms: int = Field(default=200, ge=10, le=30_000)
    indirect_checks: int = Field(default=3, ge=0, le=16)
    suspicion_mult: int = Field(default=4, ge=2, le=32)
    suspicion_max_timeout_mult: int = Field(default=6, ge=1, le=100)
    retransmit_mult: int = Field(default=4, ge=1, le=32)
    gossip_interval_ms: int = Field(default=200, ge=10, le=60_000)
    gossip_nodes: int = Field(default=3, ge=1, le=16)
    push_pull_interval_ms: int = Field(default=10_000, ge=100, le=3_600_000)
    reconnect_interval_ms: int = Field(default=2_000, ge=100, le=3_600_000)


class HealthSpec(_Strict):
    # How long the leader's gossiped view must hold a backend's new health before the leader
    # commits it. Node-side rise/fall already filters single failed checks; this filters
    # gossip's own flicker. bench/detection.py: it is most of the gossip-to-commit delay.
    settle_ms: int = Field(default=200, ge=0, le=600_000)
    # A member back from DEAD (healed partition, thawed process) refutes with the results
    # it had before; its backends are committed up only once it stayed alive this long.
    rejoin_ms: int = Field(default=2_000, ge=0, le=600_000)
    # A SUSPECT member whose Raft heartbeat acks have also stopped for this long, and whose
    # kernel has not acknowledged our Raft traffic for as long (TCP), is down at once: the
    # server is gone, not merely slow. A CPU-starved one's kernel still acks, so this may be
    # shorter than the Raft silences such a member shows (bench/starvation.py: up to ~0.6 s
    # at 10 % of a CPU). Was 1000 before the kernel's acks were looked at.
    corroborate_ms: int = Field(default=500, ge=100, le=600_000)
    # The leader has gossip probe a member out of turn (directly and through others at once,
    # one gossip probe timeout) once its Raft heartbeat acks have stopped this long, so that
    # the suspicion corroborate_ms waits for starts within a few heartbeats instead of at the
    # member's turn in the probe round. 0: off. Above 2 x timing.heartbeat_ms and below
    # corroborate_ms (checked).
    silence_probe_ms: int = Field(default=150, ge=0, le=600_000)


class TlsSpec(_Strict):
    """Mutual TLS for gossip and the admin API (hacluster/tls.py). Relative paths are
    relative to the config file."""

    ca_file: str = Field(min_length=1)  # the cluster CA's certificate (hacluster certs init)
    cert_file: str = Field(min_length=1)  # this node's certificate (hacluster certs issue NODE)
    key_file: str = Field(min_length=1)  # its key, mode 0600
    # What `hacluster --config THIS_FILE` presents: an admin (or reader) certificate for
    # operators on this server. Optional: without it, pass --cert/--key to the CLI.
    cli_cert_file: str | None = Field(default=None, min_length=1)
    cli_key_file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _cli_pair(self) -> TlsSpec:
        if (self.cli_cert_file is None) != (self.cli_key_file is None):
            raise ValueError("give both cli_cert_file and cli_key_file, or neither")
        return self


class MetricsSpec(_Strict):
    # Prometheus metrics over plain HTTP: whoever reaches this address reads the cluster's
    # layout (VIPs, backends, checks). HOST:PORT or [IPv6]:PORT; absent: no listener.
    listen: str | None = Field(default=None, min_length=1, max_length=300)
    # HTTPS with this node's certificate; a client certificate of the cluster CA required
    # (admin, reader or node: Prometheus gets a reader one). Off: plain HTTP.
    tls: bool = False
    # Host names the listener answers besides its address and this host's name (listener.py)
    allowed_hosts: list[Annotated[str, Field(max_length=253, pattern=r"^[A-Za-z0-9._:-]+$")]] = Field(
        default_factory=list, max_length=64)


class ConntrackSyncSpec(_Strict):
    # off: flows through a VIP break when it moves. on: run conntrackd (refuse to start
    # without it). auto: on when conntrackd is installed and this server balances services
    # with nftables (docs/snat.md).
    mode: str = Field(default="auto", pattern=r"^(off|auto|on)$")
    # The sync link: default the first VIP's interface; conntrackd binds to this member's
    # address on it and sends to the other members' addresses.
    interface: str | None = Field(default=None, min_length=1, max_length=15,
                                  pattern=r"^[A-Za-z0-9_.@:-]+$")
    # auto = unicast: one FTFW pair per peer, each on its own UDP port from `port` up
    # (port + 0 .. port + n(n-1)/2 - 1). multicast: one group for all (see docs/snat.md for
    # why that loses updates with more than two members).
    transport: str = Field(default="auto", pattern=r"^(auto|unicast|multicast)$")
    port: int = Field(default=3780, ge=1, le=65535)
    multicast_group: str = "225.0.0.50"
    # A claim waits at most this long for the synced flows to be committed to the kernel.
    commit_timeout_ms: int = Field(default=100, ge=10, le=5000)


class ConfigSpec(_Strict):
    cluster: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    node_id: str = Field(min_length=1)
    members: list[MemberSpec] = Field(min_length=1)
    vips: list[VipSpec] = Field(default_factory=list)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    gossip: GossipSpec = Field(default_factory=GossipSpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    checks: list[CheckSpec] = Field(default_factory=list)
    # exec checks run as this user unless they name their own (health/exec_check.py)
    checks_user: str | None = Field(default=None, pattern=USER_NAME)
    services: list[ServiceSpec] = Field(default_factory=list)
    # auto: nftables when usable, else the userspace proxy with a loud log line.
    dataplane: str = Field(default="auto", pattern=r"^(auto|nftables|proxy)$")
    data_dir: str
    secret_file: str
    tls: TlsSpec
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")
    # one JSON object per line for a log shipper; HACLUSTER_LOG_FORMAT overrides it (logs.py)
    log_format: str = Field(default="human", pattern=r"^(human|json)$")
    # off | auto | on, or a mapping (ConntrackSyncSpec). YAML reads a bare off/on as a
    # boolean: false/true mean off/on.
    conntrack_sync: ConntrackSyncSpec = Field(default_factory=ConntrackSyncSpec)

    @field_validator("conntrack_sync", mode="before")
    @classmethod
    def _sync_shorthand(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"mode": "on" if v else "off"}
        if isinstance(v, str):
            if v not in ("off", "auto", "on"):
                raise ValueError("must be off, auto, on or a mapping")
            return {"mode": v}
        return v


@dataclass(frozen=True)
class Timing:
    """Timings in seconds, as the code uses them."""

    heartbeat: float
    election_min: float
    election_max: float
    lease: float
    leader_fallback: float
    tick: float
    connection_retry: float
    vip_lifetime: int
    probe: float


@dataclass(frozen=True)
class Config:
    source: str
    cluster: str
    node_id: str
    members: tuple[Member, ...]
    vips: tuple[Vip, ...]
    timing: Timing
    data_dir: Path
    secret_file: Path
    tls: TlsFiles
    log_level: str
    warnings: tuple[str, ...] = ()
    gossip: GossipTiming = GossipTiming()
    checks: tuple[AnyCheck, ...] = ()
    health_settle: float = 0.2
    health_rejoin: float = 2.0
    health_corroborate: float = 0.5
    health_silence_probe: float = 0.15  # 0: off
    services: tuple[ServiceSpec, ...] = ()
    dataplane: str = "auto"
    cli_tls: TlsFiles | None = None  # the CLI's certificate on this server, if configured
    metrics_listen: str | None = None  # HOST:PORT of the Prometheus metrics listener, or None
    metrics_tls: bool = False  # the metrics/status listener is HTTPS with client certificates
    metrics_allowed_hosts: tuple[str, ...] = ()  # more names its Host header may carry
    log_format: str = "human"  # human | json (logs.py)
    conntrack_sync: SyncSettings = SyncSettings()

    @property
    def me(self) -> Member:
        return next(m for m in self.members if m.id == self.node_id)

    @property
    def peers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.id != self.node_id)

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.id == node_id), None)

    def read_secret(self) -> str:
        return read_secret(self.secret_file)


def _shown(value: Any) -> str:
    """repr(value), or what it is when Python refuses that: str() of an int of more than
    4300 digits raises ValueError, and a config can hold one (`port: 1111...`)."""
    try:
        return repr(value)
    except ValueError:
        return f"<{type(value).__name__} too large to show>"


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{_shown(part)}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _pydantic_errors(err: ValidationError) -> list[str]:
    msgs = []
    for e in err.errors():
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or e["type"] == "missing" else f", got {_shown(got)}"
        msgs.append(f"{_loc(e['loc'])}: {e['msg'].lower()}{shown}")
    return msgs


def _check_timing(t: TimingSpec) -> list[str]:
    """The inequalities VIP safety and pysyncobj rely on (DESIGN.md §3)."""
    errs = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            errs.append(f"timing: {msg}")

    need(t.election_timeout_max_ms > t.election_timeout_min_ms,
         f"election_timeout_max_ms ({t.election_timeout_max_ms}) must be greater than "
         f"election_timeout_min_ms ({t.election_timeout_min_ms})")
    need(t.election_timeout_min_ms > 3 * t.heartbeat_ms,
         f"election_timeout_min_ms ({t.election_timeout_min_ms}) must exceed 3 x heartbeat_ms "
         f"({3 * t.heartbeat_ms}), or followers start elections between heartbeats")
    # A follower that heard the leader within election_timeout_min refuses votes, so no new
    # leader can exist while a lease shorter than that is live: this is what makes I1 hold.
    need(t.lease_ms < t.election_timeout_min_ms,
         f"lease_ms ({t.lease_ms}) must be less than election_timeout_min_ms "
         f"({t.election_timeout_min_ms}), or a new leader can be elected while the old lease is live")
    need(t.lease_ms > 2 * t.heartbeat_ms,
         f"lease_ms ({t.lease_ms}) must exceed 2 x heartbeat_ms ({2 * t.heartbeat_ms}), "
         "or one late heartbeat drops the VIP")
    need(t.leader_fallback_ms <= t.lease_ms,
         f"leader_fallback_ms ({t.leader_fallback_ms}) must be <= lease_ms ({t.lease_ms})")
    need(t.leader_fallback_ms > t.heartbeat_ms,
         f"leader_fallback_ms ({t.leader_fallback_ms}) must exceed heartbeat_ms ({t.heartbeat_ms})")
    need(t.tick_ms * 4 <= t.lease_ms,
         f"tick_ms ({t.tick_ms}) must be at most lease_ms / 4 ({t.lease_ms // 4}), "
         "or the agent notices an expired lease too late")
    need(t.vip_lifetime_s * 1000 > t.lease_ms,
         f"vip_lifetime_s ({t.vip_lifetime_s}) must be longer than the lease")
    return errs


def _check_health(spec: ConfigSpec) -> list[str]:
    h, heartbeat = spec.health, spec.timing.heartbeat_ms
    if h.silence_probe_ms and not 2 * heartbeat < h.silence_probe_ms < h.corroborate_ms:
        return [f"health.silence_probe_ms: must be 0 (off) or above 2 x timing.heartbeat_ms "
                f"({2 * heartbeat}: acks are that late in a healthy cluster) and below "
                f"corroborate_ms ({h.corroborate_ms}: the probe is what corroborate waits for), "
                f"got {h.silence_probe_ms}"]
    return []


def _check_gossip(g: GossipSpec) -> list[str]:
    errs = []
    if g.probe_timeout_ms >= g.probe_interval_ms:
        errs.append(f"gossip.probe_timeout_ms: must be less than probe_interval_ms "
                    f"({g.probe_interval_ms}), got {g.probe_timeout_ms}; an indirect probe needs "
                    "the rest of the period")
    return errs


def _check_checks(spec: ConfigSpec) -> list[str]:
    errs = check_spec_errors(spec.checks)
    seen: dict[str, int] = {}
    for i, c in enumerate(spec.checks):
        if c.name in seen:
            errs.append(f"checks[{i}].name: duplicate check name {c.name!r} (also checks[{seen[c.name]}])")
        seen.setdefault(c.name, i)
    return errs


def _timing_errors_alone(doc: dict[str, Any]) -> list[str]:
    """Timing invariants, when the timing block itself is valid but other parts are not."""
    try:
        return _check_timing(TimingSpec.model_validate(doc.get("timing") or {}))
    except ValidationError:
        return []  # its schema errors are already in the list


def _check_members(spec: ConfigSpec) -> tuple[list[str], list[str]]:
    errs: list[str] = []
    warns: list[str] = []
    seen_ids: dict[str, int] = {}
    seen_eps: dict[tuple[str, int], str] = {}
    for i, m in enumerate(spec.members):
        p = f"members[{i}]"
        if m.id in seen_ids:
            errs.append(f"{p}.id: duplicate member id {m.id!r} (also members[{seen_ids[m.id]}])")
        seen_ids.setdefault(m.id, i)
        try:
            ipaddress.ip_address(m.address)
        except ValueError:
            errs.append(f"{p}.address: must be an IP address, got {m.address!r}")
        if m.raft_port == m.grpc_port:
            errs.append(f"{p}.grpc_port: must differ from raft_port ({m.raft_port})")
        for port_name, port in (("raft_port", m.raft_port), ("grpc_port", m.grpc_port)):
            key = (m.address, port)
            if key in seen_eps:
                errs.append(f"{p}.{port_name}: {m.address}:{port} is already used by {seen_eps[key]}")
            seen_eps[key] = f"{p}.{port_name}"
    if spec.node_id not in seen_ids:
        errs.append(f"node_id: {spec.node_id!r} is not one of the members "
                    f"({', '.join(sorted(seen_ids)) or 'none'})")
    n = len(spec.members)
    if n % 2 == 0:
        warns.append(f"members: {n} voters; an even count tolerates no more failures than {n - 1} "
                     "and a 50/50 split leaves no side with quorum (no VIP anywhere)")
    return errs, warns


def _check_vips(spec: ConfigSpec) -> list[str]:
    errs = []
    member_addrs = {m.address for m in spec.members}
    seen: dict[str, int] = {}
    for i, v in enumerate(spec.vips):
        p = f"vips[{i}]"
        try:
            ip = ipaddress.ip_address(v.address)
        except ValueError:
            errs.append(f"{p}.address: must be an IP address, got {v.address!r}")
            continue
        if ip.version == 6:
            errs.append(f"{p}.address: IPv6 VIPs are not supported yet (unsolicited NA is not "
                        f"implemented); use an IPv4 address, got {v.address}")
            continue
        if v.prefix > 32:
            errs.append(f"{p}.prefix: must be 1-32 for an IPv4 address, got {v.prefix}")
        if v.address in member_addrs:
            errs.append(f"{p}.address: {v.address} is a member's own address; a VIP must be free")
        if v.address in seen:
            errs.append(f"{p}.address: duplicate VIP {v.address} (also vips[{seen[v.address]}])")
        seen.setdefault(v.address, i)
    return errs


def _to_config(source: str, spec: ConfigSpec, base: Path, warns: list[str]) -> Config:
    t = spec.timing

    def rel(p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else (base / path).resolve()

    return Config(
        source=source,
        cluster=spec.cluster,
        node_id=spec.node_id,
        members=tuple(Member(m.id, m.address, m.raft_port, m.grpc_port) for m in spec.members),
        vips=tuple(Vip(v.address, v.prefix, v.interface) for v in spec.vips),
        timing=Timing(
            heartbeat=t.heartbeat_ms / 1000, election_min=t.election_timeout_min_ms / 1000,
            election_max=t.election_timeout_max_ms / 1000, lease=t.lease_ms / 1000,
            leader_fallback=t.leader_fallback_ms / 1000, tick=t.tick_ms / 1000,
            connection_retry=t.connection_retry_ms / 1000, vip_lifetime=t.vip_lifetime_s,
            probe=t.probe_ms / 1000,
        ),
        data_dir=rel(spec.data_dir),
        secret_file=rel(spec.secret_file),
        tls=TlsFiles(rel(spec.tls.ca_file), rel(spec.tls.cert_file), rel(spec.tls.key_file)),
        cli_tls=None if spec.tls.cli_cert_file is None or spec.tls.cli_key_file is None else TlsFiles(
            rel(spec.tls.ca_file), rel(spec.tls.cli_cert_file), rel(spec.tls.cli_key_file)),
        log_level=spec.log_level,
        warnings=tuple(warns),
        gossip=GossipTiming(**{
            k.removesuffix("_ms"): (v / 1000 if k.endswith("_ms") else v)
            for k, v in spec.gossip.model_dump().items()}),
        # the configured checks, then those derived for external backends (spec.py)
        checks=with_default_user(tuple(spec.checks) + tuple(external_checks(spec.services, spec.checks)),
                                 spec.checks_user),
        health_settle=spec.health.settle_ms / 1000,
        health_rejoin=spec.health.rejoin_ms / 1000,
        health_corroborate=spec.health.corroborate_ms / 1000,
        health_silence_probe=spec.health.silence_probe_ms / 1000,
        services=tuple(spec.services),
        dataplane=spec.dataplane,
        metrics_listen=spec.metrics.listen,
        metrics_tls=spec.metrics.tls,
        metrics_allowed_hosts=tuple(spec.metrics.allowed_hosts),
        log_format=spec.log_format,
        conntrack_sync=_sync_settings(spec),
    )


def _sync_settings(spec: ConfigSpec) -> SyncSettings:
    c = spec.conntrack_sync
    me = next(m for m in spec.members if m.id == spec.node_id)
    return SyncSettings(
        mode=c.mode, interface=c.interface or (spec.vips[0].interface if spec.vips else ""),
        address=me.address, peers=tuple(m.address for m in spec.members if m.id != spec.node_id),
        transport=c.transport, port=c.port, multicast_group=c.multicast_group,
        commit_timeout=c.commit_timeout_ms / 1000)


def _check_sync(spec: ConfigSpec) -> list[str]:
    c = spec.conntrack_sync
    if c.mode == "off":
        return []
    errs = []
    try:
        group = ipaddress.ip_address(c.multicast_group)
        if group.version != 4 or not group.is_multicast:
            errs.append(f"conntrack_sync.multicast_group: {c.multicast_group} is not an IPv4 "
                        f"multicast address (224.0.0.0/4)")
    except ValueError:
        errs.append(f"conntrack_sync.multicast_group: {c.multicast_group!r} is not an IP address")
    n = len(spec.members)
    if c.transport != "multicast" and c.port + n * (n - 1) // 2 - 1 > 65535:
        errs.append(f"conntrack_sync.port: {c.port} leaves no room for the {n * (n - 1) // 2} "
                    f"pair ports a {n}-member cluster uses")
    if c.mode != "on":
        return errs
    # `on` promises flows survive: what would make that impossible is an error now
    if not c.interface and not spec.vips:
        errs.append("conntrack_sync.interface: needed when there are no vips to take it from")
    if len(spec.members) < 2:
        errs.append("conntrack_sync: on needs at least two members to sync between")
    for m in spec.members:
        try:
            if ipaddress.ip_address(m.address).version != 4:
                errs.append(f"conntrack_sync: member {m.id}'s address {m.address} is not IPv4; "
                            f"hacluster runs conntrackd over IPv4 only")
        except ValueError:
            pass  # the members check says so
    if spec.dataplane == "proxy":
        errs.append("conntrack_sync: on with dataplane: proxy: the userspace proxy terminates "
                    "TCP, so there is no kernel flow state to sync (docs/snat.md)")
    return errs


def _check_metrics(spec: ConfigSpec) -> list[str]:
    if spec.metrics.listen is None:
        return []
    try:
        host, port = parse_hostport(spec.metrics.listen)
    except ValueError as e:
        return [f"metrics.listen: {e}"]
    if port == 0:
        return [f"metrics.listen: needs a fixed port (Prometheus scrapes a known address), "
                f"got {spec.metrics.listen!r}"]
    me = next((m for m in spec.members if m.id == spec.node_id), None)
    if me is not None and host in (me.address, "0.0.0.0", "::"):
        for name in ("raft_port", "grpc_port"):
            if port == getattr(me, name):
                return [f"metrics.listen: port {port} is this member's {name}"]
    return []


def parse_config(doc: Any, source: str = "<config>", base: Path | None = None) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    if not isinstance(doc, dict):
        raise ConfigError(source, [f"(top level): must be a mapping of settings, got "
                                   f"{type(doc).__name__}"])
    try:
        spec = ConfigSpec.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(source, _pydantic_errors(e) + _timing_errors_alone(doc)) from None
    errs = _check_timing(spec.timing)
    member_errs, warns = _check_members(spec)
    errs += member_errs + _check_vips(spec) + _check_gossip(spec.gossip) + _check_checks(spec)
    errs += _check_health(spec)
    errs += _check_metrics(spec)
    errs += _check_sync(spec)
    errs += service_errors(spec.services, {m.id for m in spec.members},
                           {v.address for v in spec.vips}, {c.name for c in spec.checks}, spec.members)
    errs += _path_errors(spec)
    if errs:
        raise ConfigError(source, errs)
    return _to_config(source, spec, base or Path.cwd(), warns)


def _path_errors(spec: ConfigSpec) -> list[str]:
    """Paths that _to_config's Path.resolve() would raise on: a NUL character, or a lone
    surrogate (YAML's "\\ud800") that the file system encoding cannot take."""
    paths = {"data_dir": spec.data_dir, "secret_file": spec.secret_file,
             **{f"tls.{k}": v for k, v in spec.tls.model_dump().items() if isinstance(v, str)}}
    errs = []
    for where, value in paths.items():
        try:
            usable = "\x00" not in os.fsdecode(os.fsencode(value))
        except UnicodeEncodeError:
            usable = False
        if not usable:
            errs.append(f"{where}: not a usable file path, got {_shown(value)}")
    return errs


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), [f"(file): cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [f"(file): not UTF-8 text: byte {e.start} ({e.reason})"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(p), [f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    except RecursionError:
        raise ConfigError(str(p), ["(file): not valid YAML: nested too deeply"]) from None
    except Exception as e:
        # PyYAML's constructors let Python's own errors out on some values: `!!int ""`
        # (IndexError), `!!bool x` (KeyError), `!!timestamp x` (AttributeError), a date
        # `2001-13-14` or a number of more than 4300 digits (ValueError).
        raise ConfigError(str(p), [f"(file): not valid YAML: a value cannot be read "
                                   f"({type(e).__name__}: {e})"]) from None
    return parse_config(doc, str(p), p.resolve().parent)


def read_secret(path: Path) -> str:
    """Read the cluster secret; refuse a missing, short or group/world-readable file.

    The secret is pysyncobj's `password`: without it anyone reaching the Raft port could make
    the agent unpickle arbitrary data (DESIGN.md §4). So there is no way to run without one.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(str(path), [f"secret_file: cannot read {path}: {e.strerror or e}; "
                                      "the agent refuses to start without a cluster secret"]) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(str(path), [f"secret_file: {path} is readable by group or others "
                                      f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"])
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < SECRET_MIN_LEN:
        raise ConfigError(str(path), [f"secret_file: {path} holds {len(secret)} characters; "
                                      f"the cluster secret needs at least {SECRET_MIN_LEN}"])
    return secret
