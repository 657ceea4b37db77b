import os
import textwrap

import pytest

from hacluster.config import ConfigError, load_config, parse_config, read_secret

MEMBERS = [
    {"id": "n1", "address": "10.0.0.11", "raft_port": 7100, "grpc_port": 7101},
    {"id": "n2", "address": "10.0.0.12", "raft_port": 7100, "grpc_port": 7101},
    {"id": "n3", "address": "10.0.0.13", "raft_port": 7100, "grpc_port": 7101},
]


def doc(**over):
    d = {"cluster": "ward-a", "node_id": "n1", "members": MEMBERS,
         "vips": [{"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}],
         "data_dir": "data", "secret_file": "secret"}
    d.update(over)
    return d


def errors_of(d):
    with pytest.raises(ConfigError) as e:
        parse_config(d)
    return e.value.errors


def test_good_config_has_defaults_in_seconds(tmp_path):
    c = parse_config(doc(), base=tmp_path)
    assert c.me.id == "n1" and [p.id for p in c.peers] == ["n2", "n3"]
    assert c.timing.lease == 0.2 and c.timing.election_min == 0.25 and c.timing.tick == 0.01
    assert c.data_dir == tmp_path / "data"
    assert c.vips[0].address == "10.0.0.100" and c.warnings == ()


def test_every_schema_error_is_reported_with_its_path():
    bad = doc(members=[{**MEMBERS[0], "raft_port": 0}, {**MEMBERS[1], "grpc_port": "x"}],
              vips=[{"address": "10.0.0.100", "prefix": 24}], extra=1)
    errs = errors_of(bad)
    joined = "\n".join(errs)
    assert "members[0].raft_port:" in joined
    assert "members[1].grpc_port:" in joined
    assert "vips[0].interface: field required" in joined
    assert "extra: extra inputs are not permitted" in joined
    assert len(errs) == 4


def test_cross_field_errors_are_all_reported():
    bad = doc(node_id="n9",
              members=[MEMBERS[0], {**MEMBERS[0]}, {**MEMBERS[2], "address": "not-an-ip"}],
              vips=[{"address": "10.0.0.11", "prefix": 24, "interface": "eth0"},
                    {"address": "fd00::1", "prefix": 64, "interface": "eth0"}])
    errs = "\n".join(errors_of(bad))
    assert "members[1].id: duplicate member id 'n1'" in errs
    assert "members[2].address: must be an IP address" in errs
    assert "node_id: 'n9' is not one of the members" in errs
    assert "vips[0].address: 10.0.0.11 is a member's own address" in errs
    assert "vips[1].address: IPv6 VIPs are not supported yet" in errs


@pytest.mark.parametrize("timing, needle", [
    ({"lease_ms": 250}, "lease_ms (250) must be less than election_timeout_min_ms (250)"),
    ({"leader_fallback_ms": 300, "lease_ms": 200}, "leader_fallback_ms (300) must be <= lease_ms"),
    ({"election_timeout_max_ms": 200}, "election_timeout_max_ms (200) must be greater"),
    ({"heartbeat_ms": 100}, "must exceed 3 x heartbeat_ms"),
    ({"tick_ms": 80}, "tick_ms (80) must be at most lease_ms / 4"),
])
def test_timing_invariants(timing, needle):
    errs = errors_of(doc(timing=timing))
    assert any(needle in e for e in errs), errs


def test_even_member_count_warns():
    c = parse_config(doc(members=MEMBERS[:2]))
    assert any("2 voters" in w for w in c.warnings)


def test_load_reports_yaml_errors_with_position(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("cluster: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "line" in e.value.errors[0] and "not valid YAML" in e.value.errors[0]


def test_load_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read" in e.value.errors[0]
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "must be a mapping" in e.value.errors[0]


def test_load_resolves_paths_relative_to_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(textwrap.dedent("""
        cluster: c
        node_id: n1
        members:
          - {id: n1, address: 127.0.0.1, raft_port: 7100, grpc_port: 7101}
        data_dir: d
        secret_file: s
    """))
    c = load_config(p)
    assert c.data_dir == tmp_path / "d" and c.secret_file == tmp_path / "s"


def test_secret_file_rules(tmp_path):
    s = tmp_path / "secret"
    with pytest.raises(ConfigError, match="refuses to start without a cluster secret"):
        read_secret(s)
    s.write_text("short\n")
    os.chmod(s, 0o600)
    with pytest.raises(ConfigError, match="needs at least 16"):
        read_secret(s)
    s.write_text("x" * 32 + "\n")
    os.chmod(s, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret(s)
    os.chmod(s, 0o600)
    assert read_secret(s) == "x" * 32


def test_timing_invariants_are_reported_next_to_schema_errors():
    errs = errors_of(doc(members=[], timing={"lease_ms": 900}))
    assert any(e.startswith("members:") for e in errs)
    assert any("lease_ms (900) must be less than" in e for e in errs)
