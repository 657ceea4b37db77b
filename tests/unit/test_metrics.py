"""hacluster.metrics: the scrape-time collector over fake snapshots, the histograms the agent
feeds, the HTTP listener, and the exposition checked against Prometheus' conventions."""

from __future__ import annotations

import dataclasses
import math
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hacluster.events import EventLog
from hacluster.listener import MetricsBindError, MetricsServer, serve_metrics
from hacluster.metrics import AgentCollector, FailoverHistogram, LeaderChangeTally, Timings
from hacluster.model import (
    BackendsStatus,
    BackendStatus,
    CheckReport,
    ChecksStatus,
    CheckState,
    CommittedHealth,
    GossipMemberStatus,
    GossipState,
    MembersStatus,
    NodeChecks,
    Role,
    ServiceStatus,
    SyncStatus,
)

from .test_admin import STATUS, SYNC_DOWN, SYNC_OFF, SYNC_OK  # one canonical agent status for the tests


def _member(node: str, state: GossipState, is_self: bool = False) -> GossipMemberStatus:
    return GossipMemberStatus(
        id=node, address=f"10.99.0.{node[-1]}:17101", is_self=is_self, state=state, incarnation=1,
        last_seen_s=0.1, state_age_s=5.0, confirmations=0, raft_role="follower", checks_passing=1,
        checks_total=1, draining=False, version="0.1.0", cpu_percent=3.0, mem_percent=40.0,
        meta_known=True)


MEMBERS = MembersStatus(node="n1", awareness=1, members=(
    _member("n1", GossipState.ALIVE, is_self=True), _member("n2", GossipState.ALIVE),
    _member("n3", GossipState.SUSPECT)))


def _check(name: str, state: CheckState, latency_ms: float | None) -> CheckReport:
    return CheckReport(name, "tcp", "127.0.0.1:104", state, latency_ms,
                       "" if state is CheckState.PASSING else "connection refused")


CHECKS = ChecksStatus(node="n1", generation=42, nodes=(
    NodeChecks("n1", GossipState.ALIVE, (_check("pacs", CheckState.PASSING, 2.5),
                                         _check("hl7", CheckState.FAILING, None))),
    NodeChecks("n2", GossipState.ALIVE, (_check("pacs", CheckState.UNKNOWN, 4.0),)),
), committed=(CommittedHealth("n1", "pacs", True), CommittedHealth("n1", "hl7", False)))

BACKENDS = BackendsStatus(node="n1", table_generation=12, applied_generation=11, dataplane="nftables",
                          services=(ServiceStatus(
                              "pacs", "10.99.0.100", "tcp", (104,), "source_hash",
                              (BackendStatus("n1", "10.99.0.1", 104, 1, "active", 120, 64_000),
                               BackendStatus("n2", "10.99.0.2", 104, 1, "down", 0, 0),
                               BackendStatus("n3", "10.99.0.3", 104, 1, "draining")),
                              BackendStatus("10.99.0.60:104", "10.99.0.60", 104, 1, "active", 7, 420)),))


def _registry(collector: AgentCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def _full(**overrides: object) -> tuple[CollectorRegistry, FailoverHistogram, Timings]:
    failovers, timings = FailoverHistogram(), Timings()
    kw: dict[str, object] = dict(status=lambda: STATUS, members=lambda: MEMBERS, checks=lambda: CHECKS,
                                 backends=lambda: BACKENDS, failovers=failovers,
                                 leader_changes=lambda: 3, timings=timings)
    kw.update(overrides)
    return _registry(AgentCollector(**kw)), failovers, timings  # type: ignore[arg-type]


def _text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_status_gauges_and_labels() -> None:
    registry, _, _ = _full()
    v = registry.get_sample_value
    assert v("hacluster_leader") == 1
    assert v("hacluster_raft_term") == 7
    assert v("hacluster_raft_commit_index") == 120
    assert v("hacluster_raft_applied_index") == 119
    assert v("hacluster_lease_valid") == 1
    assert v("hacluster_lease_remaining_seconds") == pytest.approx(0.143)
    assert v("hacluster_quorum") == 1
    assert v("hacluster_maintenance") == 0
    assert v("hacluster_handoff") == 0
    assert v("hacluster_agent_uptime_seconds") == 3725
    assert v("hacluster_build_info", {"version": "0.1.0"}) == 1
    assert v("hacluster_vip_held", {"vip": "10.99.0.100"}) == 1
    assert v("hacluster_vip_held", {"vip": "10.99.0.101"}) == 0
    assert v("hacluster_raft_peer_connected", {"member": "n2"}) == 1
    assert v("hacluster_raft_peer_connected", {"member": "n3"}) == 0
    assert v("hacluster_raft_peer_connected", {"member": "n1"}) is None  # not a peer of itself
    assert v("hacluster_leader_changes_total") == 3
    assert 'hacluster_vip_held{vip="10.99.0.100"} 1.0' in _text(registry)


def test_a_follower_in_maintenance_without_lease() -> None:
    follower = dataclasses.replace(STATUS, role=Role.FOLLOWER, leader="n2", lease_ok=False,
                                   has_quorum=True, maintenance=True, handoff=True)
    registry = _registry(AgentCollector(lambda: follower))
    v = registry.get_sample_value
    assert (v("hacluster_leader"), v("hacluster_lease_valid"), v("hacluster_maintenance"),
            v("hacluster_handoff")) == (0, 0, 1, 1)


def _with_sync(sync: SyncStatus | None) -> CollectorRegistry:
    return _registry(AgentCollector(lambda: dataclasses.replace(STATUS, connection_sync=sync)))


def test_connection_sync_up_restarts_and_commit_time() -> None:
    v = _with_sync(SYNC_OK).get_sample_value
    assert v("hacluster_conntrack_sync_up") == 1
    assert v("hacluster_conntrack_sync_restarts_total") == 1
    assert v("hacluster_conntrack_commit_seconds") == pytest.approx(0.0045)
    v = _with_sync(SYNC_DOWN).get_sample_value  # down, and no claim committed yet
    assert v("hacluster_conntrack_sync_up") == 0
    assert v("hacluster_conntrack_sync_restarts_total") == 3
    assert v("hacluster_conntrack_commit_seconds") is None  # absent, not 0
    zero = _with_sync(dataclasses.replace(SYNC_DOWN, last_commit_ms=0.0))
    assert zero.get_sample_value("hacluster_conntrack_commit_seconds") == 0
    for nothing in (SYNC_OFF, None):  # off: nothing runs; None: a status without the field
        text = _text(_with_sync(nothing))
        assert "hacluster_conntrack" not in text and "hacluster_leader 1.0" in text


def test_members_per_gossip_state_and_member_up() -> None:
    registry, _, _ = _full()
    v = registry.get_sample_value
    assert {s.value: v("hacluster_members", {"state": s.value}) for s in GossipState} == \
        {"alive": 2, "suspect": 1, "dead": 0, "left": 0}  # every state, zeros too
    assert [v("hacluster_member_up", {"member": m}) for m in ("n1", "n2", "n3")] == [1, 1, 0]
    assert v("hacluster_gossip_awareness") == 1


def test_checks_up_latency_and_committed_verdicts() -> None:
    registry, _, _ = _full()
    v = registry.get_sample_value
    assert v("hacluster_check_up", {"node": "n1", "check": "pacs"}) == 1
    assert v("hacluster_check_up", {"node": "n1", "check": "hl7"}) == 0
    assert v("hacluster_check_up", {"node": "n2", "check": "pacs"}) == 0  # unknown is not up
    assert v("hacluster_check_latency_seconds", {"node": "n1", "check": "pacs"}) == pytest.approx(0.0025)
    assert v("hacluster_check_latency_seconds", {"node": "n1", "check": "hl7"}) is None  # did not complete
    assert v("hacluster_check_committed_up", {"node": "n1", "check": "pacs"}) == 1
    assert v("hacluster_check_committed_up", {"node": "n1", "check": "hl7"}) == 0


def test_backends_table_generations_and_counters_only_when_known() -> None:
    registry, _, _ = _full()
    v = registry.get_sample_value
    assert v("hacluster_table_generation", {"kind": "committed"}) == 12
    assert v("hacluster_table_generation", {"kind": "applied"}) == 11
    assert v("hacluster_dataplane_info", {"dataplane": "nftables"}) == 1
    n1 = {"service": "pacs", "backend": "n1", "role": "backend"}
    assert v("hacluster_backend_packets_total", n1) == 120
    assert v("hacluster_backend_bytes_total", n1) == 64_000
    n3 = {"service": "pacs", "backend": "n3", "role": "backend"}
    assert v("hacluster_backend_packets_total", n3) is None  # unknown, not zero
    assert v("hacluster_backend_bytes_total", n3) is None
    assert v("hacluster_backend_up", {**n1, "state": "active"}) == 1
    assert v("hacluster_backend_up", {"service": "pacs", "backend": "n2", "role": "backend",
                                      "state": "down"}) == 0
    assert v("hacluster_backend_up", {**n3, "state": "draining"}) == 0
    sorry = {"service": "pacs", "backend": "10.99.0.60:104", "role": "fallback"}
    assert v("hacluster_backend_packets_total", sorry) == 7
    assert v("hacluster_backend_up", {**sorry, "state": "active"}) is None


def test_nothing_applied_yet_has_no_applied_generation() -> None:
    empty = dataclasses.replace(BACKENDS, applied_generation=None, dataplane="none", services=())
    registry, _, _ = _full(backends=lambda: empty)
    assert registry.get_sample_value("hacluster_table_generation", {"kind": "applied"}) is None
    assert registry.get_sample_value("hacluster_table_generation", {"kind": "committed"}) == 12


def test_only_status_when_nothing_else_is_given() -> None:
    text = _text(_registry(AgentCollector(lambda: STATUS)))
    assert "hacluster_leader 1.0" in text
    for absent in ("hacluster_members", "hacluster_check_up", "hacluster_backend", "hacluster_failover",
                   "hacluster_leader_changes", "hacluster_nft_apply"):
        assert absent not in text


def test_values_are_read_at_each_scrape() -> None:
    calls: list[int] = []

    def status() -> object:
        calls.append(1)
        return dataclasses.replace(STATUS, term=6 + len(calls))

    registry = _registry(AgentCollector(status))  # type: ignore[arg-type]
    assert calls == []  # registering reads nothing
    assert registry.get_sample_value("hacluster_raft_term") == 7
    assert registry.get_sample_value("hacluster_raft_term") == 8


def test_a_failing_provider_leaves_its_section_out_and_is_counted() -> None:
    def broken() -> MembersStatus:
        raise RuntimeError("gossip not started")

    registry, _, _ = _full(members=broken)
    v = registry.get_sample_value
    assert v("hacluster_members", {"state": "alive"}) is None
    assert v("hacluster_leader") == 1 and v("hacluster_check_up", {"node": "n1", "check": "pacs"}) == 1
    # each get_sample_value is a scrape: this is the fourth, its own failure counted first
    assert v("hacluster_metrics_errors_total", {"section": "members"}) == 4
    assert v("hacluster_metrics_errors_total", {"section": "status"}) == 0


def test_duplicate_series_from_gossip_are_dropped() -> None:
    twice = dataclasses.replace(CHECKS, nodes=(NodeChecks("n1", GossipState.ALIVE, (
        _check("pacs", CheckState.PASSING, 1.0), _check("pacs", CheckState.FAILING, 9.0))),))
    registry, _, _ = _full(checks=lambda: twice)
    text = _text(registry)
    assert text.count('hacluster_check_up{check="pacs",node="n1"}') == 1
    list(text_string_to_metric_families(text))  # still parses
    assert registry.get_sample_value("hacluster_check_up", {"node": "n1", "check": "pacs"}) == 1


def test_extra_gauges_and_refused_names() -> None:
    registry, _, _ = _full(extra=lambda: {"hacluster_gossip_probe_rtt_last_seconds": 0.0004})
    assert registry.get_sample_value("hacluster_gossip_probe_rtt_last_seconds") == pytest.approx(0.0004)
    for bad in ("hacluster_leader", "hacluster_failover_duration_seconds_count", "other_thing",
                "hacluster_Rtt"):
        registry, _, _ = _full(extra=lambda bad=bad: {bad: 1.0, "hacluster_fine": 2.0})
        assert registry.get_sample_value("hacluster_fine") is None  # the whole section is left out
        assert registry.get_sample_value("hacluster_metrics_errors_total", {"section": "extra"}) == 2
        assert registry.get_sample_value("hacluster_leader") == 1


# ------------------------------------------------------------------ leader changes


def _agent_like_events(log: EventLog) -> None:
    """The leader events as Agent._note_events writes them (plus noise)."""
    log.add("leader", "n1 leads (term 3)", term=3, by_transfer=False)
    log.add("vip", "claimed 10.99.0.100 120 ms after becoming leader", vip="10.99.0.100",
            after_leader_ms=120.0, term=3, by_transfer=False)
    log.add("leader", "n1 no longer leads (term 4)", term=4)
    log.add("leader", "n2 leads (term 4), as n1 sees it", term=4, leader="n2")
    log.add("leader", "n2 leads (term 4), as n1 sees it", term=4, leader="n2")  # after a blip


def test_leader_changes_are_new_term_leader_pairs() -> None:
    log = EventLog("n1")
    tally = LeaderChangeTally(log)
    assert tally() == 0
    _agent_like_events(log)
    assert tally() == 2  # n1 in term 3, n2 in term 4
    assert tally() == 2  # reading again counts nothing twice
    log.add("leader", "n2 leads (term 5), as n1 sees it", term=5, leader="n2")  # re-elected
    log.add("leader", "n1 leads (term 6, by transfer)", term=6, by_transfer=True)
    assert tally() == 4
    assert tally.missed == 0


def test_events_gone_before_the_scrape_are_reported_missed() -> None:
    log = EventLog("n1", capacity=2)
    tally = LeaderChangeTally(log)
    _agent_like_events(log)  # 5 events, the log keeps the last 2
    assert tally() == 1 and tally.missed == 3


def test_leader_changes_through_the_collector() -> None:
    log = EventLog("n1")
    _agent_like_events(log)
    registry = _registry(AgentCollector(lambda: STATUS, leader_changes=LeaderChangeTally(log)))
    assert registry.get_sample_value("hacluster_leader_changes_total") == 2


def test_raft_listener_up_as_raft_says_and_absent_before_it_started() -> None:
    up: list[bool | None] = [None]
    registry = _registry(AgentCollector(lambda: STATUS, raft_listener=lambda: up[0]))
    assert registry.get_sample_value("hacluster_raft_listener_up") is None
    up[0] = True
    assert registry.get_sample_value("hacluster_raft_listener_up") == 1
    up[0] = False
    assert registry.get_sample_value("hacluster_raft_listener_up") == 0


# ------------------------------------------------------------------ histograms


def test_failover_histogram_records_claims() -> None:
    registry, failovers, _ = _full()
    v = registry.get_sample_value
    election, transfer = {"cause": "election"}, {"cause": "transfer"}
    assert v("hacluster_failover_duration_seconds_count", election) == 0  # exists before any
    assert failovers.observe_claim(0.12, 0.3) == pytest.approx(0.42)
    assert v("hacluster_failover_duration_seconds_count", election) == 1
    assert v("hacluster_failover_duration_seconds_sum", election) == pytest.approx(0.42)
    assert v("hacluster_failover_duration_seconds_bucket", {**election, "le": "0.4"}) == 0
    assert v("hacluster_failover_duration_seconds_bucket", {**election, "le": "0.5"}) == 1
    assert v("hacluster_vip_claim_delay_seconds_sum", election) == pytest.approx(0.12)
    # no previous leader (the cluster forming): a claim delay, but no failover
    assert failovers.observe_claim(0.05, None, by_transfer=True) is None
    assert v("hacluster_vip_claim_delay_seconds_count", transfer) == 1
    assert v("hacluster_failover_duration_seconds_count", transfer) == 0
    failovers.observe(0.08, by_transfer=True)
    assert v("hacluster_failover_duration_seconds_bucket", {**transfer, "le": "0.1"}) == 1
    assert v("hacluster_failover_duration_seconds_bucket", {**transfer, "le": "0.01"}) == 0
    assert v("hacluster_failover_duration_seconds_bucket", {**election, "le": "10.0"}) == 1


def test_bad_durations_are_dropped_not_raised() -> None:
    registry, failovers, timings = _full()
    assert failovers.observe_claim(math.nan, 0.1) is None
    assert failovers.observe_claim(0.1, -1.0) is None  # the claim delay still counts
    failovers.observe(math.inf)
    timings.observe_nft_apply(-0.5)
    v = registry.get_sample_value
    assert v("hacluster_vip_claim_delay_seconds_count", {"cause": "election"}) == 1
    assert v("hacluster_failover_duration_seconds_count", {"cause": "election"}) == 0
    assert v("hacluster_nft_apply_duration_seconds_count", {"result": "ok"}) == 0


def test_timings() -> None:
    registry, _, timings = _full()
    timings.observe_nft_apply(0.012)
    timings.observe_nft_apply(0.3, ok=False)
    timings.observe_raft_commit(0.004)
    timings.observe_probe_rtt(0.0003)
    v = registry.get_sample_value
    assert v("hacluster_nft_apply_duration_seconds_count", {"result": "ok"}) == 1
    assert v("hacluster_nft_apply_duration_seconds_bucket", {"result": "error", "le": "0.25"}) == 0
    assert v("hacluster_nft_apply_duration_seconds_bucket", {"result": "error", "le": "0.5"}) == 1
    assert v("hacluster_raft_commit_latency_seconds_sum") == pytest.approx(0.004)
    assert v("hacluster_gossip_probe_rtt_seconds_bucket", {"le": "0.0005"}) == 1


# ------------------------------------------------------------------ HTTP


@pytest.fixture
def served() -> Iterator[Callable[..., MetricsServer]]:
    servers: list[MetricsServer] = []

    def start(bind: str = "127.0.0.1:0", registry: CollectorRegistry | None = None) -> MetricsServer:
        server = serve_metrics(bind, registry or _full()[0])
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _get(url: str) -> tuple[int, str, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the env
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def test_serves_metrics_over_http(served: Callable[..., MetricsServer]) -> None:
    server = served()
    assert server.port > 0 and server.address == f"127.0.0.1:{server.port}"
    status, ctype, body = _get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200 and ctype.startswith("text/plain"), ctype
    assert "hacluster_leader 1.0" in body and "hacluster_failover_duration_seconds_bucket" in body
    assert _get(f"http://127.0.0.1:{server.port}/")[0] == 200
    status, _, body = _get(f"http://127.0.0.1:{server.port}/secrets")
    assert status == 404 and "/metrics" in body


def test_port_in_use_is_a_clear_error(served: Callable[..., MetricsServer]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MetricsBindError) as e:
            served(f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in str(e.value) and "already listens" in str(e.value)
    assert e.value.address == f"127.0.0.1:{port}"


def test_a_second_listener_on_the_same_port_is_refused(served: Callable[..., MetricsServer]) -> None:
    first = served()
    with pytest.raises(MetricsBindError, match=f"127.0.0.1:{first.port}"):
        served(f"127.0.0.1:{first.port}")


def _get_as(port: int, host: str | None, bind: str = "127.0.0.1") -> tuple[int, str]:
    """GET /metrics with this Host header (None: none at all, as an HTTP/1.0 client may)."""
    with socket.create_connection((bind, port), timeout=5) as s:
        head = "GET /metrics HTTP/1.0\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        s.sendall((head + "\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.decode().partition("\r\n")
    return int(status_line.split()[1]), rest.partition("\r\n\r\n")[2]


def test_a_foreign_host_header_is_refused_421(served: Callable[..., MetricsServer],
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Issue 15, finding 7: DNS rebinding. A page on evil.example that made a browser fetch
    this listener under its own name must not read the answer."""
    port = served().port
    for ok in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST.", f"[::1]:{port}",
               f"{socket.gethostname()}:{port}", None):
        assert _get_as(port, ok)[0] == 200, ok
    status, body = _get_as(port, f"evil.example:{port}")
    assert status == 421
    assert body.startswith(f"refused: Host 'evil.example:{port}' is not a name of this listener (")
    assert "127.0.0.1" in body and "metrics.allowed_hosts" in body
    assert "hacluster_leader" not in body
    for bad in ("10.0.0.5", "127.0.0.1.nip.io", "a b", "[::1", "host:port"):
        assert _get_as(port, bad)[0] == 421, bad
    assert any("refused: Host 'evil.example" in r.getMessage() for r in caplog.records)


def test_allowed_hosts_and_wildcard_binds() -> None:
    server = serve_metrics("127.0.0.1:0", _full()[0], allowed_hosts=["metrics.ward-a.example"])
    try:
        assert _get_as(server.port, "Metrics.Ward-A.example.:443")[0] == 200
        assert _get_as(server.port, "other.ward-a.example")[0] == 421
    finally:
        server.stop()
    server = serve_metrics("0.0.0.0:0", _full()[0])
    try:  # bound to every address: any IP literal may be ours, and none can be rebound
        assert _get_as(server.port, "192.0.2.7:9464")[0] == 200
        assert _get_as(server.port, "[2001:db8::1]:9464")[0] == 200
        assert _get_as(server.port, "localhost")[0] == 200
        assert _get_as(server.port, "evil.example")[0] == 421
    finally:
        server.stop()


# ------------------------------------------------------------------ conventions


def _observed_text() -> str:
    registry, failovers, timings = _full(extra=lambda: {"hacluster_gossip_probe_rtt_last_seconds": 0.001},
                                         status=lambda: dataclasses.replace(STATUS, connection_sync=SYNC_OK))
    failovers.observe_claim(0.12, 0.3)
    timings.observe_nft_apply(0.01)
    return _text(registry)


def test_exposition_follows_prometheus_naming() -> None:
    """What promtool's linter looks at, checked here too (it runs without promtool)."""
    families = list(text_string_to_metric_families(_observed_text()))
    assert len({f.name for f in families}) == len(families)
    for f in families:
        assert f.name.startswith("hacluster_") and f.name == f.name.lower(), f.name
        assert f.documentation, f"{f.name} has no HELP"
        for unit in ("_ms", "milliseconds", "_secs", "_kb", "_mb"):
            assert unit not in f.name, f.name
        for s in f.samples:
            if f.type == "counter":
                assert s.name.endswith("_total") or s.name.endswith("_created"), s.name
            else:
                assert not s.name.endswith("_total"), s.name


def test_promtool_check_metrics() -> None:
    """`promtool check metrics` (issue 7). promtool comes with Debian's `prometheus` package:
    when it is missing this FAILS on purpose (no skips in this suite): run scripts/setup.sh."""
    # on PATH (apt install prometheus), or unpacked next to this interpreter (.venv/bin)
    promtool = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if promtool is None:
        pytest.fail("promtool is not installed, so the exposition is not checked against Prometheus' "
                    "linter: run scripts/setup.sh, which provides promtool from Debian's `prometheus` "
                    "package")
    proc = subprocess.run([promtool, "check", "metrics"], input=_observed_text(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"promtool check metrics:\n{proc.stdout}{proc.stderr}"


def test_with_tls_only_certificates_of_the_cluster_that_may_read_get_the_page() -> None:
    import ssl
    import urllib.error
    import urllib.request

    from prometheus_client import CollectorRegistry

    from .pki import PKI

    server = serve_metrics("127.0.0.1:0", CollectorRegistry(), {"/": lambda: ("text/html", b"<p>ok</p>")},
                           tls=PKI.material("n1"))

    def get(who: str | None, where: str = "ca") -> int | str:
        ctx = ssl.create_default_context(cadata=PKI.files("n1").ca_file.read_text())
        if who is not None:
            f = PKI.files(who, where)
            ctx.load_cert_chain(f.cert_file, f.key_file)
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/", context=ctx, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ssl.SSLError, ConnectionError) as e:
            return f"refused: {e}"
    try:
        assert get("rita") == 200 and get("alice") == 200 and get("n2") == 200
        assert str(get(None)).startswith("refused")  # no client certificate: no handshake
        assert str(get("alice", "rogue")).startswith("refused")  # another CA
    finally:
        server.stop()


def test_the_reader_check_of_the_tls_listener() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from hacluster.listener import _reader_refusal

    from .pki import PKI

    def der(name: str, where: str = "ca") -> bytes:
        return x509.load_pem_x509_certificate(PKI.files(name, where).cert_file.read_bytes()).public_bytes(
            Encoding.DER)
    assert _reader_refusal(der("rita"), "ward") is None
    assert _reader_refusal(der("alice", "other"), "ward") == \
        "certificate of cluster 'elsewhere', this is 'ward'"
    assert _reader_refusal(None, "ward") == "no client certificate"


def test_raft_disk_full_and_journal_write_errors() -> None:
    v = _registry(AgentCollector(lambda: STATUS)).get_sample_value
    assert (v("hacluster_raft_disk_full"), v("hacluster_journal_write_errors_total")) == (0, 0)
    full = dataclasses.replace(STATUS, raft_disk_problem="Raft data disk full (/d): ...",
                               journal_write_errors=4)
    v = _registry(AgentCollector(lambda: full)).get_sample_value
    assert (v("hacluster_raft_disk_full"), v("hacluster_journal_write_errors_total")) == (1, 4)


# ------------------------------------------------------------------ process_* metrics


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process_* metrics read /proc")
def test_the_served_registry_has_process_metrics_with_plausible_values(
        served: Callable[..., MetricsServer]) -> None:
    """The registry the agent serves (daemon._serve_metrics: agent_registry() + AgentCollector)
    exports the standard process_* metrics next to the agent's own, scraped over HTTP."""
    import os
    import time

    from hacluster.metrics import agent_registry

    registry = agent_registry()
    registry.register(AgentCollector(lambda: STATUS, lambda: MEMBERS, lambda: CHECKS, lambda: BACKENDS,
                                     FailoverHistogram(), leader_changes=lambda: 3, timings=Timings()))
    sum(i * i for i in range(300_000))  # some CPU time of our own, whatever ran before
    server = served(registry=registry)
    status, _, text = _get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["hacluster_leader"] == 1  # the agent's own metrics are still there
    assert 0 < samples["process_cpu_seconds_total"] < time.process_time() + 1
    assert 4 * 2**20 < samples["process_resident_memory_bytes"] <= samples["process_virtual_memory_bytes"]
    assert 3 <= samples["process_open_fds"] <= samples["process_max_fds"]
    assert samples["process_max_fds"] == os.sysconf("SC_OPEN_MAX")
    assert time.time() - 86_400 < samples["process_start_time_seconds"] <= time.time()
    assert samples["process_threads"] >= 2  # this one and the listener's


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="process_* metrics read /proc")
def test_process_open_fds_follows_the_process() -> None:
    from hacluster.metrics import agent_registry

    registry = agent_registry()
    before = registry.get_sample_value("process_open_fds")
    files = [open(__file__, "rb") for _ in range(5)]  # noqa: SIM115 - held open on purpose
    try:
        assert registry.get_sample_value("process_open_fds") == before + 5
    finally:
        for f in files:
            f.close()
