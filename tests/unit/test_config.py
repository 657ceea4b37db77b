import os
import textwrap
from pathlib import Path

import pytest
import yaml

from hacluster.config import ConfigError, load_config, parse_config, read_secret

MEMBERS = [
    {"id": "n1", "address": "10.0.0.11", "raft_port": 7100, "grpc_port": 7101},
    {"id": "n2", "address": "10.0.0.12", "raft_port": 7100, "grpc_port": 7101},
    {"id": "n3", "address": "10.0.0.13", "raft_port": 7100, "grpc_port": 7101},
]


def doc(**over):
    d = {"cluster": "ward-a", "node_id": "n1", "members": MEMBERS,
         "vips": [{"address": "10.0.0.100", "prefix": 24, "interface": "eth0"}],
         "data_dir": "data", "secret_file": "secret",
         "tls": {"ca_file": "pki/ca.crt", "cert_file": "pki/n1.crt", "key_file": "pki/n1.key"}}
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


def test_only_voters_count_for_the_even_warning():
    # bench/scale.py at N=10 with 3 voters: every agent warned of "10 voters"
    extra = [{"id": f"n{i}", "address": f"10.0.0.{20 + i}", "raft_port": 7100, "grpc_port": 7101,
              "voter": False} for i in range(4, 11)]
    assert not [w for w in parse_config(doc(members=MEMBERS + extra)).warnings if "voters" in w]
    four = parse_config(doc(members=MEMBERS + [{**extra[0], "voter": True}])).warnings
    assert any("4 voters" in w and "(1) than 3 voters do" in w for w in four), four


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
        tls: {ca_file: pki/ca.crt, cert_file: /etc/n1.crt, key_file: n1.key,
              cli_cert_file: a.crt, cli_key_file: a.key}
    """))
    c = load_config(p)
    assert c.data_dir == tmp_path / "d" and c.secret_file == tmp_path / "s"
    assert c.tls.ca_file == tmp_path / "pki/ca.crt" and c.tls.cert_file == Path("/etc/n1.crt")
    assert c.tls.key_file == tmp_path / "n1.key"
    assert c.cli_tls.cert_file == tmp_path / "a.crt" and c.cli_tls.ca_file == c.tls.ca_file


def test_tls_is_required_and_the_cli_pair_goes_together():
    d = doc()
    del d["tls"]
    assert any(e.startswith("tls:") for e in errors_of(d))
    errs = errors_of(doc(tls={"ca_file": "a", "cert_file": "b", "key_file": "c", "cli_cert_file": "d"}))
    assert any(e.startswith("tls") and "cli_key_file" in e for e in errs), errs


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


def test_gossip_and_health_defaults_and_units():
    c = parse_config(doc(gossip={"probe_interval_ms": 1000}, health={"settle_ms": 250},
                         checks=[{"name": "web", "kind": "http", "port": 8080}]))
    assert c.gossip.probe_interval == 1.0 and c.gossip.probe_timeout == 0.2
    assert c.gossip.indirect_checks == 3 and c.health_settle == 0.25
    assert c.checks[0].name == "web" and c.checks[0].port == 8080


@pytest.mark.parametrize("health", [{"silence_probe_ms": 100}, {"silence_probe_ms": 1000},
                                    {"silence_probe_ms": 400, "corroborate_ms": 300}])
def test_silence_probe_must_sit_between_late_heartbeats_and_the_corroboration(health):
    errs = errors_of(doc(health=health))
    assert any(e.startswith("health.silence_probe_ms: must be 0 (off) or above 2 x "
                            "timing.heartbeat_ms (100") for e in errs), errs


def test_silence_probe_can_be_off():
    assert parse_config(doc(health={"silence_probe_ms": 0})).health_silence_probe == 0


def test_check_errors_have_paths_and_cross_rules_are_reported_together():
    errs = errors_of(doc(gossip={"probe_timeout_ms": 600},
                         checks=[{"name": "web", "kind": "tcp", "port": 80},
                                 {"name": "web", "kind": "http", "timeout_ms": 2000}]))
    assert any(e.startswith("gossip.probe_timeout_ms: must be less than probe_interval_ms") for e in errs)
    assert any(e.startswith("checks[1].name: duplicate check name 'web'") for e in errs)
    assert any(e.startswith("checks[1].timeout_ms: must be less than interval_ms") for e in errs)


@pytest.mark.parametrize("check, path", [
    ({"name": "x", "kind": "tcp"}, "checks[0].port"),
    ({"name": "x", "kind": "ping"}, "checks[0]"),
    ({"name": "x", "kind": "sip", "transport": "sctp"}, "checks[0].transport"),
    ({"name": "x", "kind": "dicom", "called_ae": "A" * 17}, "checks[0].called_ae"),
])
def test_bad_checks_name_the_field(check, path):
    errs = errors_of(doc(checks=[check]))
    assert any(e.startswith(path + ":") for e in errs), errs


SERVICE = {"name": "web", "vip": "10.0.0.100", "port": 80, "check": "web", "backend_port": 8080,
           "backends": [{"node": "n1"}, {"node": "n2", "weight": 2},
                        {"address": "10.0.0.50", "port": 8080}]}


def test_a_service_with_defaults():
    c = parse_config(doc(checks=[{"name": "web", "kind": "http"}], services=[SERVICE]))
    (s,) = c.services
    assert s.ports == [80] and s.protocol == "tcp" and s.algorithm == "round-robin"
    assert s.snat and s.backends[1].weight == 2 and s.backends[2].node is None


@pytest.mark.parametrize("change, path, words", [
    ({"vip": "10.0.0.99"}, "services[0].vip", "not one of the configured vips"),
    ({"check": "nope"}, "services[0].check", "no check named 'nope'"),
    ({"backends": [{"node": "n9"}]}, "services[0].backends[0].node", "'n9' is not a member"),
    ({"backends": [{"node": "n1", "weight": 0}]}, "services[0].backends[0].weight", "greater than"),
    ({"backends": [{"node": "n1", "address": "10.0.0.5"}]}, "services[0].backends[0]", "either"),
    ({"backends": [{"address": "10.0.0.100", "port": 80}]}, "services[0].backends[0].address",
     "the VIP itself"),
    ({"backends": [{"node": "n1"}, {"node": "n1"}]}, "services[0].backends[1]", "same backend"),
    ({"ports": [80, 0]}, "services[0].ports[1]", "greater than or equal to 1"),
    ({"algorithm": "random"}, "services[0].algorithm", "round-robin"),
    ({"protocol": "sctp"}, "services[0].protocol", "tcp"),
    ({"backends": [{"address": "10.0.0.50", "port": 9090}]}, "services[0].backends[0].port",
     "backend_port"),
])
def test_bad_services_name_the_field(change, path, words):
    svc = {k: v for k, v in SERVICE.items() if not (k == "port" and "ports" in change)}
    errs = errors_of(doc(checks=[{"name": "web", "kind": "http"}], services=[{**svc, **change}]))
    assert any(e.startswith(path) and words in e for e in errs), errs


@pytest.mark.parametrize("change, path, member_port", [
    ({"port": 7100}, "services[0].ports[0]", "members[0].raft_port (n1)"),
    ({"ports": [80, 7101]}, "services[0].ports[1]", "members[0].grpc_port (n1)"),
    ({"backend_port": 7100, "backends": [{"node": "n2"}]}, "services[0].backend_port",
     "members[0].raft_port (n1)"),
    ({"backend_port": 7201, "backends": [{"node": "n2"}], "fallback": {"address": "10.0.0.60"}},
     "services[0].backend_port", "members[2].grpc_port (n3)"),
])
def test_a_service_on_the_members_raft_or_grpc_port_is_an_error_naming_both(change, path, member_port):
    """Issue 15, finding 9: the balancer must never carry clients to the cluster's own ports."""
    members = [MEMBERS[0], MEMBERS[1], {**MEMBERS[2], "raft_port": 7200, "grpc_port": 7201}]
    svc = {k: v for k, v in SERVICE.items() if not (k == "port" and "ports" in change)}
    errs = errors_of(doc(members=members, checks=[{"name": "web", "kind": "http"}],
                         services=[{**svc, **change}]))
    assert any(e.startswith(path + ":") and f"is also {member_port}" in e for e in errs), errs


def test_external_backends_get_a_derived_check_aimed_at_them():
    c = parse_config(doc(checks=[{"name": "web", "kind": "http", "port": 8080}],
                         services=[SERVICE, {**SERVICE, "name": "web2", "port": 81}]))
    names = [x.name for x in c.checks]
    assert names == ["web", "web@10.0.0.50"]  # one per (check, host), after the configured
    derived = c.checks[1]
    assert derived.host == "10.0.0.50" and derived.port == 8080 and derived.kind == "http"
    assert c.checks[0].host is None  # the configured check still probes its own member


def test_a_check_name_too_long_to_derive_an_external_check_from_is_refused():
    long = "w" * 60
    errs = errors_of(doc(checks=[{"name": long, "kind": "http"}], services=[{**SERVICE, "check": long}]))
    assert any(e.startswith("services[0].backends[2].address:") and "too long" in e for e in errs), errs


def test_two_services_on_one_vip_port_clash():
    errs = errors_of(doc(checks=[{"name": "web", "kind": "http"}],
                         services=[SERVICE, {**SERVICE, "name": "web2"}]))
    assert any(e.startswith("services[1].ports[0]: 10.0.0.100:80/tcp is already served") for e in errs)


# ------------------------------------------------------------------ conntrack_sync

def test_conntrack_sync_defaults_to_auto_on_the_first_vips_interface_with_the_members_addresses():
    from tests.support.config import config

    s = config().conntrack_sync
    assert (s.mode, s.interface, s.address, s.peers) == ("auto", "eth0", "10.0.0.11",
                                                        ("10.0.0.12", "10.0.0.13"))
    assert (s.transport, s.port, s.commit_timeout) == ("auto", 3780, 0.1)


def test_conntrack_sync_yaml_off_and_on_are_booleans_and_mean_off_and_on():
    from tests.support.config import config

    assert config(conntrack_sync=yaml.safe_load("off")).conntrack_sync.mode == "off"
    assert config(conntrack_sync=yaml.safe_load("on")).conntrack_sync.mode == "on"
    m = config(conntrack_sync={"mode": "on", "interface": "bond0", "commit_timeout_ms": 250}).conntrack_sync
    assert (m.interface, m.commit_timeout) == ("bond0", 0.25)


@pytest.mark.parametrize("value, message", [
    ("sometimes", "conntrack_sync: value error, must be off, auto, on or a mapping, got 'sometimes'"),
    ({"mode": "auto", "port": 65534}, "leaves no room for the 3 pair ports"),
    ({"mode": "auto", "multicast_group": "10.1.1.1"}, "is not an IPv4 multicast address"),
    ({"mode": "on", "porte": 1}, "conntrack_sync"),
])
def test_conntrack_sync_mistakes_are_named(value, message):
    from tests.support.config import config

    with pytest.raises(ConfigError) as e:
        config(conntrack_sync=value)
    assert message in str(e.value)


def test_conntrack_sync_on_refuses_the_proxy_and_a_single_member():
    from tests.support.config import config

    with pytest.raises(ConfigError, match="userspace proxy terminates TCP"):
        config(conntrack_sync="on", dataplane="proxy")
    one = [{"id": "n1", "address": "10.0.0.11", "raft_port": 7100, "grpc_port": 7101}]
    with pytest.raises(ConfigError, match="at least two members"):
        config(conntrack_sync="on", members=one)
    assert config(members=one).conntrack_sync.mode == "auto"  # auto: the agent says off


def test_metrics_allowed_hosts_are_names_or_addresses():
    c = parse_config(doc(metrics={"listen": "10.0.0.11:9464", "allowed_hosts": ["n1.ward-a.example", "n1"]}))
    assert c.metrics_listen == "10.0.0.11:9464" and c.metrics_allowed_hosts == ("n1.ward-a.example", "n1")
    assert parse_config(doc()).metrics_allowed_hosts == ()
    errs = errors_of(doc(metrics={"listen": "10.0.0.11:9464", "allowed_hosts": ["ok", "evil.example/x"]}))
    assert any(e.startswith("metrics.allowed_hosts[1]:") for e in errs), errs


def test_checks_user_is_the_default_user_of_exec_checks():
    run = {"kind": "exec", "command": ["/usr/local/bin/check-disk"]}
    c = parse_config(doc(checks_user="hacluster-check", checks=[
        {"name": "a", **run}, {"name": "b", **run, "user": "nobody", "env": {"WARD": "a"}},
        {"name": "t", "kind": "tcp", "port": 80}]))
    assert [getattr(x, "user", "-") for x in c.checks] == ["hacluster-check", "nobody", "-"]
    assert c.checks[1].env == {"WARD": "a"}
    assert parse_config(doc(checks=[{"name": "a", **run}])).checks[0].user is None
    errs = errors_of(doc(checks_user="root; id", checks=[
        {"name": "a", **run, "env": {"HACLUSTER_SECRET_FILE": "x"}}, {"name": "b", **run, "env": {"1X": "y"}},
        {"name": "c", **run, "user": "-rf"}]))
    for path in ("checks_user:", "checks[0].env:", "checks[1].env:", "checks[2].user:"):
        assert any(e.startswith(path) for e in errs), (path, errs)


def test_read_secret_refuses_a_directory_an_unreadable_and_a_binary_file(tmp_path):
    """At start the agent says why, with the path, instead of a traceback."""
    d = tmp_path / "secretdir"
    d.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match=r"secret_file: .*secretdir is a directory; the agent refuses"):
        read_secret(d)
    b = tmp_path / "binary"
    b.write_bytes(b"\xff\xfe" * 20)
    os.chmod(b, 0o600)
    with pytest.raises(ConfigError, match="is not UTF-8 text; the agent refuses"):
        read_secret(b)
    if os.geteuid() != 0:
        os.chmod(b, 0o200)
        with pytest.raises(ConfigError, match="cannot read .*binary: Permission denied"):
            read_secret(b)
