"""Suspect by election in a real lab: the dead holder's backends leave the table with the new
leader's epoch, before the VIP is claimed; a graceful move suspects nobody.

Assertions are on committed state and on the order of the new holder's own events (its
loop records what it observes, then what it does, tick by tick), never on how long
anything took.
"""

from __future__ import annotations

import subprocess

from hacluster.lab.lab import cli_argv
from tests.support.wait import wait_until

from .conftest import all_healthy, cli_json, committed, events, service


def table_settled(lab, name: str) -> dict | None:
    """Server `name`'s backends view once it applied the committed generation."""
    v = cli_json(lab, name, "backends")
    return v if v is not None and v["applied_generation"] == v["table_generation"] else None


def states(view: dict, backend: str) -> set[str]:
    """The state of `backend` in every service of a backends view."""
    return {b["state"] for s in ("web", "echo") for b in service(view, s)["backends"]
            if b["id"] == backend}


def test_a_powered_off_holder_leaves_the_table_in_the_new_leaders_epoch(lab):
    wait_until(lambda: all_healthy(lab), 30, "a healthy cluster")
    old = lab.holders()[0]
    before = wait_until(lambda: table_settled(lab, old), 30, "the holder's table applied")
    assert states(before, old) == {"active"}
    lab.power_off(lab.node(old))
    new = wait_until(lambda: (h := lab.holders()) and h[0] != old and h[0], 30, "a new holder")
    # the committed table: the old holder's backends DOWN in every service, one generation on
    view = wait_until(lambda: table_settled(lab, new), 30, "the new holder's table applied")
    assert states(view, old) == {"down"}, view
    assert view["table_generation"] == before["table_generation"] + 1, (before, view)
    checks = cli_json(lab, new, "checks")
    assert committed(checks, old) is False
    # ... and it was committed before the claim: the new holder saw the suspicion, the
    # verdict and the table generation in the tick that claimed the VIP, not afterwards
    # (the latest of each: this server may have held the VIP before)
    evs = events(lab, new)
    term = next(int(e["fields"]["term"]) for e in reversed(evs)
                if e["kind"] == "leader" and e["text"].startswith(f"{new} leads"))
    seq = {what: max(e["seq"] for e in evs if test(e)) for what, test in {
        "suspect": lambda e: e["kind"] == "health"
        and e["text"].startswith(f"{old} suspect by election (term {term})"),
        "down": lambda e: e["kind"] == "health" and e["text"] == f"{old}/web committed DOWN",
        "table": lambda e: e["kind"] == "table"
        and e["fields"]["generation"] == str(view["table_generation"]),
        "claim": lambda e: e["kind"] == "vip" and e["fields"].get("vip") == lab.vip
        and e["text"].startswith("claimed")}.items()}
    assert seq["suspect"] < seq["claim"] and seq["down"] < seq["claim"] \
        and seq["table"] < seq["claim"], (seq, evs)

    # back on: once gossip has seen it alive for rejoin_ms it is no suspect, and up again
    lab.power_on(lab.node(old))
    wait_until(lambda: all_healthy(lab), 60, f"{old} committed up again")
    wait_until(lambda: (v := table_settled(lab, new)) is not None and states(v, old) == {"active"},
               30, f"{old}'s backends active again")
    assert any(e["kind"] == "health" and e["text"] == f"{old} is back: no longer suspect by election"
               for e in events(lab, new))


def test_a_graceful_failover_suspects_nobody(lab):
    wait_until(lambda: all_healthy(lab), 30, "a healthy cluster")
    old = lab.holders()[0]
    before = wait_until(lambda: table_settled(lab, old), 30, "the holder's table applied")
    target = next(n.name for n in lab.nodes if n.name != old)
    node = lab.node(old)
    r = subprocess.run(cli_argv(node.netns, "failover", "--to", target, "--config", str(node.config)),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert lab.holders() == [target]
    view = wait_until(lambda: table_settled(lab, target), 30, "the new holder's table")
    assert states(view, old) == {"active"} and view["table_generation"] == before["table_generation"]
    assert not any("suspect by election" in e["text"] for e in events(lab, target))
    assert committed(cli_json(lab, target, "checks"), old) is True
