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
from typing import Any

import yaml
from pydantic import ValidationError

from hacluster.config_hints import did_you_mean
from hacluster.config_spec import (  # noqa: F401 (re-exported: the schema lives there)
    ConfigSpec,
    ConntrackSyncSpec,
    GossipSpec,
    HealthSpec,
    MemberSpec,
    MetricsSpec,
    TimingSpec,
    TlsSpec,
    VipSpec,
)
from hacluster.dataplane.spec import ServiceSpec, external_checks, service_errors
from hacluster.endpoints import parse_hostport
from hacluster.gossip.types import GossipTiming
from hacluster.health.spec import AnyCheck, check_spec_errors, with_default_user
from hacluster.model import Member, SyncSettings, TlsFiles, Vip

SECRET_MIN_LEN = 16


class ConfigError(Exception):
    """A config that cannot be used. `errors` lists every problem as 'path: message'."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))



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
    idle_tick: float = 0.25  # a quiet loop's tick (s)

    @property
    def renew_every(self) -> float:
        """How often a holder renews its VIPs' kernel lifetime: a quarter of it, so a live
        holder's address always has 3/4 of its lifetime left (DESIGN.md §3.3)."""
        return self.vip_lifetime / 4


# Config fields that may change while the agent runs (Config.update_live)
# (reload.py: log_format, metrics_tls and cli_tls too; the CLI reads cli_tls itself)
LIVE_FIELDS = frozenset({"members", "services", "checks", "log_level", "metrics_listen",
                         "metrics_allowed_hosts", "health_settle", "health_rejoin",
                         "health_corroborate", "health_silence_probe", "warnings",
                         "log_format", "metrics_tls", "cli_tls"})


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

    @property
    def voters(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.voter)

    def update_live(self, **changes: Any) -> None:
        """Replace fields of this (shared) Config in place: committed membership (issue 16)
        and a validated reload. Every part holds the one Config and reads these fields when it
        uses them; one attribute store each, atomic under the GIL. Only LIVE_FIELDS may change."""
        bad = sorted(set(changes) - LIVE_FIELDS)
        if bad:
            raise ValueError(f"not changeable without a restart: {', '.join(bad)}")
        for name, value in changes.items():
            object.__setattr__(self, name, value)

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


def _pydantic_errors(err: ValidationError, doc: Any = None) -> list[str]:
    msgs = []
    for e in err.errors():
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or e["type"] == "missing" else f", got {_shown(got)}"
        hint = did_you_mean(doc, e["loc"]) if e["type"] == "extra_forbidden" else ""
        msgs.append(f"{_loc(e['loc'])}: {e['msg'].lower()}{shown}{'; ' + hint if hint else ''}")
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
    need(t.tick_ms <= t.idle_tick_ms,
         f"idle_tick_ms ({t.idle_tick_ms}) must be at least tick_ms ({t.tick_ms})")
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
    n = sum(1 for m in spec.members if m.voter)  # non-voters never count for a quorum
    if n % 2 == 0 and n:
        warns.append(f"members: {n} voters; an even count tolerates no more failures "
                     f"({(n - 1) // 2}) than {n - 1} voters do, and a 50/50 split leaves no side "
                     "with quorum (no VIP anywhere)")
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
        members=tuple(Member(m.id, m.address, m.raft_port, m.grpc_port, m.voter) for m in spec.members),
        vips=tuple(Vip(v.address, v.prefix, v.interface) for v in spec.vips),
        timing=Timing(
            heartbeat=t.heartbeat_ms / 1000, election_min=t.election_timeout_min_ms / 1000,
            election_max=t.election_timeout_max_ms / 1000, lease=t.lease_ms / 1000,
            leader_fallback=t.leader_fallback_ms / 1000, tick=t.tick_ms / 1000,
            connection_retry=t.connection_retry_ms / 1000, vip_lifetime=t.vip_lifetime_s,
            probe=t.probe_ms / 1000, idle_tick=t.idle_tick_ms / 1000,
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
        # among voters only: only a voter can ever hold the VIPs and need the flows
        address=me.address, peers=tuple(m.address for m in spec.members
                                         if m.id != spec.node_id and m.voter) if me.voter else (),
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
        raise ConfigError(source, _pydantic_errors(e, doc) + _timing_errors_alone(doc)) from None
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
    refuse = "the agent refuses to start without a cluster secret"
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(str(path), [f"secret_file: {path} is {what}; {refuse}"])
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(str(path), [f"secret_file: {path} is readable by group or others "
                                      f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"])
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as e:  # not readable by this user (the agent's: check the file's owner)
        raise ConfigError(str(path), [f"secret_file: cannot read {path}: {e.strerror or e}; "
                                      f"{refuse}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [f"secret_file: {path} is not UTF-8 text; {refuse}"]) from None
    if len(secret) < SECRET_MIN_LEN:
        raise ConfigError(str(path), [f"secret_file: {path} holds {len(secret)} characters; "
                                      f"the cluster secret needs at least {SECRET_MIN_LEN}"])
    return secret
