import json

import pytest

from hacluster.consensus.state import CommandError, ReplicatedState, decode, encode


def test_leader_epochs_only_go_forward():
    s = ReplicatedState()
    assert s.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1"})).ok
    assert (s.epoch_term, s.epoch_node, s.generation) == (3, "n1", 1)
    old = s.apply(encode({"type": "leader_epoch", "term": 2, "node": "n2"}))
    assert not old.ok and "older" in old.detail
    assert (s.epoch_term, s.epoch_node, s.generation) == (3, "n1", 1)


def test_epoch_retry_is_idempotent_and_a_term_has_one_owner():
    s = ReplicatedState()
    cmd = encode({"type": "leader_epoch", "term": 5, "node": "n1"})
    assert s.apply(cmd).ok and s.apply(cmd).ok
    assert s.epochs == 1 and s.generation == 1
    other = s.apply(encode({"type": "leader_epoch", "term": 5, "node": "n2"}))
    assert not other.ok and "already belongs" in other.detail


def test_set_flag_is_compare_and_set_on_generation():
    s = ReplicatedState()
    assert s.apply(encode({"type": "set_flag", "name": "maintenance", "value": "on",
                           "expect_generation": 0})).ok
    stale = s.apply(encode({"type": "set_flag", "name": "maintenance", "value": "off",
                            "expect_generation": 0}))
    assert not stale.ok and "stale generation" in stale.detail
    assert s.flags == {"maintenance": "on"} and s.generation == 1
    assert s.apply(encode({"type": "set_flag", "name": "maintenance", "value": None,
                           "expect_generation": 1})).ok
    assert s.flags == {}


@pytest.mark.parametrize("payload, needle", [
    (b"not json", "not JSON"),
    (b"[1,2]", "object with a string 'type'"),
    (json.dumps({"v": 99, "type": "leader_epoch"}).encode(), "unsupported command version 99"),
    (encode({"type": "no_such"}), "unknown command type"),
    (encode({"type": "leader_epoch", "term": -1, "node": "n1"}), "non-negative integer"),
    (encode({"type": "leader_epoch", "term": True, "node": "n1"}), "non-negative integer"),
    (encode({"type": "leader_epoch", "term": 1, "node": ""}), "non-empty string"),
    (b"x" * 70000, "exceeds"),
])
def test_bad_commands_are_refused_and_change_nothing(payload, needle):
    s = ReplicatedState()
    before = s.snapshot()
    r = s.apply(payload)
    assert not r.ok and needle in r.detail
    after = s.snapshot()
    assert after.pop("refused") == 1
    before.pop("refused")
    assert after == before


def test_unknown_ignorable_command_is_accepted_without_change():
    s = ReplicatedState()
    r = s.apply(encode({"type": "future_thing", "ignorable": True}))
    assert r.ok and s.generation == 0 and s.refused == 0


def test_encoding_is_deterministic_and_versioned():
    a = encode({"type": "x", "b": 1, "a": 2})
    assert a == b'{"a":2,"b":1,"type":"x","v":1}'
    assert decode(a)["type"] == "x"
    with pytest.raises(CommandError):
        decode("str")  # type: ignore[arg-type]


def _health(term, **changes):
    return encode({"type": "health", "term": term, "changes": changes})


def test_health_commits_only_real_changes():
    s = ReplicatedState()
    s.apply(encode({"type": "leader_epoch", "term": 3, "node": "n1"}))
    gen = s.generation
    r = s.apply(encode({"type": "health", "term": 3, "changes": {"n2/web": False, "n1/web": True}}))
    assert r.ok and s.health == {"n2/web": False, "n1/web": True} and s.generation == gen + 1
    again = s.apply(encode({"type": "health", "term": 3, "changes": {"n2/web": False}}))
    assert again.ok and again.detail == "health unchanged" and s.generation == gen + 1


def test_health_from_a_deposed_leader_is_refused():
    s = ReplicatedState()
    s.apply(encode({"type": "leader_epoch", "term": 5, "node": "n2"}))
    before = s.snapshot()
    r = s.apply(encode({"type": "health", "term": 4, "changes": {"n1/web": True}}))
    assert not r.ok and "term 5 is current" in r.detail
    assert {k: v for k, v in s.snapshot().items() if k != "refused"} == \
        {k: v for k, v in before.items() if k != "refused"}


@pytest.mark.parametrize("changes, words", [
    ({}, "non-empty"),
    ({"nocheck": True}, "'node/check'"),
    ({"n1/web": "yes"}, "true, false or null"),
    ({"n1/": True}, "'node/check'"),
])
def test_bad_health_commands_change_nothing(changes, words):
    s = ReplicatedState()
    r = s.apply(encode({"type": "health", "term": 0, "changes": changes}))  # epoch 0
    assert not r.ok and words in r.detail and s.health == {} and s.generation == 0


def test_old_dump_without_health_loads_with_defaults():
    import pickle
    s = ReplicatedState()
    state = dict(s.__dict__)
    del state["health"]  # what a dump of the previous version holds
    old = ReplicatedState.__new__(ReplicatedState)
    old.__setstate__(state)
    assert old.health == {} and pickle.loads(pickle.dumps(old)).health == {}


def test_health_from_a_leader_whose_epoch_is_not_recorded_yet_is_refused():
    # pysyncobj forwards a deposed leader's queued command to the new leader; it may land
    # before the new leader's epoch: still refused, the term is not the current epoch.
    s = ReplicatedState()
    s.apply(encode({"type": "leader_epoch", "term": 5, "node": "n2"}))
    r = s.apply(encode({"type": "health", "term": 6, "changes": {"n1/web": True}}))
    assert not r.ok and s.health == {}


def test_health_null_forgets_a_key():
    s = ReplicatedState()
    s.apply(encode({"type": "leader_epoch", "term": 1, "node": "n1"}))
    s.apply(encode({"type": "health", "term": 1, "changes": {"n1/web": True, "n1/old": False}}))
    gen = s.generation
    r = s.apply(encode({"type": "health", "term": 1, "changes": {"n1/old": None, "n9/x": None}}))
    assert r.ok and s.health == {"n1/web": True} and s.generation == gen + 1
    assert "n1/old=forgotten" in r.detail
    assert s.apply(encode({"type": "health", "term": 1, "changes": {"n1/old": None}})).detail == \
        "health unchanged"


def _table(term, expect, gen=None, services=()):
    return encode({"type": "table", "term": term, "expect_generation": expect,
                   "table": {"generation": expect + 1 if gen is None else gen,
                             "services": list(services)}})


def test_table_is_compare_and_set_and_a_retry_is_a_no_op():
    s = ReplicatedState()
    s.apply(encode({"type": "leader_epoch", "term": 2, "node": "n1"}))
    r = s.apply(_table(2, 0, services=[{"name": "web"}]))
    assert r.ok and s.table_generation == 1 and s.table["services"] == [{"name": "web"}]
    gen = s.generation
    again = s.apply(_table(2, 0, services=[{"name": "web"}]))  # the same command, retried
    assert again.ok and again.detail == "table already committed" and s.generation == gen
    stale = s.apply(_table(2, 0, services=[{"name": "other"}]))  # built on generation 0
    assert not stale.ok and "stale table generation 0" in stale.detail
    assert s.table["services"] == [{"name": "web"}]


@pytest.mark.parametrize("cmd, words", [
    (_table(1, 0), "term 2 is current"),
    (_table(2, 0, gen=5), "expect_generation + 1"),
    (encode({"type": "table", "term": 2, "expect_generation": 0, "table": []}), "'services' list"),
])
def test_bad_tables_change_nothing(cmd, words):
    s = ReplicatedState()
    s.apply(encode({"type": "leader_epoch", "term": 2, "node": "n1"}))
    r = s.apply(cmd)
    assert not r.ok and words in r.detail and s.table is None and s.table_generation == 0
