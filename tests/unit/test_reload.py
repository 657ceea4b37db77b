"""Config reload (issue 16 item 3): plan() sorts every changed key; a refusal or an invalid file
changes nothing; an accepted reload swaps services and checks in the shared Config, and the
leader's next table follows; the admin RPC is authorized and audited; the CLI's exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hacluster.admin import AdminService, start_admin
from hacluster.agent import Agent
from hacluster.audit import AuditLog, tail
from hacluster.config import load_config
from hacluster.consensus.state import encode
from hacluster.events import EventLog
from hacluster.hostops.fake import FakeHostOps
from hacluster.reload import MEMBERS_IGNORED, Reloader, plan
from hacluster_cli.main import cli
from tests.support.clock import FakeClock
from tests.support.raft import FakeRaft, leader_view
from tests.support.wait import wait_until
from tests.unit.test_admin import STATUS, _as
from tests.unit.test_agent_table import FakeDataplane

from .pki import PKI

WEB = {"name": "web", "vip": "10.0.0.100", "port": 80, "check": "web", "algorithm": "weighted",
       "backends": [{"node": "n1"}, {"node": "n2"}, {"node": "n3"}]}
DOC = {
    "cluster": "ward", "node_id": "n1",
    "members": [{"id": f"n{i}", "address": f"10.0.0.1{i}", "raft_port": 7100, "grpc_port": 7101}
                for i in (1, 2, 3)],
    "vips": [{"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}],
    "data_dir": "data", "secret_file": "secret",
    "tls": {"ca_file": "ca.crt", "cert_file": "n1.crt", "key_file": "n1.key"},
    "checks": [{"name": "web", "kind": "http", "port": 80}],
    "services": [WEB], "metrics": {"listen": "10.0.0.11:9464"},
}


def _doc(**over):
    d = copy.deepcopy(DOC)
    d.update(copy.deepcopy(over))
    return d


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _configs(tmp_path: Path, **over):
    path = _write(tmp_path / "hacluster.yaml", DOC)
    old = load_config(path)
    _write(path, _doc(**over))
    return old, load_config(path), path


def _web(**over):
    return [{**copy.deepcopy(WEB), **over}]


# ------------------------------------------------------------------------ plan()

def test_backends_weights_algorithms_and_checks_are_live(tmp_path):
    backends = [{"node": "n1"}, {"node": "n2", "weight": 3}, {"node": "n3"},
                {"address": "10.0.0.51"}]
    old, new, _ = _configs(tmp_path, services=_web(backends=backends),
                           checks=[{"name": "web", "kind": "http", "port": 80},
                                   {"name": "db", "kind": "tcp", "port": 5432}])
    p = plan(old, new)
    assert not p.refused and p.ignored == ()
    assert set(p.live) >= {"services", "checks"}
    assert "service web: backend 10.0.0.51:0 added (weight 1)" in p.changes
    assert "service web: backend n2 weight 1 -> 3" in p.changes
    assert "check db added" in p.changes


@pytest.mark.parametrize("over, line", [
    ({"services": _web(algorithm="maglev")}, "service web: algorithm weighted -> maglev"),
    ({"services": _web(backends=[{"node": "n1"}, {"node": "n2"}])}, "service web: backend n3 removed"),
    ({"services": _web(port=8080)}, "service web: ports changed"),
    ({"services": _web() + [{**WEB, "name": "api", "port": 81}]}, "service api added (3 backends)"),
    ({"log_level": "debug"}, "log_level: info -> debug"),
    ({"log_format": "json"}, "log_format: human -> json"),
    ({"metrics": {"listen": "10.0.0.11:9465"}}, "metrics.listen: 10.0.0.11:9464 -> 10.0.0.11:9465"),
    ({"health": {"settle_ms": 500}}, "health.settle_ms: 200 -> 500"),
])
def test_each_live_key_group_is_described(tmp_path, over, line):
    old, new, _ = _configs(tmp_path, **over)
    p = plan(old, new)
    assert not p.refused and line in p.changes, p.changes


@pytest.mark.parametrize("over, key", [
    ({"cluster": "other"}, "cluster"),
    ({"vips": DOC["vips"] + [{"address": "10.0.0.101", "prefix": 24, "interface": "eth0"}]}, "vips"),
    ({"timing": {"heartbeat_ms": 40}}, "timing"),
    ({"data_dir": "elsewhere"}, "data_dir"),
    ({"secret_file": "secret2"}, "secret_file"),
    ({"tls": {"ca_file": "ca2.crt", "cert_file": "n1.crt", "key_file": "n1.key"}}, "tls"),
    ({"gossip": {"probe_interval_ms": 900}}, "gossip"),
    ({"dataplane": "proxy"}, "dataplane"),
    ({"conntrack_sync": {"mode": "off"}}, "conntrack_sync"),
    ({"services": []}, "services"),  # the data plane exists only when there are services
])
def test_restart_keys_are_refused_with_their_reason(tmp_path, over, key):
    old, new, _ = _configs(tmp_path, **over)
    p = plan(old, new)
    assert p.refused and [k for k, _ in p.restart] == [key]
    assert all(len(why) > 20 for _, why in p.restart)


def test_node_id_and_own_ports_need_a_restart_other_members_are_ignored(tmp_path):
    members = copy.deepcopy(DOC["members"])
    old, new, _ = _configs(tmp_path, node_id="n2")
    assert "node_id" in [k for k, _ in plan(old, new).restart]
    members.append({"id": "n4", "address": "10.0.0.14", "raft_port": 7100, "grpc_port": 7101})
    old, new, _ = _configs(tmp_path, members=members)
    p = plan(old, new)
    assert not p.refused and p.ignored == (MEMBERS_IGNORED,) and "members" not in p.live
    members[0]["grpc_port"] = 7102
    old, new, _ = _configs(tmp_path, members=members)
    assert [k for k, _ in plan(old, new).restart] == ["members[n1]"]


# ------------------------------------------------------------------------ Reloader

class _Parts:
    def __init__(self, fail_metrics: bool = False):
        self.checks: list = []
        self.metrics: list = []
        self.fail_metrics = fail_metrics

    def on_checks(self, checks):
        self.checks.append(tuple(c.name for c in checks))

    def on_metrics(self, new):
        if self.fail_metrics:
            raise OSError(f"metrics.listen: cannot listen on {new.metrics_listen}: in use")
        self.metrics.append(new.metrics_listen)


def _reloader(tmp_path, parts=None, audit=None):
    path = _write(tmp_path / "hacluster.yaml", DOC)
    config = load_config(path)
    parts = parts or _Parts()
    events = EventLog("n1")
    return config, Reloader(config, events=events, audit=audit, on_checks=parts.on_checks,
                            on_metrics=parts.on_metrics), parts, events, path


def test_an_accepted_reload_swaps_services_and_checks_and_records_an_event(tmp_path):
    config, r, parts, events, path = _reloader(tmp_path)
    backends = [{"node": "n1"}, {"node": "n2", "weight": 3}, {"node": "n3"}]
    _write(path, _doc(services=_web(backends=backends), log_level="debug",
                      checks=[{"name": "web", "kind": "http", "port": 81}],
                      metrics={"listen": "10.0.0.11:9465"}))
    result = r.reload(by="SIGHUP")
    assert result.applied and "service web: backend n2 weight 1 -> 3" in result.changes
    assert [b.weight for b in config.services[0].backends] == [1, 3, 1]
    assert config.checks[0].port == 81 and config.log_level == "debug"
    assert parts.checks == [("web",)] and parts.metrics == ["10.0.0.11:9465"]
    (ev,) = events.after(0)
    assert ev.kind == "agent" and ev.text.startswith("config reload (SIGHUP): applied 4 change(s)")
    assert r.reload().detail == "no change"


def test_a_restart_key_refuses_everything_and_changes_nothing(tmp_path):
    config, r, parts, events, path = _reloader(tmp_path)
    before = copy.copy(config.__dict__)
    _write(path, _doc(services=_web(algorithm="maglev"), timing={"heartbeat_ms": 40}))
    result = r.reload()
    assert not result.applied and [k for k, _ in result.restart] == ["timing"]
    assert result.changes == ("service web: algorithm weighted -> maglev",)  # said, not applied
    assert config.__dict__ == before and parts.checks == parts.metrics == []
    assert "refused: timing need a restart" in events.after(0)[0].text


def test_an_invalid_file_is_refused_with_every_error(tmp_path):
    config, r, parts, _, path = _reloader(tmp_path)
    before = copy.copy(config.__dict__)
    _write(path, _doc(services=_web(backends=[{"node": "n1", "weight": 0}]), log_level="loud"))
    result = r.reload()
    assert not result.applied and len(result.errors) == 2
    assert any(e.startswith("log_level") for e in result.errors)
    assert any("services[0].backends[0]" in e for e in result.errors)
    assert config.__dict__ == before and parts.checks == []


def test_a_metrics_port_that_cannot_be_bound_refuses_before_anything_changes(tmp_path):
    config, r, parts, _, path = _reloader(tmp_path, _Parts(fail_metrics=True))
    _write(path, _doc(metrics={"listen": "10.0.0.11:9465"}, log_level="debug"))
    result = r.reload()
    assert not result.applied and "in use" in result.detail
    assert config.metrics_listen == "10.0.0.11:9464" and config.log_level == "info"


def test_checks_that_cannot_start_put_the_old_metrics_listener_back(tmp_path):
    parts = _Parts()

    def broken(checks):
        raise RuntimeError("the check runner did not answer")
    config, r, _, _, path = _reloader(tmp_path, parts)
    r.on_checks = broken
    _write(path, _doc(metrics={"listen": "10.0.0.11:9465"}, checks=[{"name": "web", "kind": "tcp",
                                                                     "port": 80}]))
    result = r.reload()
    assert not result.applied and "did not answer" in result.detail
    assert parts.metrics == ["10.0.0.11:9465", "10.0.0.11:9464"]  # rebound, then back
    assert config.metrics_listen == "10.0.0.11:9464" and config.checks[0].kind == "http"


def test_a_dry_run_says_and_applies_nothing(tmp_path):
    config, r, parts, events, path = _reloader(tmp_path)
    _write(path, _doc(log_level="debug"))
    result = r.reload(dry_run=True)
    assert result.dry_run and not result.applied and result.changes == ("log_level: info -> debug",)
    assert config.log_level == "info" and events.after(0) == []


def test_sighup_requests_run_on_the_reloader_thread_and_are_audited(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl", "n1")
    config, r, _, events, path = _reloader(tmp_path, audit=audit)
    r.start()
    try:
        _write(path, _doc(log_level="warning"))
        r.request("SIGHUP")
        wait_until(lambda: config.log_level == "warning", 5, "the SIGHUP reload")
        wait_until(lambda: len(tail(tmp_path / "audit.jsonl", 10)) >= 1, 5, "the audit line")
    finally:
        r.stop()
        audit.close()
    (line,) = tail(tmp_path / "audit.jsonl", 10)
    assert line["who"] == "local SIGHUP" and line["action"] == "reload" and line["ok"] is True


# ------------------------------------------------------------------------ the leader follows

def test_the_leader_commits_a_table_with_the_new_backend_and_weight(tmp_path):
    config, r, _, _, path = _reloader(tmp_path)
    raft = FakeRaft(current=leader_view())
    raft.state.apply(encode({"type": "leader_epoch", "term": raft.current.term, "node": "n1"}))
    dp, clock = FakeDataplane(), FakeClock(100.0)
    agent = Agent(config, FakeHostOps(), raft, clock=clock, dataplane=dp)

    def run(seconds):
        for _ in range(int(seconds / 0.05)):
            agent.loop.tick()
            clock.advance(0.05)
    run(0.3)
    assert raft.state.table_generation == 1
    backends = [{"node": "n1"}, {"node": "n2", "weight": 3}, {"node": "n3"},
                {"address": "10.0.0.51"}]
    _write(path, _doc(services=_web(backends=backends)))
    assert r.reload().applied
    run(0.3)
    assert raft.state.table_generation == 2
    web = dp.wanted[-1].services[0]
    assert {b.id: b.weight for b in web.backends} == {"n1": 1, "n2": 3, "n3": 1, "10.0.0.51:0": 1}


# ------------------------------------------------------------------------ admin RPC and CLI

@pytest.fixture
def agent_with_reload(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl", "n1")
    config, r, _, _, path = _reloader(tmp_path, audit=None)
    server, port = start_admin("127.0.0.1:0", AdminService(lambda: STATUS, PKI.authority(), audit=audit,
                                                           reload=r.reload), PKI.server("n1"))
    yield config, path, port, tmp_path / "audit.jsonl"
    server.stop(None)
    audit.close()


def _reload(port, *args):
    return CliRunner().invoke(cli, ["reload", "--admin", f"127.0.0.1:{port}", *args])


def test_a_reader_may_not_reload(agent_with_reload):
    config, path, port, audit = agent_with_reload
    _write(path, _doc(log_level="debug"))
    result = _reload(port, *_as("rita"))
    assert result.exit_code == 4, result.output
    assert "may not act on the cluster" in result.stderr and config.log_level == "info"
    assert tail(audit, 10) == []


def test_reload_over_the_admin_api_applies_and_is_audited(agent_with_reload):
    config, path, port, audit = agent_with_reload
    _write(path, _doc(services=_web(backends=[{"node": "n1"}, {"node": "n2", "weight": 5}])))
    result = _reload(port, *_as())
    assert result.exit_code == 0, result.output
    assert "applied 2 change(s)" in result.output
    assert "service web: backend n3 removed" in result.output
    assert "service web: backend n2 weight 1 -> 5" in result.output
    assert [b.node for b in config.services[0].backends] == ["n1", "n2"]
    started, done = tail(audit, 10)
    assert (started["action"], started["result"], done["action"], done["ok"]) == \
        ("reload", "started", "reload", True)
    assert "backend n2 weight 1 -> 5" in done["result"] and "alice" in done["who"]


def test_a_refused_reload_exits_1_lists_the_keys_and_is_audited_as_failed(agent_with_reload):
    config, path, port, audit = agent_with_reload
    _write(path, _doc(cluster="other", log_level="debug"))
    result = _reload(port, *_as())
    assert result.exit_code == 1, result.output
    assert "need a restart (refused):" in result.output and "  cluster: " in result.output
    assert "changes (NOT applied):" in result.output and config.log_level == "info"
    assert tail(audit, 10)[-1]["ok"] is False
    out = _reload(port, *_as(), "--json")
    assert out.exit_code == 1
    d = json.loads(out.output)
    assert not d["applied"] and [k["key"] for k in d["restart_keys"]] == ["cluster"]


def test_an_invalid_file_exits_1_with_every_error_and_dry_run_exits_0(agent_with_reload):
    config, path, port, audit = agent_with_reload
    _write(path, _doc(log_level="loud"))
    result = _reload(port, *_as(), "--json")
    assert result.exit_code == 1 and json.loads(result.output)["errors"][0].startswith("log_level")
    _write(path, _doc(log_level="debug"))
    dry = _reload(port, *_as(), "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.output)["changes"] == ["log_level: info -> debug"]
    assert config.log_level == "info"


# ------------------------------------------------------------------------ the checks follow

def test_the_runner_keeps_unchanged_checks_stops_removed_and_starts_new_ones():
    import socket

    from hacluster.health.runner import HealthRunner
    from hacluster.health.spec import TcpCheck
    from hacluster.model import CheckState

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        port = srv.getsockname()[1]

        def tcp(name, p=port):
            return TcpCheck(name=name, kind="tcp", port=p, interval_ms=50, timeout_ms=40, rise=1, fall=1)
        seen: list = []
        runner = HealthRunner([tcp("keep"), tcp("drop")], "127.0.0.1", on_change=seen.append)
        runner.start()
        try:
            def states():
                return {r.name: r.state for r in runner.reports()}
            wait_until(lambda: set(states().values()) == {CheckState.PASSING}, 5, "both passing")
            kept = runner.reports()[0]
            runner.update([tcp("keep"), tcp("new")])
            assert [r.name for r in runner.reports()] == ["keep", "new"]
            assert runner.reports()[0].changed_at == kept.changed_at  # not restarted
            assert [r.name for r in seen[-1]] == ["keep", "new"]  # gossiped at once
            wait_until(lambda: states() == {"keep": CheckState.PASSING, "new": CheckState.PASSING},
                       5, "the new check to pass")
            with socket.socket() as closed:
                closed.bind(("127.0.0.1", 0))
                dead = closed.getsockname()[1]
            runner.update([tcp("keep"), tcp("new", dead)])  # changed: starts over, then fails
            wait_until(lambda: states()["new"] is CheckState.FAILING, 5, "the changed check")
            assert states()["keep"] is CheckState.PASSING
        finally:
            runner.stop()
