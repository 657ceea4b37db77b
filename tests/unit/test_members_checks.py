"""`hacluster members` / `hacluster checks` end to end, and the agent's side of them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
from click.testing import CliRunner

from hacluster.admin import AdminService, checks_to_pb, members_to_pb, start_admin
from hacluster.agent import Agent
from hacluster.gossip.types import GossipState, NodeMeta
from hacluster.hostops.fake import FakeHostOps
from hacluster.model import (
    CheckReport,
    ChecksStatus,
    CheckState,
    CommittedHealth,
    GossipMemberStatus,
    Load,
    MembersStatus,
    NodeChecks,
    Role,
)
from hacluster_cli.client import checks_from_pb, members_from_pb
from hacluster_cli.main import cli
from tests.support.clock import FakeClock
from tests.support.config import config
from tests.support.raft import FakeRaft, leader_view, view
from tests.unit.pki import PKI

WEB_FAIL = CheckReport("web", "http", "10.0.0.12:80", CheckState.FAILING, None,
                       "connection refused", "", 1700000000.0)
WEB_OK = CheckReport("web", "http", "10.0.0.11:80", CheckState.PASSING, 1.25, "")
EXEC_FAIL = CheckReport("disk", "exec", "check-disk", CheckState.FAILING, 30.0, "exit 2",
                        "disk /var 97% full\nsecond line")

MEMBERS = MembersStatus("n1", 0, (
    GossipMemberStatus("n1", "10.0.0.11:7101", True, GossipState.ALIVE, 3, 0.0, 120.0, 0,
                       "leader", 1, 1, False, "0.2.0", 5.0, 30.0, True),
    GossipMemberStatus("n2", "10.0.0.12:7101", False, GossipState.SUSPECT, 4, 1.5, 0.8, 1,
                       "follower", 0, 2, True, "0.2.0", 99.0, 80.0, True),
    GossipMemberStatus("n3", "10.0.0.13:7101", False, GossipState.DEAD, 1, None, 12.0, 0,
                       "follower", 0, 0, False, "", 0.0, 0.0, False),
))
CHECKS = ChecksStatus("n1", (
    NodeChecks("n1", GossipState.ALIVE, (WEB_OK,)),
    NodeChecks("n2", GossipState.SUSPECT, (WEB_FAIL, EXEC_FAIL)),
    NodeChecks("n3", GossipState.DEAD, ()),
), (CommittedHealth("n1", "web", True), CommittedHealth("n2", "web", False)), 17)


def test_members_and_checks_survive_the_wire_unchanged() -> None:
    assert members_from_pb(members_to_pb(MEMBERS)) == MEMBERS
    assert checks_from_pb(checks_to_pb(CHECKS)) == CHECKS


def cli_args(port: int, name: str = "alice") -> list[str]:
    """--admin plus the CA and `name`'s certificate (alice: admin, rita: reader)."""
    f = PKI.files(name)
    return ["--admin", f"127.0.0.1:{port}", "--ca", str(f.ca_file), "--cert", str(f.cert_file),
            "--key", str(f.key_file)]


@pytest.fixture
def admin():
    asked: list[str | None] = []

    def checks(node):
        asked.append(node)
        return CHECKS if node is None else replace(
            CHECKS, nodes=tuple(n for n in CHECKS.nodes if n.node == node))

    server, port = start_admin("127.0.0.1:0", AdminService(
        lambda: None, PKI.authority(), members_provider=lambda: MEMBERS,  # type: ignore[arg-type]
        checks_provider=checks), PKI.server("n1"))
    yield cli_args(port), asked
    server.stop(None)


def test_members_table_and_json(admin) -> None:
    args, _ = admin
    r = CliRunner().invoke(cli, ["members", *args])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "members as seen by n1"
    n2 = next(ln for ln in lines if ln.strip().startswith("n2"))
    for word in ("SUSPECT (1 confirm), draining", "follower", "0/2 ok", "cpu 99% mem 80%"):
        assert word in n2
    n3 = next(ln for ln in lines if ln.strip().startswith("n3"))
    assert "DEAD" in n3 and "never" in n3
    j = json.loads(CliRunner().invoke(cli, ["members", "--json", *args]).stdout)
    assert j["members"][1]["state"] == "suspect" and j["members"][2]["last_seen_s"] is None


def test_checks_table_json_and_one_node(admin) -> None:
    args, _ = admin
    r = CliRunner().invoke(cli, ["checks", *args])
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.stdout.splitlines() if "connection refused" in ln)
    assert row.split()[:6] == ["n2", "web", "http", "FAILING", "-", "DOWN"]
    assert "n2/disk output:" in r.stdout and "  disk /var 97% full" in r.stdout
    j = json.loads(CliRunner().invoke(cli, ["checks", "n2", "--json", *args]).stdout)
    assert [n["node"] for n in j["nodes"]] == ["n2"]
    assert [c["node"] for c in j["committed"]] == ["n2"]
    assert j["nodes"][0]["checks"][0]["state"] == "failing"


def test_checks_of_an_unknown_node_says_which_exist(admin) -> None:
    args, _ = admin
    r = CliRunner().invoke(cli, ["checks", "n9", *args])
    assert r.exit_code == 1
    assert "no member 'n9'; members: n1, n2, n3" in r.output


def test_dead_members_show_their_last_reports_as_stale() -> None:
    from hacluster_cli.render import render_checks, render_members
    dead = replace(MEMBERS.members[1], state=GossipState.DEAD)
    out = render_members(replace(MEMBERS, members=(dead,)))
    assert "(0/2 ok, stale)" in out and "cpu 99%" not in out
    out = render_checks(replace(CHECKS, nodes=(replace(CHECKS.nodes[0], state=GossipState.DEAD),)))
    assert "(passing, stale: DEAD)" in out


# ----------------------------------------------------------------- the agent's side


@dataclass
class FakeView:
    node: str
    address: str
    state: GossipState
    incarnation: int
    meta: NodeMeta | None
    last_seen_age: float | None
    state_age: float
    confirmations: int
    is_self: bool


class FakeGossip:
    def __init__(self, views):
        self.views = views

    def members(self):
        return tuple(self.views)

    def request_probe(self, node):
        self.probes = getattr(self, "probes", []) + [node]
        return True

    def corroborated(self, node):
        """As Membership: a suspect becomes DEAD at once."""
        self.declared = getattr(self, "declared", []) + [node]
        self.views = [replace(v, state=GossipState.DEAD) if v.node == node else v for v in self.views]
        return True

    def awareness(self):
        return 2


def _meta(state: CheckState) -> NodeMeta:
    return NodeMeta(checks=(replace(WEB_OK, state=state),), load=Load(10, 20), version="0.2.0")


def _agent(settle=0.5):
    cfg = config(checks=[{"name": "web", "kind": "http"}], health={"settle_ms": int(settle * 1000)})
    gossip = FakeGossip([
        FakeView("n1", "a:1", GossipState.ALIVE, 1, _meta(CheckState.PASSING), 0.0, 5, 0, True),
        FakeView("n2", "b:1", GossipState.ALIVE, 1, _meta(CheckState.PASSING), 0.1, 5, 0, False),
        FakeView("n3", "c:1", GossipState.ALIVE, 1, None, None, 5, 0, False)])
    clock = FakeClock(100.0)
    raft = FakeRaft(current=leader_view())
    from hacluster.consensus.state import encode
    raft.state.apply(encode({"type": "leader_epoch", "term": raft.current.term, "node": "n1"}))
    return Agent(cfg, FakeHostOps(), raft, clock=clock, gossip=gossip), raft, gossip, clock


def _run(agent, clock, seconds, step=0.05):
    for _ in range(int(seconds / step)):
        agent.loop.tick()
        clock.advance(step)


def test_leader_commits_settled_health_changes_only() -> None:
    agent, raft, gossip, clock = _agent(settle=0.5)
    _run(agent, clock, 0.3)
    assert raft.state.health == {}  # not settled yet
    _run(agent, clock, 0.4)
    assert raft.state.health == {"n1/web": True, "n2/web": True}  # n3: no opinion yet
    n = len(raft.submitted)
    gossip.views[1] = replace(gossip.views[1], meta=_meta(CheckState.FAILING))
    _run(agent, clock, 1.0)
    assert raft.state.health["n2/web"] is False
    assert len(raft.submitted) == n + 1  # one commit per change, no repeats
    gossip.views[2] = replace(gossip.views[2], state=GossipState.DEAD)
    raft.current = leader_view(connected=False)  # powered off: Raft lost it too
    _run(agent, clock, 1.0)
    assert raft.state.health["n3/web"] is False


def test_followers_never_commit_health() -> None:
    agent, raft, _, clock = _agent(settle=0.0)
    raft.current = view(role=Role.FOLLOWER, leader="n2")
    _run(agent, clock, 1.0)
    assert not getattr(raft, "submitted", []) and raft.state.health == {}


def test_members_status_joins_gossip_and_raft() -> None:
    agent, raft, _, _ = _agent()
    raft.current = view(role=Role.FOLLOWER, leader="n2")
    ms = agent.views.members_status()
    assert ms.awareness == 2
    by = {m.id: m for m in ms.members}
    assert by["n2"].raft_role == "leader" and by["n1"].raft_role == "follower"
    assert by["n3"].raft_role == "follower"  # its Raft link is up (fakes.view: connected)
    assert (by["n1"].checks_passing, by["n1"].checks_total, by["n1"].cpu_percent) == (1, 1, 10)
    assert not by["n3"].meta_known and by["n3"].last_seen_s is None
    cs = agent.views.checks_status("n2")
    assert [n.node for n in cs.nodes] == ["n2"]


def test_refused_proposals_back_off_instead_of_repeating_every_tick() -> None:
    agent, raft, gossip, clock = _agent(settle=0.0)
    raft.state.epoch_term = 99  # a newer leader exists: every proposal is refused
    _run(agent, clock, 2.0, step=0.01)
    assert 1 <= len(raft.submitted) <= 3, len(raft.submitted)  # 0.5 s, then 1 s backoff


def test_a_peer_dead_in_gossip_but_acking_raft_keeps_its_verdict(caplog) -> None:
    agent, raft, gossip, clock = _agent(settle=0.0)
    _run(agent, clock, 0.5)
    assert raft.state.health["n2/web"] is True
    gossip.views[1] = replace(gossip.views[1], state=GossipState.DEAD)
    _run(agent, clock, 0.5)  # leader_view(): every peer acks Raft heartbeats
    assert raft.state.health["n2/web"] is True
    assert "n2 is dead in gossip but Raft still hears it" in caplog.text
    raft.current = leader_view(connected=False)  # now Raft lost it too
    _run(agent, clock, 0.5)
    assert raft.state.health["n2/web"] is False
