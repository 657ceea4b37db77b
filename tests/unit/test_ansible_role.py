"""The Ansible role without servers: its filters, its documented variables, and its
inventory checks (playbooks/check_inventory.yml: no SSH, no facts) on good and bad
inventories. The role running for real over SSH: tests/lab/test_ansible_rollout.py."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "ansible" / "roles" / "hacluster"
PLAYBOOK = str(ROOT / "ansible" / "playbooks" / "check_inventory.yml")
VENV_BIN = Path(sys.executable).parent


def _filters():
    path = ROLE / "filter_plugins" / "hacluster_net.py"
    spec = importlib.util.spec_from_file_location("hacluster_net", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_address_filters():
    f = _filters()
    assert f.hacluster_in_network("10.0.0.100", "10.0.0.11/24")
    assert not f.hacluster_in_network("10.0.1.100", "10.0.0.11/24")
    assert not f.hacluster_in_network("not-an-ip", "10.0.0.11/24")
    assert f.hacluster_is_ipv4("10.0.0.1") and not f.hacluster_is_ipv4("10.0.0.256")
    assert f.hacluster_cidr({"address": "10.0.0.11", "netmask": "255.255.255.0"}) == "10.0.0.11/24"
    assert f.hacluster_cidr({}) == ""
    facts = {"interfaces": ["lo", "eth0", "br-lan"],
             "lo": {"ipv4": {"address": "127.0.0.1"}},
             "eth0": {"ipv4": {"address": "10.0.0.11"}},
             "br_lan": {"ipv4": {"address": "10.9.0.1"}, "ipv4_secondaries": [{"address": "10.9.0.2"}]}}
    assert f.hacluster_interface_of(facts, "10.0.0.11") == "eth0"
    assert f.hacluster_interface_of(facts, "10.9.0.2") == "br-lan"
    assert f.hacluster_interface_of(facts, "10.0.0.99") == ""


def test_members_default_to_inventory_names_and_role_ports():
    hostvars = {"a": {"hacluster_address": "10.0.0.1"},
                "b": {"hacluster_address": "10.0.0.2", "hacluster_node_id": "ward-b",
                      "hacluster_raft_port": 8100}}
    assert _filters().hacluster_members(["a", "b"], hostvars, 7100, 7101) == [
        {"name": "a", "id": "a", "address": "10.0.0.1", "raft_port": 7100, "grpc_port": 7101, "voter": True},
        {"name": "b", "id": "ward-b", "address": "10.0.0.2", "raft_port": 8100, "grpc_port": 7101,
         "voter": True}]


def test_every_default_is_documented_and_every_documented_variable_exists():
    defaults = set(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    documented = set(spec["argument_specs"]["main"]["options"])
    required = {k for k, v in spec["argument_specs"]["main"]["options"].items() if v.get("required")}
    assert defaults - documented == set(), "defaults missing from meta/argument_specs.yml"
    assert documented - defaults == required == {"hacluster_address", "hacluster_secret"}


def check_inventory(tmp_path: Path, hosts: dict, playbook: str = PLAYBOOK,
                    **group_vars) -> subprocess.CompletedProcess[str]:
    inv = {"all": {"children": {"hacluster_servers": {"hosts": hosts, "vars": {
        "hacluster_secret": "s" * 32, "hacluster_vips": [{"address": "10.0.0.100", "prefix": 24}],
        **group_vars}}}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible" / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_DEPRECATION_WARNINGS="0")
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(path), playbook],
                          capture_output=True, text=True, env=env, timeout=120)


THREE = {f"n{i}": {"hacluster_address": f"10.0.0.1{i}"} for i in (1, 2, 3)}


def test_a_good_inventory_passes(tmp_path):
    run = check_inventory(tmp_path, THREE)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("hosts, group_vars, message", [
    (THREE, {"hacluster_secret": "short"}, "at least 16 characters"),
    (THREE, {"hacluster_secret": "CHANGE-ME-with-openssl-rand-hex-24"}, "at least 16 characters"),
    ({**THREE, "n3": {"hacluster_address": "10.0.0.11"}}, {}, "its own hacluster_address"),
    ({**THREE, "n3": {"hacluster_address": "10.0.0.13", "hacluster_node_id": "n1"}}, {},
     "its own hacluster_address"),
    ({**THREE, "n3": {}}, {}, "hacluster_address must be this server's IPv4 address"),
    ({**THREE, "n3": {"hacluster_address": "10.0.0.300"}}, {}, "hacluster_address must be"),
    (THREE, {"hacluster_vips": [{"address": "10.0.0.11", "prefix": 24}]}, "no member uses"),
    (THREE, {"hacluster_vips": [{"address": "10.0.0.100"}]}, "a `prefix` (1-32"),
    ({"n1": THREE["n1"], "n2": THREE["n2"]}, {}, "use an odd number of voters"),
], ids=["short-secret", "example-secret", "same-address", "same-id", "no-address", "bad-address",
        "vip-is-a-member", "vip-without-prefix", "even-voters"])
def test_a_bad_inventory_fails_with_what_to_fix(tmp_path, hosts, group_vars, message):
    run = check_inventory(tmp_path, hosts, **group_vars)
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0 and re.search(r"failed=[1-9]", out), out[-2000:]
    assert message in out, out[-2000:]
    assert "s" * 32 not in out  # the secret never shows, even in a failure


def render_templates(tmp_path: Path, templates: list[str], **group_vars) -> None:
    """Render the role's templates for THREE with its own defaults (loaded by include_role,
    as the role runs), to tmp_path/NODE.TEMPLATE (without .j2)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    tasks: list[dict] = [{"ansible.builtin.include_role": {"name": "hacluster", "public": True,
                                                           "tasks_from": "preflight_inventory.yml"}}]
    tasks += [{"ansible.builtin.template": {"src": str(ROLE / "templates" / t), "mode": "0600",
                                            "dest": f"{tmp_path}/{{{{ inventory_hostname }}}}.{t[:-3]}"}}
              for t in templates]
    play = [{"hosts": "hacluster_servers", "gather_facts": False, "connection": "local",
             "vars": {"_hacluster_interface": "eth0", "ansible_python_interpreter": sys.executable},
             "tasks": tasks}]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play))
    run = check_inventory(tmp_path, THREE, playbook=str(tmp_path / "render.yml"), **group_vars)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_the_role_default_metrics_listener_is_tls_and_names_its_hosts(tmp_path):
    """Issue 15, finding 7: by default the role serves metrics and the status page over
    HTTPS to cluster certificates only, and answers only its own names in the Host header.
    The config template is rendered with the role's defaults and read by the agent's
    config parser."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
    assert defaults["hacluster_metrics_tls"] is True
    assert spec["options"]["hacluster_metrics_tls"]["default"] is True
    render_templates(tmp_path, ["hacluster.yaml.j2"])
    from hacluster.config import parse_config
    for node in THREE:
        c = parse_config(yaml.safe_load((tmp_path / f"{node}.hacluster.yaml").read_text()))
        assert c.metrics_listen == f"{THREE[node]['hacluster_address']}:9464"
        assert c.metrics_tls is True and c.metrics_allowed_hosts == (node,)
        assert all(getattr(x, "user", None) is None for x in c.checks)


def test_a_checks_user_reaches_the_config_and_the_unit_gets_what_switching_takes(tmp_path):
    """Issue 15, finding 6: with hacluster_checks_user, exec checks run as that user, and the
    unit (and the daemon-mode start) give the agent CAP_SETUID and CAP_SETGID; without it,
    neither."""
    exec_check = {"name": "disk", "kind": "exec", "command": ["/usr/local/bin/check-disk"]}
    templates = ["hacluster.yaml.j2", "hacluster-agent.service.j2", "hacluster-ctl.j2"]
    render_templates(tmp_path / "with", templates, hacluster_checks_user="hacluster-check",
                     hacluster_checks=[exec_check])
    render_templates(tmp_path / "without", templates, hacluster_checks=[exec_check])
    from hacluster.config import parse_config
    for how, user in (("with", "hacluster-check"), ("without", None)):
        d = tmp_path / how
        c = parse_config(yaml.safe_load((d / "n1.hacluster.yaml").read_text()))
        assert c.checks[0].user == user
        unit = (d / "n1.hacluster-agent.service").read_text()
        ctl = (d / "n1.hacluster-ctl").read_text()
        assert ("AmbientCapabilities=CAP_SETUID CAP_SETGID" in unit) is (user is not None)
        assert ("+setuid,+setgid" in ctl) is (user is not None)
        assert "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW" in unit and "NoNewPrivileges=yes" in unit


def _config_filters():
    path = ROLE / "filter_plugins" / "hacluster_config.py"
    spec = importlib.util.spec_from_file_location("hacluster_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_BASE = """# managed
cluster: ward
node_id: n1
members:
  - {id: n1, address: 10.0.0.1, raft_port: 7100, grpc_port: 7101}
  - {id: n2, address: 10.0.0.2, raft_port: 7100, grpc_port: 7101}
data_dir: /var/lib/hacluster
secret_file: /etc/hacluster/secret
tls: {ca_file: /etc/hacluster/ca.crt, cert_file: /etc/hacluster/node.crt, key_file: /etc/hacluster/node.key,
      cli_cert_file: /etc/hacluster/cli.crt, cli_key_file: /etc/hacluster/cli.key}
log_level: info
timing: {}
metrics: {listen: "10.0.0.1:9464", tls: true}
checks: [{name: web, kind: tcp, port: 80}]
services:
  - {name: web, vip: 10.0.0.100, port: 80, algorithm: maglev, backends: [{node: n1}, {node: n2}]}
"""


@pytest.mark.parametrize("old, new, keys", [
    # what the agent's reload applies: services, backends, weights, checks, log level, metrics
    ("", "", []),
    ("algorithm: maglev", "algorithm: round_robin", []),
    ("backends: [{node: n1}, {node: n2}]", "backends: [{node: n1, weight: 5}, {node: n2}, {node: n3}]", []),
    ("checks: [{name: web, kind: tcp, port: 80}]",
     "checks: [{name: web, kind: http, port: 80, path: /}]", []),
    ("log_level: info", "log_level: debug", []),
    ('listen: "10.0.0.1:9464"', 'listen: "10.0.0.1:9465"', []),
    ("timing: {}", "timing: {}\nhealth: {settle_ms: 300}", []),
    ("cli_cert_file: /etc/hacluster/cli.crt", "cli_cert_file: /etc/hacluster/cli2.crt", []),
    # other members: membership lives in the cluster (members add/remove), the reload ignores them
    ("grpc_port: 7101}\ndata_dir", "grpc_port: 7101}\n  - {id: n3, address: 10.0.0.3, raft_port: 7100, "
     "grpc_port: 7101}\ndata_dir", []),
    ("address: 10.0.0.2", "address: 10.0.0.22", []),
    ("# managed", "# managed again", []),
    # what needs a restart: this server's own address or ports (its listeners)
    ("raft_port: 7100, grpc_port: 7101}\n  - {id: n2",
     "raft_port: 7200, grpc_port: 7101}\n  - {id: n2", ["members"]),
    ("address: 10.0.0.1,", "address: 10.0.0.9,", ["members"]),
    ("node_id: n1", "node_id: n9", ["node_id"]),
    ("cert_file: /etc/hacluster/node.crt", "cert_file: /etc/hacluster/other.crt", ["tls.cert_file"]),
    ("data_dir: /var/lib/hacluster", "data_dir: /srv/hacluster", ["data_dir"]),
    ("secret_file: /etc/hacluster/secret", "secret_file: /etc/hacluster/secret2", ["secret_file"]),
    ("timing: {}", "timing: {lease_ms: 150}", ["timing"]),
    ("log_level: info", "log_level: info\ndataplane: proxy", ["dataplane"]),
    ("log_level: info", "log_level: info\nsome_future_key: 1", ["some_future_key"]),
    ("services:\n  - {name: web, vip: 10.0.0.100, port: 80, algorithm: maglev, backends: "
     "[{node: n1}, {node: n2}]}", "services: []", ["services"]),
])
def test_restart_keys_separate_what_a_reload_applies(old, new, keys):
    assert _config_filters().hacluster_restart_keys(_BASE, _BASE.replace(old, new, 1)) == keys


def test_restart_keys_count_an_unreadable_config_as_a_restart():
    f = _config_filters()
    assert f.hacluster_restart_keys("", _BASE) == ["(unreadable)"]
    assert f.hacluster_restart_keys(_BASE, "cluster: [unclosed") == ["(unreadable)"]
