"""Prometheus metrics of one agent (issue 7): what it sees, read at scrape time, plus the
histograms the agent feeds as things happen (hacluster/listener.py serves them).

Scrape-time reads: AgentCollector calls the same snapshot functions as the admin API
(ha.views.StatusViews: status(), members_status(), checks_status(), backends_status()) on
the HTTP server's thread. Nothing here is called from the tick or takes a lock the tick
holds, so a slow scrape (backends_status runs `nft list counters`) delays the scrape, never
a VIP renewal. A section whose provider raises is left out of that scrape and counted in
hacluster_metrics_errors_total{section}: one broken provider must not blank the others.

Everything the agent calls from the tick (FailoverHistogram, Timings) never raises: a bad
value is logged and dropped, because an exception there would skip the rest of the tick.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from hacluster.events import Event, EventLog
from hacluster.model import (
    AgentStatus,
    BackendsStatus,
    ChecksStatus,
    CheckState,
    GossipState,
    MembersStatus,
    Role,
    SyncState,
    SyncStatus,
)

__all__ = ["AgentCollector", "FailoverHistogram", "LeaderChangeTally", "Timings", "agent_registry"]

log = logging.getLogger("hacluster.metrics")

# Failovers on a LAN take a few hundred ms (election 250-350 ms, probe 30 ms); the fine
# buckets sit there, the coarse ones catch a slow WAN or a stuck probe.
FAILOVER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0,
                    3.0, 5.0, 10.0)
NFT_APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RAFT_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROBE_RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2)
CAUSES = ("election", "transfer")  # how the new holder got leadership: the two differ tenfold
SECTIONS = ("status", "members", "checks", "backends", "leader_changes", "raft_listener", "extra")
_EXTRA_NAME = re.compile(r"^hacluster_[a-z0-9_]*[a-z0-9]$")


def agent_registry() -> CollectorRegistry:
    """The registry the listener serves, with the standard `process_*` metrics already in it
    (CPU seconds, resident and virtual memory, open and maximum fds, start time, threads:
    prometheus_client's ProcessCollector, read from /proc at scrape time). A registry of our
    own leaves out the global one's collectors, so they are added here; an agent leaking fds
    or memory then shows on the dashboard before it runs out. Absent off Linux (no /proc)."""
    registry = CollectorRegistry()
    process = ProcessCollector(registry=registry)
    if "process_threads" not in _names(process.collect()):  # a later prometheus_client may have it
        registry.register(_ThreadsCollector())
    return registry


class _ThreadsCollector(Collector):
    """process_threads: every thread of the process (gRPC's C-core pool included, which
    threading.active_count() does not see), field 20 of /proc/self/stat."""

    def collect(self) -> list[Metric]:
        try:
            with open("/proc/self/stat", "rb") as f:
                threads = float(f.read().rsplit(b")", 1)[-1].split()[17])
        except (OSError, IndexError, ValueError):
            return []
        return [GaugeMetricFamily("process_threads", "Threads of this process.", value=threads)]


def _gauge(name: str, doc: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


class _Family:
    """A labelled metric family that keeps the first sample of a label set: gossip carries
    what peers say, and a duplicate series would make the whole scrape invalid."""

    def __init__(self, family: GaugeMetricFamily | CounterMetricFamily):
        self.family = family
        self._seen: set[tuple[str, ...]] = set()

    def add(self, labels: Iterable[str], value: float | bool) -> None:
        key = tuple(labels)
        if key not in self._seen:
            self._seen.add(key)
            self.family.add_metric(list(key), float(value))


def _gauges(name: str, doc: str, labels: list[str]) -> _Family:
    return _Family(GaugeMetricFamily(name, doc, labels=labels))


def _counters(name: str, doc: str, labels: list[str]) -> _Family:
    return _Family(CounterMetricFamily(name, doc, labels=labels))


class AgentCollector(Collector):
    """A prometheus_client collector over the agent's snapshot functions (see the module
    docstring). Only `status` is required; a None provider leaves its metrics out."""

    def __init__(self, status: Callable[[], AgentStatus],
                 members: Callable[[], MembersStatus] | None = None,
                 checks: Callable[[], ChecksStatus] | None = None,
                 backends: Callable[[], BackendsStatus] | None = None,
                 failovers: FailoverHistogram | None = None,
                 extra: Callable[[], Mapping[str, float]] | None = None, *,
                 leader_changes: Callable[[], int] | None = None,
                 timings: Timings | None = None,
                 raft_listener: Callable[[], bool | None] | None = None):
        """extra: gauge name -> value for figures that have no model type yet; names must
        match hacluster_[a-z0-9_]+ and not clash with ours (else that section is left out).
        leader_changes: a running count of leader changes seen (LeaderChangeTally).
        raft_listener: whether Raft listens on its port (RaftNode.listener_up; None: not
        started, the gauge is left out)."""
        self.status = status
        self.members = members
        self.checks = checks
        self.backends = backends
        self.failovers = failovers
        self.extra = extra
        self.leader_changes = leader_changes
        self.timings = timings
        self.raft_listener = raft_listener
        self._lock = threading.Lock()  # scrapes run in parallel HTTP threads
        self._errors = dict.fromkeys(SECTIONS, 0)
        self._last_error = dict.fromkeys(SECTIONS, "")

    def collect(self) -> list[Metric]:
        out = self._section("status", self._status_metrics)
        for name, provider, fn in (("members", self.members, self._members_metrics),
                                   ("checks", self.checks, self._checks_metrics),
                                   ("backends", self.backends, self._backends_metrics),
                                   ("leader_changes", self.leader_changes, self._leader_metrics),
                                   ("raft_listener", self.raft_listener, self._raft_listener_metrics)):
            if provider is not None:
                out += self._section(name, fn)
        if self.failovers is not None:
            out += self.failovers.collect()
        if self.timings is not None:
            out += self.timings.collect()
        if self.extra is not None:
            taken = _names(out) | {"hacluster_metrics_errors_total"}
            out += self._section("extra", lambda: self._extra_metrics(taken))
        out.append(self._errors_metric())
        return out

    def _section(self, name: str, fn: Callable[[], list[Metric]]) -> list[Metric]:
        """All of a section's metrics, or none of them (never half a section)."""
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - any provider failure: count it, serve the rest
            with self._lock:
                self._errors[name] += 1
                first = str(e) != self._last_error[name]
                self._last_error[name] = str(e)
            if first:  # once per distinct error, not once per scrape
                log.warning("metrics: the %s section failed and is left out: %s", name, e,
                            exc_info=True)
            return []
        with self._lock:
            self._last_error[name] = ""
        return out

    def _errors_metric(self) -> Metric:
        fam = CounterMetricFamily("hacluster_metrics_errors", "Scrapes that left a section out "
                                  "because its provider failed (see the agent's log)", labels=["section"])
        with self._lock:
            for name, n in self._errors.items():
                fam.add_metric([name], float(n))
        return fam

    def _status_metrics(self) -> list[Metric]:
        st = self.status()
        out: list[Metric] = [
            _gauge("hacluster_leader", "1 if this agent is the Raft leader, else 0", st.role is Role.LEADER),
            _gauge("hacluster_raft_term", "The Raft term this agent is in", st.term),
            _gauge("hacluster_raft_commit_index", "Raft commit index on this agent", st.commit_index),
            _gauge("hacluster_raft_applied_index", "Raft log index applied to the state on this agent",
                   st.last_applied),
            _gauge("hacluster_lease_valid", "1 if this agent holds a valid leader lease (it may hold "
                   "VIPs), else 0", st.lease_ok),
            _gauge("hacluster_lease_remaining_seconds", "Time left on this agent's leader lease",
                   st.lease_remaining_ms / 1000),
            _gauge("hacluster_quorum", "1 if this agent is in contact with a majority, else 0",
                   st.has_quorum),
            _gauge("hacluster_maintenance", "1 while the cluster is in maintenance mode (table "
                   "frozen, no automatic handoff), else 0", st.maintenance),
            _gauge("hacluster_handoff", "1 while this agent releases its VIPs for a failover or a "
                   "stop, else 0", st.handoff),
            _gauge("hacluster_agent_uptime_seconds", "Time since this agent started", st.uptime_s),
            _gauge("hacluster_raft_disk_full", "1 while this agent cannot keep its Raft journal on "
                   "its data disk (full, or a write or flush failed): it does not lead", bool(
                       st.raft_disk_problem)),
            CounterMetricFamily("hacluster_journal_write_errors", "Raft journal allocations, writes "
                                "and flushes that failed since the agent started",
                                value=st.journal_write_errors),
            InfoMetricFamily("hacluster_build", "The hacluster version this agent runs",
                             value={"version": st.version}),
        ]
        held = _gauges("hacluster_vip_held", "1 if this agent holds the configured VIP, else 0", ["vip"])
        for v in st.vips:
            held.add([v.address], v.held)
        peers = _gauges("hacluster_raft_peer_connected", "1 if this agent's Raft link to the member "
                        "is up, else 0", ["member"])
        for m in st.members:
            if not m.is_self:
                peers.add([m.id], m.connected)
        return [*out, held.family, peers.family, *_sync_metrics(st.connection_sync)]

    def _members_metrics(self) -> list[Metric]:
        assert self.members is not None
        ms = self.members()
        counts = {s.value: 0 for s in GossipState}
        up = _gauges("hacluster_member_up", "1 if gossip sees the member alive (as this agent sees "
                     "it), else 0", ["member"])
        for m in ms.members:
            state = str(m.state)
            counts[state] = counts.get(state, 0) + 1
            up.add([m.id], m.state is GossipState.ALIVE)
        per_state = _gauges("hacluster_members", "Members per gossip state, as this agent sees them",
                            ["state"])
        for state, n in counts.items():
            per_state.add([state], n)
        awareness = _gauge("hacluster_gossip_awareness", "Gossip health awareness score (0 is "
                           "healthy; higher: this agent misses probe answers and slows down)",
                           ms.awareness)
        return [per_state.family, up.family, awareness]

    def _checks_metrics(self) -> list[Metric]:
        assert self.checks is not None
        cs = self.checks()
        up = _gauges("hacluster_check_up", "1 if the health check passes on that node (its gossiped "
                     "state after rise/fall), else 0 (failing or unknown)", ["node", "check"])
        latency = _gauges("hacluster_check_latency_seconds", "Duration of the check's last attempt "
                          "on that node (absent when it did not complete)", ["node", "check"])
        for n in cs.nodes:
            for c in n.checks:
                up.add([n.node, c.name], c.state is CheckState.PASSING)
                if c.latency_ms is not None:
                    latency.add([n.node, c.name], c.latency_ms / 1000)
        committed = _gauges("hacluster_check_committed_up", "The committed (Raft) health verdict "
                            "the balancing table follows: 1 up, 0 down", ["node", "check"])
        for h in cs.committed:
            committed.add([h.node, h.check], h.healthy)
        return [up.family, latency.family, committed.family]

    def _backends_metrics(self) -> list[Metric]:
        assert self.backends is not None
        bs = self.backends()
        gen = _gauges("hacluster_table_generation", "Balancing table generation: committed in Raft, "
                      "and applied to this agent's data plane", ["kind"])
        gen.add(["committed"], bs.table_generation)
        if bs.applied_generation is not None:
            gen.add(["applied"], bs.applied_generation)
        dataplane = InfoMetricFamily("hacluster_dataplane", "The data plane this agent runs (nftables, "
                                     "userspace proxy or none)", value={"dataplane": bs.dataplane})
        labels = ["service", "backend", "role"]
        packets = _counters("hacluster_backend_packets", "Packets this agent's data plane sent to "
                            "the backend (absent when it does not count)", labels)
        nbytes = _counters("hacluster_backend_bytes", "Bytes this agent's data plane sent to the "
                           "backend (absent when it does not count)", labels)
        up = _gauges("hacluster_backend_up", "1 if the backend gets new flows (state active), else 0; "
                     "state says why (draining, disabled, down). Not for fallbacks", [*labels, "state"])
        for svc in bs.services:
            pairs = [("backend", b) for b in svc.backends]
            if svc.fallback is not None:  # counted, but "up" means nothing for it: it serves
                pairs.append(("fallback", svc.fallback))  # exactly when no backend is up
            for role, b in pairs:
                key = [svc.name, b.id, role]
                if role == "backend":
                    up.add([*key, b.state], b.state == "active")
                if b.packets is not None:
                    packets.add(key, b.packets)
                if b.bytes is not None:
                    nbytes.add(key, b.bytes)
        return [gen.family, dataplane, packets.family, nbytes.family, up.family]

    def _leader_metrics(self) -> list[Metric]:
        assert self.leader_changes is not None
        fam = CounterMetricFamily("hacluster_leader_changes", "Leader changes this agent saw since "
                                  "it started (a new leader, or a new term)")
        fam.add_metric([], float(self.leader_changes()))
        return [fam]

    def _raft_listener_metrics(self) -> list[Metric]:
        assert self.raft_listener is not None
        up = self.raft_listener()
        if up is None:
            return []
        return [_gauge("hacluster_raft_listener_up", "1 if this agent's Raft port is bound and "
                       "listening; 0 if not: peers cannot connect to this member (the agent keeps "
                       "trying to bind it)", up)]

    def _extra_metrics(self, taken: set[str]) -> list[Metric]:
        assert self.extra is not None
        values = dict(self.extra())
        bad = sorted(n for n in values if not _EXTRA_NAME.match(n) or n in taken)
        if bad:
            raise ValueError(f"extra metric name(s) not usable: {', '.join(bad)} (need "
                             "hacluster_[a-z0-9_]+, not one of the built-in names)")
        return [_gauge(name, f"{name} (agent-provided)", float(v)) for name, v in sorted(values.items())]


def _sync_metrics(sync: SyncStatus | None) -> list[Metric]:
    """The connection-state sync (conntrackd): none at all when it is off (nothing runs,
    nothing to alert on) or the status has no sync; the commit time once a claim had one."""
    if sync is None or sync.state is SyncState.OFF:
        return []
    restarts = CounterMetricFamily("hacluster_conntrack_sync_restarts", "Times this agent restarted "
                                   "conntrackd after it exited")
    restarts.add_metric([], float(sync.restarts))
    out: list[Metric] = [
        _gauge("hacluster_conntrack_sync_up", "1 if conntrackd runs and answers (established flows "
               "survive a move of the VIP), 0 if it is configured but down (they break)",
               sync.state is SyncState.OK),
        restarts]
    if sync.last_commit_ms is not None:
        out.append(_gauge("hacluster_conntrack_commit_seconds", "How long this agent's last claim "
                          "took to commit the synced flows into the kernel (a commit that ran past "
                          "conntrack_sync.commit_timeout_ms leaves it unchanged)",
                          sync.last_commit_ms / 1000))
    return out


_SUFFIXES = {"counter": ("_total", "_created"), "info": ("_info",),
             "histogram": ("_bucket", "_sum", "_count", "_created")}


def _names(metrics: Iterable[Metric]) -> set[str]:
    """Every name these families may write (as CollectorRegistry reckons clashes)."""
    return {m.name + suffix for m in metrics for suffix in ("", *_SUFFIXES.get(m.type, ()))}


# ---------------------------------------------------------------- leader changes


def _new_leader(ev: Event) -> tuple[str, str] | None:
    """(term, leader) when the event names a leader, as the agent's _note_events writes
    them: "<me> leads" carries `by_transfer`, "<other> leads" carries `leader`; "<me> no
    longer leads" names nobody and is not a change by itself (the next leader is)."""
    if ev.kind != "leader":
        return None
    term = ev.fields.get("term", "")
    if "leader" in ev.fields:
        return term, ev.fields["leader"]
    if "by_transfer" in ev.fields:
        return term, ev.node
    return None


class LeaderChangeTally:
    """A running count of leader changes from the agent's event log, read at scrape time:
    pass it as AgentCollector(leader_changes=...). A change is a new (term, leader) pair,
    so a leader that drops out of view and comes back in the same term counts once.

    The log keeps the last events.CAPACITY events only: events evicted before a scrape read
    them are lost to the count (`missed`, logged). At one scrape every 15 s that takes over
    60 events a second; a counter incremented by the agent itself would not have the gap.
    """

    def __init__(self, events: EventLog):
        self._events = events
        self._lock = threading.Lock()
        self._seq = 0
        self._last: tuple[str, str] | None = None
        self._count = 0
        self.missed = 0

    def __call__(self) -> int:
        with self._lock:
            new = self._events.after(self._seq, limit=0)
            if new and new[0].seq > self._seq + 1:
                gap = new[0].seq - self._seq - 1
                self.missed += gap
                log.warning("metrics: %d event(s) left the event log before they were counted; "
                            "hacluster_leader_changes_total may be short", gap)
            for ev in new:
                leader = _new_leader(ev)
                if leader is not None and leader != self._last:
                    self._count += 1
                    self._last = leader
            if new:
                self._seq = new[-1].seq
            return self._count


# ---------------------------------------------------------------- histograms fed by the agent


def _usable(what: str, seconds: float) -> bool:
    if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0:
        return True
    log.warning("metrics: %s of %r s dropped (not a duration)", what, seconds)
    return False


def _cause(by_transfer: bool) -> str:
    return "transfer" if by_transfer else "election"


class FailoverHistogram:
    """hacluster_failover_duration_seconds{cause} and hacluster_vip_claim_delay_seconds{cause},
    fed by the new holder when it claims a VIP (once per VIP per leadership)."""

    def __init__(self) -> None:
        self.duration = Histogram(
            "hacluster_failover_duration_seconds", "Outage of a VIP as seen by its new holder: from "
            "its last contact with the previous leader to its claim of the VIP",
            ["cause"], registry=None, buckets=FAILOVER_BUCKETS)
        self.claim_delay = Histogram(
            "hacluster_vip_claim_delay_seconds", "From this agent becoming leader to its claim of a "
            "VIP (lease, epoch entry and ARP probe)", ["cause"], registry=None, buckets=FAILOVER_BUCKETS)
        for cause in CAUSES:  # both series exist from the start: rate() and alerts see zeros
            self.duration.labels(cause=cause)
            self.claim_delay.labels(cause=cause)

    def observe(self, seconds: float, by_transfer: bool = False) -> None:
        """Record one failover duration measured some other way."""
        if _usable("failover duration", seconds):
            self.duration.labels(cause=_cause(by_transfer)).observe(seconds)

    def observe_claim(self, after_leader_s: float, silent_before_s: float | None,
                      by_transfer: bool = False) -> float | None:
        """A VIP claim by a new leader. after_leader_s: from becoming leader to the claim.
        silent_before_s: from the last message of the previous leader to becoming leader
        (None when there was no previous leader: a cluster forming is no failover).
        Returns the failover duration recorded, or None."""
        if not _usable("claim delay", after_leader_s):
            return None
        cause = _cause(by_transfer)
        self.claim_delay.labels(cause=cause).observe(after_leader_s)
        if silent_before_s is None or not _usable("silence before leading", silent_before_s):
            return None
        total = silent_before_s + after_leader_s
        self.duration.labels(cause=cause).observe(total)
        return total

    def collect(self) -> list[Metric]:
        return [*self.duration.collect(), *self.claim_delay.collect()]


class Timings:
    """Durations measured where the work happens (to be wired): nft applies in the data
    plane worker, Raft commits in the agent's proposers, gossip probe round trips."""

    def __init__(self) -> None:
        self.nft_apply = Histogram(
            "hacluster_nft_apply_duration_seconds", "Time to apply one balancing table generation "
            "to the data plane", ["result"], registry=None, buckets=NFT_APPLY_BUCKETS)
        for result in ("ok", "error"):
            self.nft_apply.labels(result=result)
        self.raft_commit = Histogram(
            "hacluster_raft_commit_latency_seconds", "From a proposal by this leader to its commit",
            registry=None, buckets=RAFT_COMMIT_BUCKETS)
        self.probe_rtt = Histogram(
            "hacluster_gossip_probe_rtt_seconds", "Round trip of a direct gossip probe that was "
            "answered", registry=None, buckets=PROBE_RTT_BUCKETS)

    def observe_nft_apply(self, seconds: float, ok: bool = True) -> None:
        if _usable("nft apply", seconds):
            self.nft_apply.labels(result="ok" if ok else "error").observe(seconds)

    def observe_raft_commit(self, seconds: float) -> None:
        if _usable("raft commit", seconds):
            self.raft_commit.observe(seconds)

    def observe_probe_rtt(self, seconds: float) -> None:
        if _usable("probe rtt", seconds):
            self.probe_rtt.observe(seconds)

    def collect(self) -> list[Metric]:
        return [m for h in (self.nft_apply, self.raft_commit, self.probe_rtt) for m in h.collect()]
