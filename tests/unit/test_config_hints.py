"""A typo in a key gets the nearest key allowed at that level ("did you mean `node_id`?"),
at the top and in every nested block and list, through parse_config's error list."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster.config import ConfigError, parse_config
from hacluster.config_hints import did_you_mean

from .test_config import MEMBERS, doc


def _errors(d: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(d)
    return e.value.errors


def _only_error(d: dict) -> str:
    errs = _errors(d)
    assert len(errs) == 1, errs
    return errs[0]


TCP = {"name": "pacs", "kind": "tcp", "host": "127.0.0.1", "port": 104}
SERVICE = {"name": "pacs", "vip": "10.0.0.100", "ports": [104], "backends": [{"node": "n1"}]}


@pytest.mark.parametrize(("change", "path", "near"), [
    (lambda d: d.update(clustre=d.pop("cluster")), "clustre", "cluster"),
    (lambda d: d.update(log_levle="debug"), "log_levle", "log_level"),
    (lambda d: d.update({"Node-ID": "n1"}), "Node-ID", "node_id"),  # another spelling of it
    (lambda d: d.update(heartbeat_ms=40), "heartbeat_ms", "timing.heartbeat_ms"),  # a level too high
    (lambda d: d.update(members=[{**MEMBERS[0], "votr": False}, *MEMBERS[1:]]), "members[0].votr", "voter"),
    (lambda d: d.update(members=[*MEMBERS[:2], {**MEMBERS[2], "grpcport": 7101}]),
     "members[2].grpcport", "grpc_port"),
    (lambda d: d.update(timing={"lease": 150}), "timing.lease", "lease_ms"),
    (lambda d: d.update(gossip={"probe_intervall_ms": 400}), "gossip.probe_intervall_ms",
     "probe_interval_ms"),
    (lambda d: d.update(health={"settle": 100}), "health.settle", "settle_ms"),
    (lambda d: d.update(metrics={"listn": "127.0.0.1:9100"}), "metrics.listn", "listen"),
    (lambda d: d.update(tls={**d["tls"], "ca": "pki/ca.crt"}), "tls.ca", "ca_file"),
    (lambda d: d.update(conntrack_sync={"mode": "off", "multicast": "x"}), "conntrack_sync.multicast",
     "multicast_group"),
    (lambda d: d.update(checks=[TCP, {**TCP, "name": "b", "hots": "x"}]), "checks[1].hots", "host"),
    # the check's model is the one of its `kind`: `user` is an exec check's key
    (lambda d: d.update(checks=[{"name": "e", "kind": "exec", "command": ["/bin/true"], "usr": "nobody"}]),
     "checks[0].usr", "user"),
    (lambda d: d.update(services=[{**SERVICE, "algoritm": "maglev"}]), "services[0].algoritm", "algorithm"),
    (lambda d: d.update(services=[{**SERVICE, "prot": 104, "ports": [104]}]), "services[0].prot", "port"),
    (lambda d: d.update(services=[{**SERVICE, "backends": [{"node": "n1", "wieght": 2}]}]),
     "services[0].backends[0].wieght", "weight"),
    (lambda d: d.update(services=[{**SERVICE, "fallback": {"adress": "10.0.0.50"}}]),
     "services[0].fallback.adress", "address"),
])
def test_a_typo_gets_the_nearest_key_at_its_level(change, path: str, near: str) -> None:
    d = doc()
    change(d)
    msg = next(e for e in _errors(d) if e.startswith(f"{path}:"))
    assert msg.endswith(f"extra inputs are not permitted, got {d_value(d, path)}; did you mean `{near}`?")


def d_value(d: dict, path: str) -> str:
    """repr() of the value at a dotted path such as services[0].backends[0].wieght."""
    value: object = d
    for part in path.replace("[", ".[").split("."):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]  # type: ignore[index]
    return repr(value)


def test_nothing_near_gets_no_guess() -> None:
    assert _only_error(doc(colour="blue")) == "colour: extra inputs are not permitted, got 'blue'"
    assert _only_error(doc(timing={"zzz": 1})) == "timing.zzz: extra inputs are not permitted, got 1"


def test_a_path_off_the_schema_gets_no_hint() -> None:
    assert did_you_mean({}, ()) == ""
    assert did_you_mean({}, ("members", "x", "id")) == ""  # a list indexed by a name
    assert did_you_mean({}, ("cluster", "nme")) == ""  # a string has no keys
    assert did_you_mean({"checks": [{"kind": "nope"}]}, ("checks", 0, "hots")) == ""  # no model to ask
    assert did_you_mean({}, ("members", 0, 3)) == ""  # not a key name


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                               max_size=3), max_leaves=12),
       st.lists(st.integers(-3, 3) | st.sampled_from(["members", "checks", "services", "backends", "kind",
                                                     "timing", "tls", "fallback", "x"]), max_size=5),
       st.text(max_size=12))
def test_never_raises(doc_: object, path: list, key: str) -> None:
    assert isinstance(did_you_mean(doc_, (*path, key)), str)
