"""`hacluster status --cluster`: the overview's logic on fake answers, its screen, --watch, and
one run through the real CLI against real AdminServices over mutual TLS."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from hacluster.admin import AdminService, start_admin
from hacluster.model import (
    AgentStatus,
    BackendsStatus,
    BackendStatus,
    GossipMemberStatus,
    GossipState,
    MembersStatus,
    MemberStatus,
    Role,
    ServiceStatus,
    SyncState,
    SyncStatus,
    VipStatus,
)
from hacluster_cli import main, overview, overview_screen
from hacluster_cli.client import AgentUnreachable
from hacluster_cli.main import cli
from hacluster_cli.overview import OverviewEvent, gather
from hacluster_cli.overview_screen import render_overview

from .pki import PKI

ADMIN = {"n1": "10.0.0.1:7101", "n2": "10.0.0.2:7101", "n3": "10.0.0.3:7101"}
VIPS = (("10.0.0.100", 24), ("10.0.0.101", 24))


def status(node: str = "n1", leader: str | None = "n1", held: tuple[bool, ...] | None = None,
           **kw: Any) -> AgentStatus:
    """`node`'s status in a healthy 3-member cluster led by `leader` (which holds the VIPs)."""
    leads = node == leader
    held = held if held is not None else (leads,) * len(VIPS)
    st = AgentStatus(
        node=node, cluster="ward-a", version="0.1.0",
        role=Role.LEADER if leads else Role.FOLLOWER, term=7, leader=leader,
        lease_ok=leads, lease_remaining_ms=143.0 if leads else 0.0, has_quorum=leader is not None,
        handoff=False,
        vips=tuple(VipStatus(a, p, "eth0", h) for (a, p), h in zip(VIPS, held, strict=True)),
        members=tuple(MemberStatus(n, f"{ADMIN[n].split(':')[0]}:7100", n == node, True,
                                   None if n == node or not leads else 5.0, ADMIN[n])
                      for n in ("n1", "n2", "n3")),
        sentence=f"{'leader' if leads else 'follower'}, table gen 42", commit_index=120,
        last_applied=120, epoch_term=7, generation=42, uptime_s=100.0)
    return dataclasses.replace(st, **kw)


def gossip(node: str = "n1", states: dict[str, GossipState] | None = None,
           leader: str = "n1", draining: tuple[str, ...] = ()) -> MembersStatus:
    states = states or {}
    return MembersStatus(node=node, awareness=0, members=tuple(
        GossipMemberStatus(
            id=n, address=f"10.0.0.{i}:7102", is_self=n == node,
            state=states.get(n, GossipState.ALIVE), incarnation=1, last_seen_s=0.2,
            state_age_s=60.0, confirmations=0, raft_role="leader" if n == leader else "follower",
            checks_passing=2, checks_total=2, draining=n in draining, version="0.1.0",
            cpu_percent=5.0, mem_percent=20.0, meta_known=True)
        for i, n in enumerate(("n1", "n2", "n3"), start=1)))


def table(node: str = "n1", states: dict[str, str] | None = None, applied: int | None = 42
          ) -> BackendsStatus:
    states = states or {}
    backends = tuple(BackendStatus(f"ward-{i}", f"10.0.1.{i}", 8080, 1,
                                   states.get(f"ward-{i}", "active")) for i in (1, 2, 3))
    return BackendsStatus(node=node, table_generation=42, applied_generation=applied,
                          dataplane="nftables", services=(
                              ServiceStatus("web", "10.0.0.100", "tcp", (80, 443), "maglev", backends),))


class FakeAgents:
    """The fetch functions of overview.py, answering from per-target data; an Exception as
    an answer is raised. `calls` records (call, target)."""

    def __init__(self, answers: dict[tuple[str, str], Any]):
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def _answer(self, call: str, target: str) -> Any:
        self.calls.append((call, target))
        got = self.answers.get((call, target))
        if got is None:
            raise AgentUnreachable(f"cannot reach the hacluster agent at {target}: refused\n  hint")
        if isinstance(got, Exception):
            raise got
        return got

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeAgents:
        monkeypatch.setattr(overview, "fetch_status", lambda t, k, to: self._answer("status", t))
        monkeypatch.setattr(overview, "fetch_members", lambda t, k, to: self._answer("members", t))
        monkeypatch.setattr(overview, "fetch_backends",
                            lambda t, k, svc, to: self._answer("backends", t))
        monkeypatch.setattr(main, "fetch_events", lambda t, k, after, last, to: [])
        return self


def healthy(node: str = "n1", leader: str = "n1", **over: Any) -> dict[tuple[str, str], Any]:
    """The answers of a healthy cluster, asked at `node`; `over` replaces some of them,
    spelt CALL__NODE=answer (status__n2=...)."""
    answers: dict[tuple[str, str], Any] = {}
    for n in ("n1", "n2", "n3"):
        answers[("status", ADMIN[n])] = status(n, leader)
    answers[("members", ADMIN[node])] = gossip(node, leader=leader)
    answers[("backends", ADMIN[node])] = table(node)
    for key, value in over.items():
        call, n = key.split("__")
        answers[(call, ADMIN[n])] = value
    return answers


def run(monkeypatch: pytest.MonkeyPatch, answers: dict[tuple[str, str], Any],
        node: str = "n1") -> tuple[overview.Overview, FakeAgents]:
    fake = FakeAgents(answers).install(monkeypatch)
    return gather(ADMIN[node], None, 1.0), fake


# ------------------------------------------------------------------ gathering


def test_a_healthy_cluster_has_no_problems_and_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, fake = run(monkeypatch, healthy())
    assert ov.problems == () and ov.missing == () and ov.healthy and ov.exit_code == 0
    assert (ov.cluster, ov.leader, ov.term, ov.quorum, ov.lease_ok) == ("ward-a", "n1", 7, True, True)
    assert [(v.address, v.holders, v.known) for v in ov.vips] == [
        ("10.0.0.100/24", ("n1",), True), ("10.0.0.101/24", ("n1",), True)]
    assert ov.members_alive == 3
    assert [(m.id, m.raft_role, m.raft_link) for m in ov.members] == [
        ("n1", "leader", "self"), ("n2", "follower", "up"), ("n3", "follower", "up")]
    web = ov.services[0]
    assert (web.healthy, web.total, web.down, web.draining) == (3, 3, (), ())
    assert (ov.table.committed, ov.table.applied) == (42, 42)
    assert ov.events is None  # no events hook: the key is there, null
    # the contacted agent leads: its own status is the leader's, asked once; every other
    # member is asked for its own word on the VIPs
    assert [c for c in fake.calls if c[0] == "status"] == [("status", ADMIN[n]) for n in ("n1", "n2", "n3")]
    screen = render_overview(ov)
    assert screen.splitlines()[0] == "cluster ward-a: leader n1 (term 7), quorum ok, 3/3 members alive"
    assert screen.splitlines()[-1] == "no problems"
    assert "10.0.0.100/24  eth0  held by n1" in screen
    assert "web   10.0.0.100:80,443/tcp  3/3" in screen


def test_a_follower_asks_the_leader_for_the_vip_holders(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, fake = run(monkeypatch, healthy(node="n2"), node="n2")
    assert ("status", ADMIN["n1"]) in fake.calls
    assert ov.asked == "n2" and ov.asked_role is Role.FOLLOWER and ov.leader == "n1"
    assert ov.lease_ok is True and ov.lease_remaining_ms == 143.0  # the leader's lease
    assert all(v.holders == ("n1",) and v.known for v in ov.vips)
    assert ov.healthy
    assert [m.id for m in ov.members if m.is_self] == ["n2"]
    screen = render_overview(ov)
    assert "asked n2 (follower) and the leader n1" in screen
    assert "n2 (asked)" in screen


def test_the_leader_unreachable_is_said_and_not_called_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = healthy(node="n2")
    del answers[("status", ADMIN["n1"])]
    ov, _ = run(monkeypatch, answers, node="n2")
    assert ov.problems == ()
    assert len(ov.missing) == 1 and "cannot ask n1 at 10.0.0.1:7101" in ov.missing[0]
    assert ov.exit_code == 1
    assert all(v.holders == () and not v.known for v in ov.vips)  # unknown, not "no one"
    screen = render_overview(ov)
    assert "holder unknown (leader not asked)" in screen and "HELD BY NO ONE" not in screen
    assert "lease unknown" in screen and "no problems seen (but see: not known)" in screen


def test_no_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = healthy(node="n2", status__n2=status("n2", None, role=Role.CANDIDATE, term=8))
    ov, fake = run(monkeypatch, answers, node="n2")
    assert ov.leader is None and not ov.quorum
    assert any(p.startswith("no leader: n2 knows none") for p in ov.problems)
    assert any(p.startswith("no quorum") for p in ov.problems)
    assert ov.exit_code == 1
    assert render_overview(ov).startswith("cluster ward-a: NO LEADER (term 8), NO QUORUM, 3/3")


def test_a_vip_held_by_no_one_is_a_loud_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, healthy(status__n1=status("n1", held=(True, False))))
    assert ov.vips[1].holders == () and ov.vips[1].known
    assert ov.problems == ("VIP 10.0.0.101/24 is held by no one: the leader n1 does not hold it",)
    assert ov.exit_code == 1
    screen = render_overview(ov)
    assert "10.0.0.101/24  eth0  HELD BY NO ONE" in screen
    assert screen.splitlines()[-2:] == [
        "problems (1)", "  - VIP 10.0.0.101/24 is held by no one: the leader n1 does not hold it"]


def test_a_vip_held_by_a_follower_too_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, healthy(node="n2", status__n2=status("n2", held=(True, False))),
                node="n2")
    assert ov.vips[0].holders == ("n1", "n2")
    assert ov.problems == ("VIP 10.0.0.100/24 is held by n1 and n2 at once",)


def test_a_dead_member(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = dataclasses.replace(
        status("n1"), members=tuple(dataclasses.replace(m, connected=m.id != "n3")
                                    for m in status("n1").members))
    ov, _ = run(monkeypatch, healthy(status__n1=dead,
                                     members__n1=gossip(states={"n3": GossipState.DEAD})))
    assert ov.members_alive == 2
    assert ov.problems == ("member n3: DEAD in gossip (as n1 sees it), no Raft link from the "
                           "leader n1",)
    screen = render_overview(ov)
    assert screen.splitlines()[0].endswith("quorum ok, 2/3 members alive")
    row = next(line.split() for line in screen.splitlines() if line.startswith("  n3 "))
    assert row == ["n3", "DEAD", "follower", "DOWN", "(2/2)", "no"]


def test_a_suspect_member_and_a_draining_one(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, healthy(
        members__n1=gossip(states={"n2": GossipState.SUSPECT}, draining=("n3",))))
    assert ov.problems == ("member n2: SUSPECT in gossip (as n1 sees it)",)  # draining is no problem
    assert [m.draining for m in ov.members] == [False, False, True]


def test_a_backend_down_and_the_table_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, healthy(backends__n1=table(states={"ward-2": "down", "ward-3": "draining"},
                                                        applied=41)))
    web = ov.services[0]
    assert (web.healthy, web.total, web.down, web.draining) == (1, 3, ("ward-2",), ("ward-3",))
    assert ov.problems == (
        "service web: backend ward-2 down",
        "balancing table generation 42 is committed but 41 is applied in n1's data plane (nftables)")
    screen = render_overview(ov)
    assert "services (table generation 42 committed, 41 applied on n1)" in screen
    row = next(line.split() for line in screen.splitlines() if line.startswith("  web "))
    assert row == ["web", "10.0.0.100:80,443/tcp", "1/3", "ward-2", "ward-3", "-"]


def test_no_backend_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, healthy(backends__n1=table(
        states={"ward-1": "down", "ward-2": "down", "ward-3": "disabled"})))
    assert ov.problems == ("service web: backends ward-1, ward-2 down",
                           "service web: no backend serving")


def test_members_failing_degrades_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = healthy(node="n2")
    del answers[("members", ADMIN["n2"])]
    ov, _ = run(monkeypatch, answers, node="n2")
    assert ov.members_alive is None and all(m.gossip is None for m in ov.members)
    assert [m.raft_link for m in ov.members] == ["self", "up", "up"]  # still known from the leader
    assert ov.missing == ("gossip members (Members on n2: cannot reach the hacluster agent at "
                          "10.0.0.2:7101: refused)",)
    assert ov.services is not None and ov.problems == () and ov.exit_code == 1
    screen = render_overview(ov)
    assert "3 members (gossip view unknown)" in screen.splitlines()[0]
    assert "not known\n  - gossip members (Members on n2:" in screen
    assert "n1          ?       leader" in screen


def test_backends_failing_degrades_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = healthy()
    del answers[("backends", ADMIN["n1"])]
    ov, _ = run(monkeypatch, answers)
    assert ov.services is None and ov.table is None
    assert ov.missing[0].startswith("services and backends (Backends on n1:")
    assert "services" not in render_overview(ov).split("not known")[0]
    assert ov.to_dict()["services"] is None


def test_the_events_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeAgents(healthy()).install(monkeypatch)
    evs = [OverviewEvent.from_dict({"seq": i, "at_unix_ms": 1.7e12 + i, "node": "n1", "kind": "vip",
                                    "text": f"claimed 10.0.0.100 #{i}", "fields": {}})
           for i in range(8)]
    ov = gather(ADMIN["n1"], None, 1.0, events=lambda t, k, to: evs)
    assert ov.to_dict()["events"][0] == {"at_unix_ms": 1.7e12, "node": "n1", "kind": "vip",
                                         "text": "claimed 10.0.0.100 #0"}
    screen = render_overview(ov)
    assert "last events" in screen and "#7" in screen and "#2" not in screen  # the last 5

    def broken(t: str, k: Any, to: float) -> list[OverviewEvent]:
        raise AgentUnreachable("no events here")
    ov = gather(ADMIN["n1"], None, 1.0, events=broken)
    assert ov.events is None and ov.missing == () and ov.healthy  # a convenience, not a problem


SYNC_OK = SyncStatus(SyncState.OK, "FTFW over unicast on eth0 (10.0.0.2, 10.0.0.3), port 3780",
                     0, 4.2)
SYNC_DOWN = SyncStatus(SyncState.DOWN, "conntrackd exited with status 1: cannot bind", 3)
SYNC_OFF = SyncStatus(SyncState.OFF, "conntrack_sync: off")


def _synced(answers: dict[tuple[str, str], Any], **syncs: SyncStatus) -> dict[tuple[str, str], Any]:
    """`answers` with the connection sync each named node reports (node=SyncStatus)."""
    for node, sync in syncs.items():
        key = ("status", ADMIN[node])
        answers[key] = dataclasses.replace(answers[key], connection_sync=sync)
    return answers


def test_each_agents_connection_sync_and_a_down_one_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    # asked at the follower n2: the leader n1 and n3 are asked for their own status too;
    # n3 is an agent older than the field and says nothing of it
    ov, _ = run(monkeypatch, _synced(healthy(node="n2"), n1=SYNC_OK, n2=SYNC_DOWN), node="n2")
    assert [(x.node, x.sync) for x in ov.syncs] == [("n1", SYNC_OK), ("n2", SYNC_DOWN)]
    assert ov.problems == ("connection sync DOWN on n2 (conntrackd exited with status 1: cannot "
                           "bind): established flows through the VIP will break when it moves to "
                           "or from n2",)
    assert ov.exit_code == 1
    screen = render_overview(ov).splitlines()
    at = screen.index("connection sync")
    assert screen[at + 1:at + 4] == [
        "  n1  ok    FTFW over unicast on eth0 (10.0.0.2, 10.0.0.3), port 3780; last claim's commit "
        "took 4.2…",
        "  n2  DOWN  conntrackd exited with status 1: cannot bind; restarted 3 times", ""]
    assert screen[-2:] == [
        "  - connection sync DOWN on n2 (conntrackd exited with status 1: cannot bind): established flows",
        "    through the VIP will break when it moves to or from n2"]
    assert json.loads(json.dumps(ov.to_dict()))["connection_sync"] == [
        {"node": "n1", "state": "ok", "detail": SYNC_OK.detail, "restarts": 0, "last_commit_ms": 4.2},
        {"node": "n2", "state": "down", "detail": SYNC_DOWN.detail, "restarts": 3,
         "last_commit_ms": None}]


def test_connection_sync_ok_or_off_is_no_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, _synced(healthy(), n1=SYNC_OK, n2=SYNC_OK, n3=SYNC_OFF))
    assert ov.healthy and [x.sync.state for x in ov.syncs] == [SyncState.OK, SyncState.OK, SyncState.OFF]
    assert "  n3  off  conntrack_sync: off" in render_overview(ov).splitlines()
    # off everywhere for the same reason: one line, not one per agent
    ov, _ = run(monkeypatch, _synced(healthy(), n1=SYNC_OFF, n2=SYNC_OFF, n3=SYNC_OFF))
    assert ov.healthy
    screen = render_overview(ov).splitlines()
    assert "connection sync: off on n1, n2, n3 (conntrack_sync: off)" in screen
    assert "connection sync" not in screen


def test_agents_older_than_connection_sync_show_nothing_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, healthy())
    assert ov.syncs == () and ov.healthy
    assert "connection sync" not in render_overview(ov)
    assert ov.to_dict()["connection_sync"] == []


def test_status_cluster_exits_1_when_a_connection_sync_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeAgents(_synced(healthy(), n1=SYNC_OK, n2=SYNC_OK, n3=SYNC_DOWN)).install(monkeypatch)
    result = _cli()  # plain `status` is the cluster view
    assert result.exit_code == 1, result.output
    assert "problems (1)" in result.stdout and "connection sync DOWN on n3" in result.stdout
    got = json.loads(_cli("--cluster", "--json").stdout)
    assert got["healthy"] is False
    assert [x["state"] for x in got["connection_sync"]] == ["ok", "ok", "down"]


def test_json_keys_are_stable(monkeypatch: pytest.MonkeyPatch) -> None:
    ov, _ = run(monkeypatch, healthy())
    d = json.loads(json.dumps(ov.to_dict()))
    assert list(d) == ["cluster", "asked", "asked_role", "leader", "term", "lease_ok",
                       "lease_remaining_ms", "quorum", "handoff", "sentence", "vips", "members",
                       "members_alive", "services", "table", "events", "connection_sync",
                       "problems", "missing", "healthy"]
    assert list(d["vips"][0]) == ["address", "interface", "holders", "known", "waiting"]
    assert list(d["members"][0]) == ["id", "is_self", "gossip", "raft_role", "raft_link",
                                     "checks_passing", "checks_total", "draining"]
    assert list(d["services"][0]) == ["name", "vip", "ports", "protocol", "healthy", "total",
                                      "down", "draining", "disabled", "fallback"]
    assert list(d["table"]) == ["node", "committed", "applied", "dataplane"]
    assert d["members"][1]["gossip"] == "alive" and d["asked_role"] == "leader"


def test_the_screen_fits_100_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    long = "n" * 60
    st = status("n1", sentence="x" * 300, connection_sync=SyncStatus(SyncState.DOWN, "y" * 300, 9, 1e9))
    st = dataclasses.replace(st, members=st.members + (MemberStatus(long, "a:1", False, False, None),))
    ov, _ = run(monkeypatch, healthy(status__n1=st, backends__n1=table(
        states={f"ward-{i}": "down" for i in (1, 2, 3)})))
    assert any(long in p for p in ov.problems)  # unknown to gossip, Raft link down
    assert max(len(line) for line in render_overview(ov).splitlines()) <= 100


# ------------------------------------------------------------------ the CLI, on fakes


def _cli(*args: str) -> Any:
    f = PKI.files("alice")
    return CliRunner().invoke(cli, ["status", *args, "--admin", ADMIN["n1"], "--ca", str(f.ca_file),
                                    "--cert", str(f.cert_file), "--key", str(f.key_file)])


def test_status_cluster_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeAgents(healthy()).install(monkeypatch)
    result = _cli("--cluster")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("cluster ward-a: leader n1 (term 7)")
    FakeAgents(healthy(status__n1=status("n1", held=(True, False)))).install(monkeypatch)
    result = _cli("--cluster", "--json")
    assert result.exit_code == 1, result.output
    got = json.loads(result.stdout)
    assert got["healthy"] is False and len(got["problems"]) == 1


def test_status_usage_errors() -> None:
    assert _cli("--cluster", "--agent").exit_code == 2
    result = _cli("--cluster", "--interval", "5")
    assert result.exit_code == 2 and "--interval goes with --watch" in result.stderr
    assert _cli("--watch", "--interval", "0.1").exit_code == 2


def test_watch_redraws_until_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAgents(healthy()).install(monkeypatch)
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(overview_screen.time, "sleep", sleep)
    result = _cli("--cluster", "--watch", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5]
    assert result.stdout.count("cluster ward-a: leader n1") == 2
    assert result.stdout.count("----") == 4  # not a TTY: a separator per draw, no ANSI
    assert "\x1b[" not in result.stdout
    assert fake.calls.count(("status", ADMIN["n1"])) == 2


def test_watch_shows_an_unreachable_agent_and_keeps_trying(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = healthy()
    fake = FakeAgents({}).install(monkeypatch)  # down at first
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        fake.answers = answers  # back after the first interval
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(overview_screen.time, "sleep", sleep)
    result = _cli("--cluster", "--watch")
    assert result.exit_code == 0, result.output
    first, second = result.stdout.split("----")[2], result.stdout.split("----")[4]
    assert "error: cannot reach the hacluster agent at 10.0.0.1:7101" in first
    assert "trying again every 2 s" in first
    assert second.lstrip().startswith("cluster ward-a: leader n1")
    assert sleeps == [2.0, 2.0]


def test_watch_json_prints_one_object_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeAgents(healthy()).install(monkeypatch)
    calls = iter([None, KeyboardInterrupt()])

    def sleep(s: float) -> None:
        if isinstance(got := next(calls), BaseException):
            raise got

    monkeypatch.setattr(overview_screen.time, "sleep", sleep)
    result = _cli("--cluster", "--watch", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(x)["healthy"] for x in lines)


def test_watch_of_the_single_agent_view(monkeypatch: pytest.MonkeyPatch) -> None:
    from hacluster_cli import main

    monkeypatch.setattr(main, "fetch_status", lambda t, k, to: status("n2"))
    calls = iter([None, KeyboardInterrupt()])

    def sleep(s: float) -> None:
        if isinstance(got := next(calls), BaseException):
            raise got

    monkeypatch.setattr(overview_screen.time, "sleep", sleep)
    result = _cli("--agent", "--watch")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("follower, term 7") == 2 and "cluster ward-a:" not in result.stdout


def test_watch_on_a_tty_clears_the_screen() -> None:
    out: list[str] = []
    calls = iter([None, KeyboardInterrupt()])

    def sleep(s: float) -> None:
        if isinstance(got := next(calls), BaseException):
            raise got

    assert overview_screen.watch(lambda: "screen", 1.0, out.append, tty=True, sleep=sleep) == 0
    assert len(out) == 2 and all(s.startswith(overview_screen.CLEAR_SCREEN) and s.endswith("\nscreen")
                                 for s in out)


# ------------------------------------------------------------------ the CLI, over real TLS


@pytest.fixture
def agents() -> Iterator[Callable[..., int]]:
    """start(node, status, members, backends) -> port: a real AdminService over mutual TLS
    with `node`'s certificate; None providers are not served (UNAVAILABLE)."""
    servers: list[grpc.Server] = []

    def start(node: str, st: Callable[[], AgentStatus], ms: MembersStatus | None = None,
              bs: BackendsStatus | None = None) -> int:
        service = AdminService(st, PKI.authority(),
                               members_provider=None if ms is None else (lambda: ms),
                               backends_provider=None if bs is None else (lambda _svc: bs))
        server, port = start_admin("127.0.0.1:0", service, PKI.server(node))
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.stop(None)


def test_status_cluster_through_real_agents(agents: Callable[..., int]) -> None:
    """Asked at a follower (n2) that serves no Members: it finds the leader n1 by the admin
    address in its status and asks it for the VIP holders; the missing gossip view is said."""
    leader_port = agents("n1", lambda: status("n1"))
    addr = {"n1": f"127.0.0.1:{leader_port}", "n2": "", "n3": ""}
    follower_st = status("n2", members=tuple(dataclasses.replace(m, admin_address=addr[m.id])
                                             for m in status("n2").members))
    port = agents("n2", lambda: follower_st, None, table("n2"))
    f = PKI.files("rita")  # a reader may look
    args = ["status", "--cluster", "--admin", f"127.0.0.1:{port}", "--ca", str(f.ca_file),
            "--cert", str(f.cert_file), "--key", str(f.key_file), "--timeout", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output  # gossip view missing: not called healthy
    out = result.stdout
    assert out.startswith("cluster ward-a: leader n1 (term 7), quorum ok, 3 members (gossip view "
                          "unknown)")
    assert "asked n2 (follower) and the leader n1" in out
    assert "10.0.0.100/24  eth0  held by n1" in out
    assert "this agent does not serve membership" in " ".join(out.split())
    assert "no problems seen (but see: not known)" in out
    got = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert got["vips"][1] == {"address": "10.0.0.101/24", "interface": "eth0", "holders": ["n1"],
                              "known": True, "waiting": ""}
    assert got["services"][0]["healthy"] == 3 and got["members_alive"] is None
    # without --cluster: the same cluster view (the default); --agent: the single-agent dict
    plain = [a for a in args if a != "--cluster"]
    assert json.loads(CliRunner().invoke(cli, [*plain, "--json"]).stdout) == got
    agent = json.loads(CliRunner().invoke(cli, [*plain, "--agent", "--json"]).stdout)
    assert agent["node"] == "n2" and agent["role"] == "follower" and "handoff" in agent


def test_a_second_holder_only_that_member_reports_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    # n3 failed to let go of 10.0.0.100 (or froze holding it): only n3 itself can say so
    ov, _ = run(monkeypatch, healthy(status__n3=status("n3", held=(True, False))))
    assert any("10.0.0.100/24 is held by n1 and n3 at once" in p for p in ov.problems), ov.problems
    assert ov.exit_code == 1


def test_a_member_whose_raft_disk_is_full_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = ("Raft data disk full (/var/lib/hacluster): 512 KiB free, the journal needs 1024 KiB; "
                "entries go into the space reserved ahead; this node steps down and stands for "
                "election last until space is freed")
    answers = healthy(node="n2")
    key = ("status", ADMIN["n3"])
    answers[key] = dataclasses.replace(answers[key], raft_disk_problem=problem)
    ov, _ = run(monkeypatch, answers, node="n2")
    assert ov.problems == (f"n3: {problem}",) and ov.exit_code == 1
