"""Suspect by election in the replicated state machine (consensus/state.py): a leader that
won because its predecessor went silent takes that predecessor out of service in its epoch
entry, health and table alike; a later health command clears the suspicion."""

from __future__ import annotations

import pytest

from hacluster.consensus.state import ReplicatedState, encode, suspects_down


def backend(bid, state="active"):
    return {"id": bid, "address": "10.0.0.1", "port": 80, "weight": 1, "state": state}


def table(gen, *backends, name="web"):
    return {"generation": gen, "services": [{"name": name, "backends": list(backends),
                                             "fallback": None}]}


def epoch(term, node, **kw):
    return encode({"type": "leader_epoch", "term": term, "node": node, **kw})


def cluster() -> ReplicatedState:
    """n1 led term 2, committed n1..n3 up and a table of the three."""
    s = ReplicatedState()
    assert s.apply(epoch(2, "n1")).ok
    assert s.apply(encode({"type": "health", "term": 2, "changes": {
        "n1/web": True, "n1/dicom": True, "n2/web": True, "n3/web": False}})).ok
    t = table(1, backend("n1"), backend("n2"), backend("n3", "down"), backend("10.0.0.9:80"))
    assert s.apply(encode({"type": "table", "term": 2, "expect_generation": 0, "table": t})).ok
    return s


def states(s: ReplicatedState) -> dict[str, str]:
    return {b["id"]: b["state"] for b in s.table["services"][0]["backends"]}


def test_an_epoch_won_by_election_takes_the_previous_holder_out_in_the_same_entry():
    s = cluster()
    gen = s.generation
    r = s.apply(epoch(3, "n2", by_election=True))
    assert r.ok and s.generation == gen + 1  # one entry, one step
    assert s.suspects == {"n1": 3}
    assert s.health == {"n1/web": False, "n1/dicom": False, "n2/web": True, "n3/web": False}
    assert s.table_generation == 2 and s.table["generation"] == 2
    assert states(s) == {"n1": "down", "n2": "active", "n3": "down", "10.0.0.9:80": "active"}
    assert r.detail == ("epoch 3 for n2; n1 suspect by election: n1/dicom=down, n1/web=down; "
                        "table generation 2")


def test_a_transfer_suspects_nobody():
    s = cluster()
    before = (dict(s.health), s.table_generation)
    assert s.apply(epoch(3, "n2", by_election=False)).ok
    assert s.apply(epoch(4, "n3")).ok  # an older leader's command: no flag at all
    assert s.suspects == {} and (s.health, s.table_generation) == before


@pytest.mark.parametrize("first_owner", ["", "n2"])
def test_no_suspect_without_a_previous_owner_or_when_re_elected(first_owner):
    s = ReplicatedState()
    if first_owner:
        s.apply(epoch(1, first_owner))
    assert s.apply(epoch(2, "n2", by_election=True)).ok
    assert s.suspects == {}


def test_the_retry_of_the_same_epoch_changes_nothing_more():
    s = cluster()
    cmd = epoch(3, "n2", by_election=True)
    s.apply(cmd)
    snap = s.snapshot()
    assert s.apply(cmd).detail == "epoch already recorded" and s.snapshot() == snap


def test_in_maintenance_the_table_stays_frozen_but_health_goes_down():
    s = cluster()
    assert s.apply(encode({"type": "set_flag", "name": "maintenance", "value": "true",
                           "expect_generation": s.generation})).ok
    s.apply(epoch(3, "n2", by_election=True))
    assert s.health["n1/web"] is False and s.suspects == {"n1": 3}
    assert s.table_generation == 1 and states(s)["n1"] == "active"


def test_a_new_leader_that_was_suspected_is_no_longer_one():
    s = cluster()
    s.apply(epoch(3, "n2", by_election=True))
    s.apply(epoch(4, "n1", by_election=True))  # n1 is back and wins: n2 is suspected now
    assert s.suspects == {"n2": 4}


def test_health_lists_rejoined_members_and_clears_their_suspicion():
    s = cluster()
    s.apply(epoch(3, "n2", by_election=True))
    gen = s.generation
    r = s.apply(encode({"type": "health", "term": 3, "changes": {}, "rejoined": ["n1", "n9"]}))
    assert r.ok and s.suspects == {} and s.generation == gen + 1
    assert r.detail == "health n1 rejoined (no longer suspect by election)"
    assert s.health["n1/web"] is False  # the verdicts put it back, by their own rules
    again = s.apply(encode({"type": "health", "term": 3, "changes": {}, "rejoined": ["n1"]}))
    assert again.ok and again.detail == "health unchanged" and s.generation == gen + 1


@pytest.mark.parametrize("cmd, words", [
    ({"type": "leader_epoch", "term": 3, "node": "n2", "by_election": "yes"}, "by_election"),
    ({"type": "health", "term": 3, "changes": {}, "rejoined": "n1"}, "rejoined"),
    ({"type": "health", "term": 3, "changes": {}, "rejoined": [""]}, "rejoined"),
    ({"type": "health", "term": 3, "changes": {}, "rejoined": ["n"] * 65}, "rejoined"),
    ({"type": "health", "term": 3, "changes": {}}, "non-empty unless"),
])
def test_bad_suspect_fields_are_refused_and_change_nothing(cmd, words):
    s = cluster()
    if cmd["type"] == "health":
        s.apply(epoch(3, "n2", by_election=True))
    snap = s.snapshot()
    r = s.apply(encode(cmd))
    assert not r.ok and words in r.detail
    assert {k: v for k, v in s.snapshot().items() if k != "refused"} == \
        {k: v for k, v in snap.items() if k != "refused"}


def test_suspects_down_touches_only_active_backends_of_suspects():
    t = table(4, backend("n1"), backend("n1", "draining"), backend("n2"), backend("n1:80"))
    out = suspects_down(t, {"n1": 3})
    assert [b["state"] for b in out["services"][0]["backends"]] == \
        ["down", "draining", "active", "active"]
    assert t["services"][0]["backends"][0]["state"] == "active"  # a copy, never in place
    assert suspects_down(t, {}) is t


def test_an_old_dump_without_suspects_loads_with_none():
    s = ReplicatedState()
    old = dict(s.__dict__)
    del old["suspects"]
    fresh = ReplicatedState.__new__(ReplicatedState)
    fresh.__setstate__(old)
    assert fresh.suspects == {}
