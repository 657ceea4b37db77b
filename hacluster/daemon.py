"""`hacluster-agent`: build every part of one server's agent, start them in order, run the HA
loop, and stop them in the reverse order.

The order matters: the admin/gossip gRPC server binds first (a taken port stops start-up
before anything else runs), the Raft port guard is in place before Raft listens, Raft starts
before gossip, checks and the data plane (they read its state), and the loop runs last, on
the main thread. On SIGTERM the loop ends, releases its VIPs and hands leadership over
(HaLoop.shutdown); then peers are told we leave, and the rest stops.

Every part is built in Daemon.__init__ and finished there: nothing is set afterwards.
gRPC starts threads when imported, and the systemd notifier must read (and unset) its
environment before any thread runs, so the heavy imports happen inside functions.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from hacluster import __version__
from hacluster.config import Config, ConfigError, load_config
from hacluster.logs import print_error, setup_logging
from hacluster.sdnotify import Notifier

log = logging.getLogger(__name__)

LEAVE_TIMEOUT_S = 0.5  # on stop: how long to spend telling the cluster we leave
GUARD_CHECK_S = 10.0  # how often the Raft port guard is checked (and put back if gone)
LISTENER_CHECK_S = 2.0  # how often the guard loop checks that Raft listens on its port
LISTENER_REPEAT_S = 30.0  # while it does not: the ERROR again this often
AUDIT_FILE = "audit.jsonl"  # in data_dir: every admin action this agent executed (audit.py)


class StartupError(Exception):
    """The agent cannot start; the message says why (exit code `code`)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class Daemon:
    def __init__(self, config: Config, secret: str, notifier: Notifier):
        from hacluster import clock, roster
        from hacluster.actions import AdminActions
        from hacluster.admin import AdminService
        from hacluster.agent import Agent
        from hacluster.consensus.raft import RaftNode
        from hacluster.events import EventLog
        from hacluster.ha.members import MembershipChanges
        from hacluster.hostops.netlink import NetlinkHostOps
        from hacluster.hostops.nftwatch import NftWatch
        from hacluster.metrics import FailoverHistogram, Timings
        from hacluster.reload import Reloader
        from hacluster.sdnotify import WatchdogPinger
        from hacluster.tls import Authority

        self.config = config
        self.notifier = notifier
        try:  # the membership last seen committed replaces the file's (the file only seeds)
            said = roster.load(config)
        except ValueError as e:
            raise StartupError(str(e)) from None
        if said:
            log.info("%s", said)
        self.tls = _load_tls(config)
        self.audit = _open_audit(config)
        self.failovers, self.timings = FailoverHistogram(), Timings()
        # nftables change notifications: the data plane and the Raft port guard read the
        # kernel back when it changed, not every few seconds (issue 17)
        self.nft_watch = NftWatch()
        self.guard_recheck = threading.Event()
        self.dataplane = _make_dataplane(config, self.timings, self.nft_watch.working)
        self.hostops = NetlinkHostOps()
        self.raft = RaftNode(config, secret)
        self.membership, self.gossip_service, self.transport = _make_gossip(config, self.tls, self.timings)
        events = EventLog(config.node_id)
        self.sync = _make_sync(config, self.dataplane, events)
        self.agent = Agent(config, self.hostops, self.raft, gossip=self.membership,
                           dataplane=self.dataplane, failovers=self.failovers, timings=self.timings,
                           watchdog=WatchdogPinger(notifier, clock.now), events=events, sync=self.sync)
        self.runner, self.feed = _make_health(config, self.raft, self.membership)
        self.reloader = Reloader(config, events=events, audit=self.audit,
                                 on_metrics=self._rebind_metrics, on_checks=self._run_checks)
        views = self.agent.views
        actions = AdminActions(config, self.raft)
        self.changes = MembershipChanges(config, self.raft,
                                         drain=lambda node, undo: actions.drain(node, undo, False))
        self.admin = AdminService(
            views.status, Authority(config.cluster), members_provider=views.members_status,
            checks_provider=views.checks_status, backends_provider=views.backends_status,
            actions=actions, failover=self.agent.failover.run,
            events=self.agent.events, audit=self.audit, membership=self.changes,
            reload=self.reloader.reload)
        self.roster = roster.Roster(config, self.raft, events, self._membership_listeners(),
                                    on_self_change=self._self_changed)
        self.restart_reason: str | None = None  # set when our own role changed (roster)
        self.guard_stop = threading.Event()
        self.server: Any = None
        self.raft_guard: Any = None
        self.metrics_server: Any = None

    def start(self) -> None:
        from hacluster.admin import serve_admin

        c = self.config
        try:
            self.server = serve_admin(c.me.grpc_endpoint, self.admin, self.tls.server_credentials(),
                                      max_workers=8, gossip=self.gossip_service)
        except Exception as e:  # noqa: BLE001 - any bind error must stop start-up loudly
            raise StartupError(f"cannot serve admin API on {c.me.grpc_endpoint}: {e}", 1) from None
        self.raft_guard = _make_raft_guard(c)  # before raft.start(): Raft never listens unguarded
        _keep_raft_guard(self.raft_guard, c, self.agent.events, self.guard_stop,
                         ListenerWatch(self.raft.listener_up, c.me.raft_port, self.agent.events),
                         self.guard_recheck, self.nft_watch.working)
        watchers = [self.guard_recheck.set] if self.raft_guard is not None else []
        if getattr(self.dataplane, "name", "") == "nftables":
            watchers.append(self.dataplane.kernel_changed)
        self.nft_watch.start(watchers)  # no thread when nothing here uses nftables
        self.sync.start()  # before Raft: the flows of the holder arrive before we may claim
        self.raft.start()
        self.roster.start()  # follows (and first seeds) the committed membership
        self.membership.start()  # joins (push-pull with a peer) from its own thread
        self.runner.start()
        self.feed.start()
        if self.dataplane is not None:
            self.dataplane.start()
        self.metrics_server = _serve_metrics(c, self.agent, self.failovers, self.timings, self.tls,
                                             self.raft)
        self.reloader.start()
        # systemctl reload: the reload runs on the reloader's thread, never in the handler
        signal.signal(signal.SIGHUP, lambda _s, _f: self.reloader.request("SIGHUP"))
        log.info("hacluster-agent %s: node %s of cluster %s, %d member(s), VIPs: %s, checks: %s",
                 __version__, c.node_id, c.cluster, len(c.members),
                 ", ".join(str(v) for v in c.vips) or "none",
                 ", ".join(f"{k.name} ({k.kind})" for k in c.checks) or "none")

    def run(self) -> None:
        """The HA loop on this thread until SIGTERM/SIGINT, then release and hand over."""
        loop = self.agent.loop

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.notifier.stopping("stopping: releasing VIPs, handing leadership over")
            loop.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.notifier.ready(loop.report().sentence)  # admin gRPC serves, Raft started
        loop.run()
        loop.shutdown()

    def _membership_listeners(self) -> list[Callable[[Any], None]]:
        """The parts that keep their own copy of the membership, told when it changes."""
        c = self.config

        def gossip(members: Any) -> None:
            endpoints = {m.id: m.grpc_endpoint for m in members}
            self.membership.set_peers(endpoints)
            self.gossip_service.set_members(endpoints)

        def guard(members: Any) -> None:
            if self.raft_guard is not None:
                self.raft_guard.apply([(m.id, m.address) for m in members], c.me.raft_port, c.me.address)
                log.info("raft guard: port %d accepts %d member address(es)", c.me.raft_port,
                         len({m.address for m in members}))

        def sync(members: Any) -> None:
            me = next((m for m in members if m.id == c.node_id), None)
            if hasattr(self.sync, "set_peers") and me is not None and me.voter:
                self.sync.set_peers(tuple(m.address for m in members if m.voter and m.id != c.node_id))

        return [gossip, guard, sync]

    def _self_changed(self, why: str) -> None:
        """Removed, promoted or demoted: stop the loop (it releases what it holds); main()
        restarts the agent in its new role, or exits when removed."""
        log.warning("membership: %s: the agent %s", why,
                    "stops" if "removed" in why else "restarts its Raft in the new role")
        self.restart_reason = why
        self.raft.retire()
        self.agent.loop.stop()

    def stop(self) -> None:
        """Stop every part after run(): listeners first, the data plane (which carries the
        clients' flows) and the host last. One step failing does not stop the rest."""
        for step, fn in (("roster", self.roster.stop), ("config reload", self.reloader.stop),
                         ("metrics", lambda: self.metrics_server and self.metrics_server.stop()),
                         ("health feed", self.feed.stop), ("checks", self.runner.stop),
                         # peers mark us LEFT: our backends go down at once
                         ("gossip leave", lambda: self.membership.leave(LEAVE_TIMEOUT_S)),
                         ("gossip", self.membership.stop),
                         ("gRPC server", lambda: self.server.stop(0.2)),
                         ("gossip channels", self.transport.close), ("raft", self.raft.stop),
                         ("raft guard", lambda: self.guard_stop.set()
                          or (self.raft_guard and self.raft_guard.remove())),
                         ("nftables watch", self.nft_watch.stop),
                         ("data plane", lambda: self.dataplane and self.dataplane.stop()),
                         ("connection sync", self.sync.stop),
                         ("hostops", self.hostops.close), ("audit log", self.audit.close)):
            try:
                fn()
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                log.exception("stopping %s failed", step)

    def _run_checks(self, checks: Any) -> None:
        """A reload's new check set (HealthRunner.update: unchanged checks keep running)."""
        self.runner.update(checks)
        _say_how_exec_checks_run(checks)

    def _rebind_metrics(self, new: Config) -> None:
        """A reload's metrics listener: the new address bound before the old one stops, so
        that a taken port refuses the reload (MetricsBindError) with the old one still up."""
        old = self.metrics_server
        same = old is not None and new.metrics_listen == self.config.metrics_listen
        if same:
            old.stop()
        args = (self.agent, self.failovers, self.timings, self.tls, self.raft)
        try:
            server = _bind_metrics(new, *args) if new.metrics_listen else None
        except Exception:
            if same:
                self.metrics_server = _bind_metrics(self.config, *args)
            raise
        if old is not None and not same:
            old.stop()
        self.metrics_server = server


def _load_tls(config: Config) -> Any:
    from hacluster.tls import TlsError, load_tls

    try:
        tls = load_tls(config.tls, config.cluster, ("node",), config.node_id)
    except TlsError as e:
        raise StartupError(f"tls.{e}") from None
    log.info("mutual TLS: %s, certificate valid until %s", tls.identity, tls.not_after.strftime("%Y-%m-%d"))
    return tls


def _open_audit(config: Config) -> Any:
    from hacluster.audit import AuditError, AuditLog

    try:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return AuditLog(config.data_dir / AUDIT_FILE, config.node_id)
    except (OSError, AuditError) as e:
        raise StartupError(f"the audit log {config.data_dir / AUDIT_FILE} cannot be opened: {e}") from None


def _make_gossip(config: Config, tls: Any, timings: Any) -> tuple[Any, Any, Any]:
    from hacluster.channels import peer_channel
    from hacluster.gossip.grpc_transport import GossipService, GrpcTransport
    from hacluster.gossip.membership import Membership
    from hacluster.tls import Authority

    creds = tls.channel_credentials()
    transport = GrpcTransport(config.node_id, lambda address: peer_channel(address, creds),
                              on_rtt=timings.observe_probe_rtt)
    membership = Membership(
        config.node_id, config.me.grpc_endpoint,
        {p.id: p.grpc_endpoint for p in config.peers}, transport,
        timing=config.gossip, version=__version__,
        on_change=_log_gossip_change)
    service = GossipService(membership, Authority(config.cluster),
                            {m.id: m.grpc_endpoint for m in config.members})
    return membership, service, transport


def _log_gossip_change(view: Any, old: Any) -> None:
    log.info("gossip: %s is %s (was %s, incarnation %d)", view.node, view.state.value,
             old.value if old is not None else "unknown", view.incarnation)


def _make_dataplane(config: Config, timings: Any, notified: bool = False) -> Any:
    """The data plane worker for the configured services, or None without services.
    notified: nftables changes are notified (NftWatch): the kernel is read back then, and
    otherwise only every nftwatch.SAFETY_S.

    auto: nftables when `nft` works here (root or CAP_NET_ADMIN, the nf_tables module),
    else the userspace proxy, said loudly: it is slower, cannot keep client addresses, and
    terminates TCP, so its connections cannot survive a failover (docs/snat.md).
    """
    if not config.services:
        return None
    from hacluster.dataplane.apply import NftApplier
    from hacluster.dataplane.worker import DataplaneWorker

    if config.dataplane in ("auto", "nftables"):
        nft = NftApplier()
        ok, why = nft.available()
        if ok:
            from hacluster.hostops.nftwatch import SAFETY_S

            return DataplaneWorker(nft, "nftables", timings=timings,
                                   verify_s=SAFETY_S if notified else None)
        if config.dataplane == "nftables":
            raise StartupError(str(ConfigError(config.source,
                                               [f"dataplane: nftables is not usable here: {why}"])))
        log.error("nftables is not usable here (%s): serving the balancing table with the "
                  "userspace proxy instead. It is slower, backends see this server's address, and "
                  "it terminates TCP: established connections through this server's VIPs will NOT "
                  "survive a failover to or from it, conntrackd or not (docs/snat.md). Set "
                  "`dataplane: nftables` to refuse to start instead", why)
        reason = f"nftables is not usable: {why}"
    else:
        reason = "the config asks for it (dataplane: proxy)"
        log.warning("dataplane: proxy: the userspace proxy terminates TCP, so established "
                    "connections through this server's VIPs will not survive a failover to or "
                    "from it, conntrackd or not (docs/snat.md); use `dataplane: nftables` where "
                    "they must")
    from hacluster.dataplane.proxy import ProxyDataplane  # only where nftables is not used

    proxy = ProxyDataplane(reason=reason)
    proxy.start()
    return DataplaneWorker(proxy, "userspace proxy", timings=timings)


def _make_sync(config: Config, dataplane: Any, events: Any) -> Any:
    """The connection-state sync: a supervised conntrackd, or NoSync saying why not.

    auto runs it when it can help: conntrackd installed, services balanced here by nftables
    (the proxy terminates TCP: nothing to sync), another member to sync with. `on` refuses to
    start without conntrackd rather than quietly breaking flows at the next failover.
    """
    import shutil

    from hacluster.hostops.connsync import NoSync
    from hacluster.hostops.conntrackd import BINARY, make_sync

    s = config.conntrack_sync
    if s.mode == "off":
        return NoSync("conntrack_sync: off")
    why = ""
    if shutil.which(BINARY) is None:
        why = "conntrackd is not installed (Debian: apt install conntrackd)"
        if s.mode == "on":
            raise StartupError(str(ConfigError(config.source, [f"conntrack_sync: on, but {why}"])))
    elif not config.me.voter:
        why = "a non-voter never holds the VIPs"
    elif not s.peers:
        why = "no other voter to sync with"
    elif s.mode == "auto" and not config.services:
        why = "no services are balanced here"
    elif s.mode == "auto" and dataplane is not None and dataplane.name != "nftables":
        why = f"the {dataplane.name} terminates TCP: no kernel flow state to sync"
    if why:
        log.info("connection sync: off (%s)", why)
        return NoSync(f"conntrack_sync: {s.mode}, off: {why}")
    return make_sync(s, config.data_dir / "conntrackd", on_error=lambda line: events.add("agent", line))


def _make_raft_guard(config: Config) -> Any:
    """The nftables guard of our Raft port (docs/security.md), applied before Raft listens;
    None when it cannot be programmed here, said loudly: the port is then open to any host
    that reaches it, with only the cluster secret in front of pysyncobj's unpickler."""
    from hacluster.dataplane.guard import GuardError, RaftGuard

    guard = RaftGuard()
    members = [(m.id, m.address) for m in config.members]
    ok, why = guard.check()
    if ok:
        try:
            guard.apply(members, config.me.raft_port, config.me.address)
            log.info("raft guard: port %d accepts %d member address(es) only (table inet "
                     "hacluster_guard)", config.me.raft_port, len({a for _, a in members}))
            return guard
        except (GuardError, ValueError) as e:
            why = str(e)
    log.error("RAFT PORT NOT GUARDED: %s. Port %d is open to every host that can reach %s; only "
              "the cluster secret protects it", why, config.me.raft_port, config.me.address)
    return None


class ListenerWatch:
    """The guard loop's check that Raft listens on its port (issue 15): pysyncobj alone
    closed its listener for good on one failed accept(), and the member then stayed out of
    the cluster without a word. The transport binds it again by itself; this says so when it
    cannot: an ERROR and an event when the port stops listening (the ERROR again every
    LISTENER_REPEAT_S while it does not), a WARNING and an event when it listens again.
    `up()` is RaftNode.listener_up (None before Raft started: nothing to say yet)."""

    def __init__(self, up: Callable[[], bool | None], port: int, events: Any,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.up, self.port, self.events, self.now = up, port, events, now
        self.down_since: float | None = None
        self._said_at = 0.0

    def check(self) -> bool | None:
        up, now = self.up(), self.now()
        if up is None:
            return None
        if not up:
            first = self.down_since is None
            if first:
                self.down_since = now
                self.events.add("agent", f"raft port {self.port} not listening: peers cannot "
                                         "connect to this member", port=self.port)
            if first or now - self._said_at >= LISTENER_REPEAT_S:
                self._said_at = now
                log.error("RAFT PORT %d NOT LISTENING for %.0f s: peers cannot connect to this "
                          "member (the agent keeps trying to bind it; see the raft transport's "
                          "messages above)", self.port, now - self.down_since)
        elif self.down_since is not None:
            log.warning("raft port %d listening again after %.0f s", self.port, now - self.down_since)
            self.events.add("agent", f"raft port {self.port} listening again", port=self.port)
            self.down_since = None
        return up


def _keep_raft_guard(guard: Any, config: Config, events: Any, stop: threading.Event,
                     listener: ListenerWatch, recheck: threading.Event | None = None,
                     notified: bool = False) -> None:
    """Every LISTENER_CHECK_S, check that Raft listens (ListenerWatch); put the guard back
    (if there is one) when something removed it (a firewall reload with `flush ruleset`
    does), loudly: every GUARD_CHECK_S, or, when nftables changes are `notified` (NftWatch
    sets `recheck`), at the next look after a change and every nftwatch.SAFETY_S."""
    from hacluster.dataplane.worker import background_priority
    from hacluster.hostops.nftwatch import SAFETY_S

    every = SAFETY_S if notified else GUARD_CHECK_S

    def loop() -> None:
        background_priority()  # `nft` of the guard's checks: after Raft's own thread
        guard_at = time.monotonic() + every
        while not stop.wait(LISTENER_CHECK_S):
            try:
                listener.check()
            except Exception:  # noqa: BLE001 - the guard below must still be kept
                log.exception("raft listener check failed")
            changed = recheck is not None and recheck.is_set()
            if guard is None or (time.monotonic() < guard_at and not changed):
                continue
            if recheck is not None:
                recheck.clear()  # before the look: a change during it is looked at next time
            guard_at = time.monotonic() + every
            try:
                members = [(m.id, m.address) for m in config.members]  # the committed ones, now
                if guard.ensure(members, config.me.raft_port, config.me.address):
                    log.warning("raft guard was missing or changed (firewall reload?): applied again")
                    events.add("agent", "raft port guard was missing: applied again")
            except Exception as e:  # noqa: BLE001 - keep trying; say it every time
                log.error("RAFT PORT NOT GUARDED: cannot re-apply the guard: %s", e)
    threading.Thread(target=loop, name="raft-guard", daemon=True).start()


def _serve_metrics(config: Config, agent: Any, failovers: Any, timings: Any, tls: Any, raft: Any) -> Any:
    """The Prometheus listener (config metrics.listen), or None. A taken port does not
    stop the agent (metrics are not worth an outage): it runs on, loudly."""
    if config.metrics_listen is None:
        return None
    from hacluster.listener import MetricsBindError

    try:
        return _bind_metrics(config, agent, failovers, timings, tls, raft)
    except MetricsBindError as e:
        log.error("%s; running without metrics", e)
        agent.events.add("agent", f"no metrics: {e}")
        return None


def _bind_metrics(config: Config, agent: Any, failovers: Any, timings: Any, tls: Any, raft: Any) -> Any:
    """The metrics listener of `config`; raises listener.MetricsBindError."""
    from hacluster.listener import serve_metrics
    from hacluster.metrics import AgentCollector, LeaderChangeTally, agent_registry
    from hacluster.statuspage import EVENTS_SHOWN, status_pages

    views = agent.views
    registry = agent_registry()  # with the process_* metrics
    registry.register(AgentCollector(
        views.status, views.members_status, views.checks_status, views.backends_status, failovers,
        # when this agent's certificate expires (alerts warn weeks ahead)
        extra=lambda: {"hacluster_tls_cert_expiry_timestamp_seconds": tls.not_after.timestamp()},
        leader_changes=LeaderChangeTally(agent.events), timings=timings,
        raft_listener=raft.listener_up))
    # the read-only status page on the same listener: `/` and `/status.json`
    server = serve_metrics(config.metrics_listen, registry, status_pages(
        views.status, views.members_status, views.backends_status,
        lambda: agent.events.after(0, EVENTS_SHOWN)),
        tls=tls if config.metrics_tls else None, allowed_hosts=config.metrics_allowed_hosts)
    log.info("metrics and status page: %s://%s/ (%s)", "https" if config.metrics_tls else "http",
             config.metrics_listen, "client certificates of the cluster CA only" if config.metrics_tls
             else "plain HTTP, no authentication: keep it on a management network")
    return server


def _make_health(config: Config, raft: Any, membership: Any) -> tuple[Any, Any]:
    from hacluster.gossip.feed import HealthFeed
    from hacluster.health.load import LoadSampler
    from hacluster.health.runner import HealthRunner
    from hacluster.model import is_draining

    sampler = LoadSampler()
    feed = HealthFeed(membership, lambda: runner.reports(), sampler.sample,
                      draining=lambda: is_draining(raft.state.flags, config.node_id), version=__version__)
    runner = HealthRunner(config.checks, default_host=config.me.address, on_change=feed.checks_changed)
    _say_how_exec_checks_run(config.checks)
    return runner, feed


def _say_how_exec_checks_run(checks: Any) -> None:
    """At start-up rather than at each failed attempt: an exec check that cannot start (no
    setpriv, no such user, no CAP_SETUID), and those that run as the agent's own user."""
    from hacluster.health.spec import ExecCheck

    execs = [k for k in checks if isinstance(k, ExecCheck)]
    if not execs:
        return
    from hacluster.health.exec_check import launch

    for k in execs:
        why = launch(k)
        if isinstance(why, str):
            log.error("exec check %s cannot run: %s", k.name, why)
    own = [k.name for k in execs if k.user is None]
    if own:
        log.warning("exec checks %s run as the agent's own user, without its capabilities, but "
                    "able to read its files (the cluster secret too); set checks_user "
                    "(docs/health.md)", ", ".join(own))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hacluster-agent",
                                description="Run the hacluster agent for this server.")
    p.add_argument("--config", required=True, help="this server's YAML config")
    p.add_argument("--version", action="version", version=f"hacluster-agent {__version__}")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
        secret = config.read_secret()
    except ConfigError as e:
        print_error(f"hacluster-agent: refusing to start: {e}")
        return 2
    setup_logging(config.log_level, config.log_format)
    notifier = Notifier.from_env(unset_environment=True)  # before any thread starts (putenv)
    log.info("%s", notifier.describe())
    for w in config.warnings:
        log.warning("config: %s", w)
    try:
        daemon = Daemon(config, secret, notifier)
    except StartupError as e:
        print_error(f"hacluster-agent: refusing to start: {e}")
        return e.code
    try:
        daemon.start()
    except StartupError as e:  # nothing runs yet but the data plane's proxy: exit ends it
        print_error(f"hacluster-agent: {e}")
        return e.code
    try:
        daemon.run()
    finally:
        daemon.stop()
    why = daemon.restart_reason
    if why is not None and "removed" not in why:
        import os

        log.warning("restarting: %s", why)
        os.execv(sys.executable, [sys.executable, "-m", "hacluster.daemon",
                                  *(sys.argv[1:] if argv is None else argv)])
    log.info("stopped%s", f" ({why})" if why else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
