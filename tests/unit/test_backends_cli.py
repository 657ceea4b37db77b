"""`hacluster backends / drain / undrain / weight` end to end over loopback gRPC."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hacluster.actions import AdminActions
from hacluster.admin import AdminService, start_admin
from hacluster.consensus.state import encode
from hacluster.dataplane.build import build_table
from hacluster.dataplane.status import backends_status
from hacluster.dataplane.table import table_to_doc
from hacluster_cli.main import cli
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view
from tests.unit.pki import PKI

SERVICES = [{"name": "web", "vip": "10.0.0.100", "port": 80, "check": "web",
             "backends": [{"node": "n1"}, {"node": "n2", "weight": 2}, {"node": "n3"}]}]


class Worker:
    name = "nftables"

    def applied_generation(self):
        return 1

    def backend_counters(self):
        return {"web/n1": (10, 1500)}


def cli_args(port: int, name: str = "alice") -> list[str]:
    """--admin plus the CA and `name`'s certificate (alice: admin, rita: reader)."""
    f = PKI.files(name)
    return ["--admin", f"127.0.0.1:{port}", "--ca", str(f.ca_file), "--cert", str(f.cert_file),
            "--key", str(f.key_file)]


@pytest.fixture
def served():
    cfg = config(checks=[{"name": "web", "kind": "http"}], services=SERVICES)
    raft = FakeRaft(current=leader_view())
    raft.state.apply(encode({"type": "leader_epoch", "term": raft.current.term, "node": "n1"}))
    table = build_table(cfg.services, {m.id: m.address for m in cfg.members}, {"n3/web": False}, {}, 1)
    raft.state.apply(encode({"type": "table", "term": raft.current.term, "expect_generation": 0,
                             "table": table_to_doc(table)}))
    service = AdminService(lambda: None, PKI.authority(),  # type: ignore[arg-type,return-value]
                           backends_provider=lambda s: backends_status("n1", raft.state, Worker()),
                           actions=AdminActions(cfg, raft))
    server, port = start_admin("127.0.0.1:0", service, PKI.server("n1"))
    yield port, raft
    server.stop(None)


@pytest.fixture
def agent(served):
    port, raft = served
    return cli_args(port), raft


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_backends_table_and_json(agent):
    args, _ = agent
    r = run("backends", *args)
    assert r.exit_code == 0, r.output
    assert "generation 1 committed, 1 applied in its data plane (nftables)" in r.stdout
    assert "web  10.0.0.100:80/tcp  round-robin  2/3 serving" in r.stdout
    n1 = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("n1"))
    assert n1.split()[-2:] == ["10", "1500"]
    assert "DOWN" in next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("n3"))
    j = json.loads(run("backends", "web", "--json", *args).stdout)
    assert j["services"][0]["backends"][1]["weight"] == 2
    assert run("backends", "nope", *args).exit_code == 1


def test_drain_undrain_and_weight_are_committed_flags(agent):
    args, raft = agent
    r = run("drain", "n2", *args)
    assert r.exit_code == 0, r.output
    assert "server n2 draining (committed" in r.stdout and raft.state.flags["draining/n2"] == "true"
    assert "already so" in run("drain", "n2", *args).stdout
    r = run("drain", "web/n3", "--disable", "--json", *args)
    assert json.loads(r.stdout)["ok"] and raft.state.flags["backend/web/n3"] == "disabled"
    assert run("weight", "web/n1", "7", *args).exit_code == 0 and raft.state.flags["weight/web/n1"] == "7"
    assert run("undrain", "n2", *args).exit_code == 0 and "draining/n2" not in raft.state.flags
    assert run("weight", "web/n1", "0", *args).exit_code == 0 and "weight/web/n1" not in raft.state.flags


@pytest.mark.parametrize("argv, words", [
    (("drain", "n9"), "neither a member"),
    (("drain", "web/n9"), "has no backend 'n9'"),
    (("drain", "db/n1"), "no service 'db'"),
    (("drain", "n1", "--disable"), "applies to one backend"),
    (("weight", "web/n1", "1001"), "1001 is not in the range"),
    (("weight", "webn1", "3"), "SERVICE/BACKEND"),
])
def test_bad_actions_say_why_and_change_nothing(agent, argv, words):
    args, raft = agent
    before = dict(raft.state.flags)
    r = run(*argv, *args)
    assert r.exit_code != 0 and words in r.output, r.output
    assert raft.state.flags == before


def test_no_quorum_refuses_actions(agent):
    args, raft = agent
    raft.current = view(role=raft.current.role.FOLLOWER)  # no leader known, no quorum
    r = run("drain", "n2", *args)
    assert r.exit_code == 1 and "no leader with a quorum" in r.output


def test_a_reader_certificate_may_look_but_not_act(served):
    port, raft = served
    args = cli_args(port, "rita")
    r = run("backends", *args)
    assert r.exit_code == 0, r.output
    assert "web  10.0.0.100:80/tcp  round-robin  2/3 serving" in r.stdout
    before = dict(raft.state.flags)
    r = run("drain", "n2", *args)
    assert r.exit_code == 4 and "reader 'rita' may not act on the cluster" in r.output, r.output
    assert raft.state.flags == before
