"""Moving (or not) the leader's VIPs, as the operator sees it: `drain` of the leader says it
keeps the VIPs until drain_timeout_s and how to move them now; `failover --to <the leader>`
is a no-op that exits 0. Through the real CLI and admin service, on a fake Raft."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from hacluster.actions import AdminActions
from hacluster.admin import AdminService, start_admin
from hacluster.agent import Agent
from hacluster.consensus.state import encode
from hacluster.hostops.fake import FakeHostOps
from hacluster_cli.main import cli
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view

from .pki import PKI

SERVICES = [{"name": "web", "vip": "10.0.0.100", "port": 80, "drain_timeout_s": 120,
             "backends": [{"node": "n1"}, {"node": "n2"}, {"node": "n3"}]},
            {"name": "hl7", "vip": "10.0.0.100", "port": 2575, "drain_timeout_s": 300,
             "backends": [{"node": "n1"}, {"node": "n2"}]}]


@pytest.fixture
def leader() -> Iterator[tuple[Agent, FakeRaft, FakeHostOps, list[str]]]:
    """n1 leads (fake Raft) and holds its VIP; its admin API on loopback; the CLI arguments
    that ask it."""
    raft = FakeRaft(current=leader_view())
    raft.state.apply(encode({"type": "leader_epoch", "term": raft.current.term, "node": "n1"}))
    cfg = config(services=SERVICES)
    host = FakeHostOps()
    agent = Agent(cfg, host, raft, clock=FakeClock(100.0))
    agent.loop.tick()
    service = AdminService(agent.views.status, PKI.authority(), actions=AdminActions(cfg, raft),
                           failover=agent.failover.run)
    server, port = start_admin("127.0.0.1:0", service, PKI.server("n1"))
    f = PKI.files("alice")
    args = ["--admin", f"127.0.0.1:{port}", "--ca", str(f.ca_file), "--cert", str(f.cert_file),
            "--key", str(f.key_file)]
    yield agent, raft, host, args
    server.stop(None)


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_draining_the_leader_says_it_keeps_the_vips_and_how_to_move_them(leader) -> None:
    _, raft, _, args = leader
    r = _run("drain", "n1", *args)
    assert r.exit_code == 0, r.output
    assert "server n1 draining; n1 leads and keeps the VIPs until drain_timeout_s (300 s) has " \
           "passed" in r.stdout  # the services' longest
    assert "to move them now: hacluster failover --to NODE" in r.stdout
    assert raft.state.flags["draining/n1"] == "true"
    got = json.loads(_run("undrain", "n1", "--json", *args).stdout)
    assert got["ok"] and "leads" not in got["detail"]  # undrain: nothing to warn about


def test_draining_a_follower_says_nothing_of_the_vips(leader) -> None:
    _, _, _, args = leader
    r = _run("drain", "n2", "--json", *args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["detail"] == "server n2 draining"


def test_without_services_or_in_maintenance_the_note_says_what_happens_instead() -> None:
    raft = FakeRaft(current=leader_view())
    detail, _ = AdminActions(config(), raft).drain("n1", undo=False, disable=False)
    assert "n1 leads: it hands leadership and the VIPs over within seconds" in detail
    raft = FakeRaft(current=leader_view())
    actions = AdminActions(config(services=SERVICES), raft)
    actions.maintenance(True)
    detail, _ = actions.drain("n1", undo=False, disable=False)
    assert "MAINTENANCE is on, so it does not hand them over by itself" in detail
    assert "hacluster failover --to NODE" in detail


def test_failover_to_the_leader_itself_is_a_no_op_that_exits_0(leader) -> None:
    agent, raft, host, args = leader
    r = _run("failover", "--to", "n1", *args)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == ("n1 already leads: nothing to move (leadership and 10.0.0.100 "
                                "stay on n1)")
    got = json.loads(_run("failover", "--to", "n1", "--json", *args).stdout)
    assert (got["source"], got["target"], got["vips"], got["moved"]) == ("n1", "n1", [], False)
    assert got["switch_ms"] is None and got["handed_over_ms"] is None
    dry = _run("failover", "--to", "n1", "--dry-run", *args)
    assert dry.exit_code == 0 and "already leads: nothing to move" in dry.stdout
    # nothing was released, nothing transferred
    assert raft.transfers == [] and not agent.loop.releasing
    assert host.count("claim") == 1 and host.count("release") == 0


def test_failover_to_an_unknown_member_still_fails(leader) -> None:
    _, _, _, args = leader
    r = _run("failover", "--to", "n9", *args)
    assert r.exit_code == 1 and "no member 'n9'" in r.stderr
