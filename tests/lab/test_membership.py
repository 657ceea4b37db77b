"""Membership changes in a running lab (issue 16): add, remove, non-voters, through the real
`hacluster members` commands, with a client going through the VIP all along."""

from __future__ import annotations

import json
import time

from hacluster.lab.grow import add_server, remove_server
from hacluster.lab.monitor import HolderMonitor
from hacluster.lab.traffic import Prober
from tests.lab.conftest import agent_status, assert_no_overlap, cli_json
from tests.support.wait import wait_until


def committed_members(lab, name: str) -> dict[str, bool]:
    """id -> voter, as server `name` saved the committed membership (roster.py)."""
    doc = json.loads((lab.node(name).data_dir / "members.json").read_text())
    return {k: v["voter"] for k, v in doc["members"].items()}


def table_backends(lab, name: str, service: str = "web") -> set[str]:
    view = cli_json(lab, name, "backends", service)
    assert view is not None
    return {b["id"] for s in view["services"] if s["name"] == service for b in s["backends"]}


def table_weight(lab, name: str, backend: str, service: str = "web") -> int | None:
    view = cli_json(lab, name, "backends", service) or {"services": []}
    return next((b["weight"] for s in view["services"] if s["name"] == service
                 for b in s["backends"] if b["id"] == backend), None)


def failures(failed: list[dict], most: int = 8) -> str:
    """When (UTC, as in the agents' logs), how and how long: what the agents' logs are read by."""
    said = [f"{time.strftime('%H:%M:%S', time.gmtime(a['t']))}.{int(a['t'] % 1 * 1000):03d} "
            f"{a.get('error', '?')} ({a['ms']:.0f} ms)" for a in failed[:most]]
    return "; ".join(said) + (" ..." if len(failed) > most else "")


def test_add_twice_then_remove_the_holder_without_a_failed_request(lab):
    monitor = HolderMonitor.for_lab(lab)
    # A client that waits 3 s, as HL7 senders and browsers do (and more): a SYN that meets
    # the VIP in motion (the handover's ~40 ms, or a lease that lapses for ~90 ms on this
    # crowded 2-CPU lab when five agents apply a membership change at once) is sent again
    # by the client's TCP after 1 s and answered; with a 1 s timeout it counted as failed.
    prober = Prober(lab, duration=240, interval=0.02, timeout=3.0)
    try:
        n4 = add_server(lab)
        monitor.watch(n4.name, n4.netns)
        n5 = add_server(lab)
        monitor.watch(n5.name, n5.netns)
        everyone = {n.name for n in lab.nodes}
        assert everyone == {"n1", "n2", "n3", "n4", "n5"}
        wait_until(lambda: all(set(committed_members(lab, n)) == everyone for n in everyone), 10,
                   "every server follows the 5-member membership")
        # Raft counts the new voters: the leader's status lists five voters, all linked
        holder = lab.wait_single_holder(10)
        # the table follows: every agent reloaded its file, which now has their backends
        wait_until(lambda: {"n4", "n5"} <= table_backends(lab, holder), 15,
                   "the new servers' backends join the table")
        st = agent_status(lab, holder)
        assert st is not None and {m["id"] for m in st["members"] if not m.get("non_voter")} == everyone

        remove_server(lab, holder)
        rest = everyone - {holder}
        new_holder = lab.wait_single_holder(10)
        assert new_holder in rest
        wait_until(lambda: all(set(committed_members(lab, n)) == rest for n in rest), 10,
                   "every server follows the membership without the old holder")
        # the table follows: the removed server's backend is no longer in it
        wait_until(lambda: holder not in table_backends(lab, new_holder), 10,
                   f"{holder}'s backend leaves the table")
        # a reload that changes a weight: applied by every agent, the table follows
        heavy = sorted(rest)[0]

        def weigh(doc: dict) -> None:
            for svc in doc["services"]:
                if svc["name"] == "web":
                    svc["backends"] = [{**b, "weight": 3} if b.get("node") == heavy else b
                                       for b in svc["backends"]]
        for n in lab.nodes:
            lab.edit_config(n, weigh)
            lab.reload(n)
        wait_until(lambda: table_weight(lab, new_holder, heavy) == 3, 15, f"{heavy}'s weight 3 in the table")
    finally:
        prober.proc.terminate()
        out, _ = prober.proc.communicate(timeout=30)
        monitor.stop()
    attempts = [json.loads(line) for line in out.splitlines() if line.strip()]
    failed = [a for a in attempts if not a["ok"]]
    assert len(attempts) > 100
    assert not failed, f"{len(failed)} of {len(attempts)} requests failed: {failures(failed)}"
    assert_no_overlap(monitor)


def test_nine_servers_three_voters_elect_fail_over_and_commit(lab_factory):
    lab = lab_factory(9, voters=3, checks=[], balance=False)
    voters = {"n1", "n2", "n3"}
    monitor = HolderMonitor.for_lab(lab)
    try:
        holder = lab.wait_single_holder(10)
        assert holder in voters
        st = agent_status(lab, "n7")  # a non-voter follows the leader
        assert st is not None and st["leader"] == holder
        kinds = {m["id"]: m.get("non_voter", False) for m in st["members"]}
        assert {k for k, nv in kinds.items() if not nv} == voters and len(kinds) == 9
        # a commit asked on a non-voter reaches the others (the replicated state)
        before = generation(lab, "n5")
        assert cli_json(lab, "n9", "drain", "n8") is not None
        wait_until(lambda: generation(lab, "n5") > before, 10, "the drain is seen by a non-voter")
        # the holder dies: another voter takes over, never a non-voter
        lab.power_off(lab.node(holder))
        new_holder = lab.wait_single_holder(15, exclude=(holder,))
        assert new_holder in voters - {holder}
        wait_until(lambda: (agent_status(lab, "n8") or {}).get("leader") == new_holder, 10,
                   "the non-voters follow the new leader")
    finally:
        monitor.stop()
    assert_no_overlap(monitor)
    assert monitor.holders_ever() <= voters


def generation(lab, name: str) -> int:
    return (cli_json(lab, name, "status", "--agent") or {}).get("generation", -1)


def test_promote_and_demote_restart_the_member_in_its_new_role(lab_factory):
    lab = lab_factory(4, voters=3, checks=[], balance=False)
    monitor = HolderMonitor.for_lab(lab)
    try:
        holder = lab.wait_single_holder(10)
        asked = next(n for n in ("n1", "n2", "n3") if n != holder)
        # even without --allow-even: refused, nothing changed
        assert cli_json(lab, asked, "members", "promote", "n4") is None
        assert committed_members(lab, "n4")["n4"] is False
        assert cli_json(lab, asked, "members", "promote", "n4", "--allow-even") is not None
        wait_until(lambda: committed_members(lab, "n1")["n4"] is True, 10, "n4 is a voter")
        wait_until(lambda: _self_voter(lab, "n4") is True, 20, "n4's agent runs as a voter")
        assert cli_json(lab, asked, "members", "demote", "n4") is not None
        wait_until(lambda: _self_voter(lab, "n4") is False, 20, "n4's agent runs as a non-voter again")
        assert lab.holders() == [holder]
    finally:
        monitor.stop()
    assert_no_overlap(monitor)


def _self_voter(lab, name: str) -> bool | None:
    st = cli_json(lab, name, "status", "--agent")
    if not st or not st.get("leader") or not st.get("commit_index"):
        return None
    me = next((m for m in st["members"] if m["id"] == name), None)
    return None if me is None else not me.get("non_voter", False)
