"""Config reload without a restart (issue 16 item 3): `systemctl reload hacluster` (SIGHUP)
and `hacluster reload` (Admin.Reload) re-read the agent's file and apply what may change live.

All or nothing. The new file is validated first (load_config: every error with its path);
then `plan(old, new)` sorts each changed field of Config into live changes, keys that need a
restart (each with the reason) and keys that are ignored (members: membership lives in the
cluster, the file only seeds it). Any restart key refuses the whole reload and changes nothing;
otherwise `Reloader` applies, the reversible step first (the metrics listener binds its new
address before the old one stops, so a taken port refuses the reload), then the checks, then
one `Config.update_live` of every live field (each part reads the shared Config when it uses
it: the leader's table step rebuilds the table from the new services within a tick and
proposes it; every member's data plane follows the committed table), then the log level.

A field of Config that this module does not know is a restart key ("not known to be safe to
change live"), so a field added later is refused until someone decides otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hacluster.config import Config, ConfigError, load_config
from hacluster.dataplane.build import backend_id
from hacluster.dataplane.spec import ServiceSpec
from hacluster.events import EventLog
from hacluster.logs import setup_logging

log = logging.getLogger(__name__)

# Why each key needs a restart. Keys are Config's field names; the operator sees them as such.
RESTART_REASONS = {
    "cluster": "the cluster name is in every member's certificate and in Raft: a different "
               "cluster is a different set of agents",
    "node_id": "this server's identity in Raft, gossip and its certificate is fixed at start-up",
    "vips": "VIPs are claimed, fenced and synced by the HA loop from start-up; adding or removing "
            "one live is not supported yet (restart the members one at a time, followers first)",
    "timing": "Raft's timings and the lease are set when Raft starts, and members must agree "
              "on them for the lease to be safe",
    "data_dir": "Raft's journal and the audit log are opened there at start-up",
    "secret_file": "the cluster secret is Raft's password, read once at start-up",
    "tls": "the agent's certificate, key and CA are loaded at start-up",
    "gossip": "gossip timings are set when membership starts",
    "dataplane": "the data plane (nftables or the userspace proxy) is chosen at start-up",
    "conntrack_sync": "conntrackd is configured and started with the agent",
}
# Fields that change nothing to report (the file's path; the new warnings are logged).
_QUIET = frozenset({"source", "warnings"})
_METRICS = ("metrics_listen", "metrics_tls", "metrics_allowed_hosts")
_HEALTH = {"health_settle": "health.settle_ms", "health_rejoin": "health.rejoin_ms",
           "health_corroborate": "health.corroborate_ms",
           "health_silence_probe": "health.silence_probe_ms"}
_LIVE = frozenset({"services", "checks", "log_level", "log_format", "cli_tls", *_METRICS, *_HEALTH})
MEMBERS_IGNORED = ("members: ignored: membership lives in the cluster (the file only seeds a new "
                   "one); use `hacluster members add/remove`")


@dataclass(frozen=True)
class ReloadPlan:
    live: dict[str, Any]  # Config field -> its new value, for Config.update_live
    changes: tuple[str, ...]  # what the live part changes, one line each
    restart: tuple[tuple[str, str], ...]  # (key, reason): refused
    ignored: tuple[str, ...]

    @property
    def refused(self) -> bool:
        return bool(self.restart)


@dataclass(frozen=True)
class ReloadResult:
    applied: bool
    detail: str
    source: str
    dry_run: bool = False
    changes: tuple[str, ...] = ()
    restart: tuple[tuple[str, str], ...] = ()
    ignored: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def plan(old: Config, new: Config) -> ReloadPlan:
    """Sort every field that differs between the running config and the file's (pure)."""
    live: dict[str, Any] = {}
    changes: list[str] = []
    restart: list[tuple[str, str]] = []
    ignored: list[str] = []
    for f in dataclasses.fields(Config):
        name = f.name
        before, after = getattr(old, name), getattr(new, name)
        if name in _QUIET:
            if name == "warnings":
                live[name] = after
            continue
        if before == after:
            continue
        if name == "members":
            mine = _own_member_change(old, new)
            if mine:
                restart.append((f"members[{old.node_id}]", mine))
            if len(before) != len(after) or any(
                    a != b for a, b in zip(before, after, strict=False) if a.id != old.node_id):
                ignored.append(MEMBERS_IGNORED)
        elif name == "conntrack_sync" and _sync_same_but_members(before, after):
            pass  # only the peers (from members) differ: ignored with members
        elif name == "services" and bool(before) != bool(after):
            restart.append((name, "the data plane is built at start-up only when there are "
                                  "services: going from none to some (or back) needs a restart"))
        elif name in _LIVE:
            live[name] = after
            changes.extend(_describe(name, before, after))
        else:
            restart.append((name, RESTART_REASONS.get(name, "not known to be safe to change live")))
    return ReloadPlan(live, tuple(changes), tuple(restart), tuple(ignored))


def _own_member_change(old: Config, new: Config) -> str:
    """This server's own address or ports changed: its listeners are bound at start-up."""
    me, now = old.me, new.member(old.node_id)
    if now is None or (now.address, now.raft_port, now.grpc_port) == (me.address, me.raft_port,
                                                                      me.grpc_port):
        return ""
    return (f"this server's address and ports ({me.address}, raft {me.raft_port}, grpc "
            f"{me.grpc_port}) are bound at start-up, and the other members know them: a "
            "membership change and a restart")


def _sync_same_but_members(a: Any, b: Any) -> bool:
    return dataclasses.replace(b, peers=a.peers, address=a.address) == a


def _describe(name: str, before: Any, after: Any) -> list[str]:
    if name == "services":
        return service_changes(before, after)
    if name == "checks":
        return _named_changes("check", before, after)
    if name in _HEALTH:
        return [f"{_HEALTH[name]}: {before * 1000:g} -> {after * 1000:g}"]
    if name == "cli_tls":
        return ["tls.cli_cert_file/cli_key_file: changed (the CLI reads them itself)"]
    key = {"metrics_listen": "metrics.listen", "metrics_tls": "metrics.tls",
           "metrics_allowed_hosts": "metrics.allowed_hosts"}.get(name, name)
    return [f"{key}: {_short(before)} -> {_short(after)}"]


def _short(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return "none" if v is None else str(v)


def _named_changes(what: str, before: Sequence[Any], after: Sequence[Any]) -> list[str]:
    old, new = {x.name: x for x in before}, {x.name: x for x in after}
    out = [f"{what} {n} added" for n in new if n not in old]
    out += [f"{what} {n} removed" for n in old if n not in new]
    out += [f"{what} {n} changed" for n in new if n in old and new[n] != old[n]]
    return out


def service_changes(before: Sequence[ServiceSpec], after: Sequence[ServiceSpec]) -> list[str]:
    """Services and backends added/removed, weights and algorithms changed, other fields named."""
    old, new = {s.name: s for s in before}, {s.name: s for s in after}
    out = [f"service {n} added ({len(s.backends)} backends)" for n, s in new.items() if n not in old]
    out += [f"service {n} removed" for n in old if n not in new]
    for n, s in new.items():
        o = old.get(n)
        if o is None or o == s:
            continue
        ob = {backend_id(b, o.backend_port): b for b in o.backends}
        nb = {backend_id(b, s.backend_port): b for b in s.backends}
        out += [f"service {n}: backend {b} added (weight {nb[b].weight})" for b in nb if b not in ob]
        out += [f"service {n}: backend {b} removed" for b in ob if b not in nb]
        out += [f"service {n}: backend {b} weight {ob[b].weight} -> {nb[b].weight}"
                for b in nb if b in ob and ob[b].weight != nb[b].weight]
        if o.algorithm != s.algorithm:
            out.append(f"service {n}: algorithm {o.algorithm.value} -> {s.algorithm.value}")
        other = sorted(k for k in type(s).model_fields if k not in ("backends", "algorithm")
                       and getattr(o, k) != getattr(s, k))
        if other:
            out.append(f"service {n}: {', '.join(other)} changed")
    return out


class Reloader:
    """Reloads the shared Config from its file; one reload at a time.

    on_metrics(new): rebind the metrics listener from `new` (raise to refuse: nothing else
    has changed yet). on_checks(checks): run this set of checks from now on. Both run only
    when their fields change. events: where the result is recorded (kind "agent"). audit:
    an audit.AuditLog for the reloads no admin asked for (SIGHUP); admin.py audits the rest."""

    def __init__(self, config: Config, *, events: EventLog | None = None, audit: Any = None,
                 on_metrics: Callable[[Config], None] | None = None,
                 on_checks: Callable[[tuple[Any, ...]], None] | None = None,
                 load: Callable[[str], Config] = load_config):
        self.config = config
        self.events = events
        self.audit = audit
        self.on_metrics = on_metrics
        self.on_checks = on_checks
        self.load = load
        self._lock = threading.Lock()
        self._wake: queue.SimpleQueue[str | None] = queue.SimpleQueue()  # put() is signal-safe
        self._thread: threading.Thread | None = None

    def reload(self, dry_run: bool = False, by: str = "") -> ReloadResult:
        with self._lock:
            result = self._reload(dry_run)
        if not dry_run:
            self._record(result, by)
            if self.audit is not None and not by.startswith("admin"):
                try:
                    self.audit.append(f"local {by or 'caller'}", "reload", {}, result.detail,
                                      result.applied)
                except Exception:  # noqa: BLE001 - done already; say the trace is missing
                    log.exception("config reload: the audit log could not record it")
        return result

    def _reload(self, dry_run: bool) -> ReloadResult:
        source = self.config.source
        try:
            new = self.load(source)
        except ConfigError as e:
            return ReloadResult(False, f"refused: {source} has {len(e.errors)} error(s); nothing "
                                "changed", source, dry_run, errors=tuple(e.errors))
        p = plan(self.config, new)
        common: dict[str, Any] = {"source": source, "dry_run": dry_run, "changes": p.changes,
                                  "restart": p.restart, "ignored": p.ignored,
                                  "warnings": new.warnings}
        if p.refused:
            keys = ", ".join(k for k, _ in p.restart)
            return ReloadResult(False, f"refused: {keys} need a restart; nothing changed", **common)
        if dry_run or not p.changes:
            what = f"{len(p.changes)} change(s)" if p.changes else "no change"
            if not dry_run:
                self.config.update_live(**p.live)  # warnings only
            return ReloadResult(not dry_run, f"{'dry run: ' if dry_run else ''}{what}"
                                f"{' (nothing applied)' if dry_run else ''}", **common)
        try:
            self._apply(new, p)
        except Exception as e:  # noqa: BLE001 - the listener or the runner refused: undone
            return ReloadResult(False, f"refused: {e}; nothing changed", **common)
        return ReloadResult(True, f"applied {len(p.changes)} change(s)", **common)

    def _apply(self, new: Config, p: ReloadPlan) -> None:
        rebind = self.on_metrics is not None and any(k in p.live for k in _METRICS)
        if rebind:
            self.on_metrics(new)  # first: it may refuse (a taken port), and can be undone
        if self.on_checks is not None and "checks" in p.live:
            try:
                self.on_checks(new.checks)
            except Exception:
                if rebind:  # back to the running config's listener: nothing half-applied
                    self.on_metrics(self.config)
                raise
        self.config.update_live(**p.live)
        if "log_level" in p.live or "log_format" in p.live:
            setup_logging(new.log_level, new.log_format)

    def _record(self, r: ReloadResult, by: str) -> None:
        who = f" ({by})" if by else ""
        lines = list(r.changes) + [f"{k}: {why}" for k, why in r.restart] + list(r.ignored) \
            + list(r.errors)
        level = logging.INFO if r.applied else logging.ERROR
        log.log(level, "config reload%s: %s%s", who, r.detail,
                "".join(f"\n  {line}" for line in lines))
        for w in r.ignored + r.warnings:
            log.warning("config reload: %s", w)
        if self.events is not None:
            summary = "; ".join(lines[:8]) + (f"; ... {len(lines) - 8} more" if len(lines) > 8 else "")
            self.events.add("agent", f"config reload{who}: {r.detail}" + (f": {summary}" if summary else ""),
                            applied=r.applied, changes=len(r.changes),
                            restart_keys=",".join(k for k, _ in r.restart))

    # ------------------------------------------------------------------ SIGHUP

    def request(self, by: str = "SIGHUP") -> None:
        """Ask for a reload from a signal handler: the reload runs on this object's thread."""
        self._wake.put(by)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="config-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._wake.put(None)

    def _serve(self) -> None:
        while (by := self._wake.get()) is not None:
            try:
                self.reload(by=by)
            except Exception:  # noqa: BLE001 - the next SIGHUP must still work
                log.exception("config reload failed")
