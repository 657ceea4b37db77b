"""The Vagrant lab (vagrant/): `vagrant validate` accepts the Vagrantfile with either provider,
and the inventory it hands the Ansible provisioner passes the role's inventory-only preflight
(ansible/playbooks/check_inventory.yml: no SSH, no facts).

Vagrant evaluates the Vagrantfile with HACLUSTER_VAGRANT_DUMP set, which makes it write the
groups, host_vars and extra_vars it gives the provisioner; the tests build an Ansible
inventory from that dump. Nothing boots, and nothing is written in the repository:
VAGRANT_HOME and VAGRANT_DOTFILE_PATH (where the lab secret goes) point into tmp dirs.

Vagrant comes from Debian's `vagrant` and `vagrant-libvirt` packages (scripts/setup.sh); when
it is missing these tests FAIL on purpose. VirtualBox is not packaged for Debian 12: its
provider block is validated by Vagrant's own VirtualBox provider behind a `VBoxManage` stub
that only answers `--version` (Vagrant's usability gate), unless a real VBoxManage exists.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hacluster.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
VAGRANT_DIR = ROOT / "vagrant"
VAGRANT = "/usr/bin/vagrant"
ANSIBLE_CFG = ROOT / "ansible" / "ansible.cfg"
CHECK_INVENTORY = ROOT / "ansible" / "playbooks" / "check_inventory.yml"
TIMEOUT_S = 120
# before any test runs Vagrant (a developer's own lab may have made it)
DOT_VAGRANT_BEFORE = (VAGRANT_DIR / ".vagrant").exists()


@dataclass
class Validated:
    returncode: int
    output: str
    dump: dict[str, Any] | None


@pytest.fixture(scope="module")
def vagrant_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One VAGRANT_HOME for the module (Vagrant fills ~/.vagrant.d on its first run)."""
    if not Path(VAGRANT).exists():
        pytest.fail(f"{VAGRANT} is missing, so the Vagrant lab is not checked: run "
                    "scripts/setup.sh (Debian's vagrant and vagrant-libvirt packages)")
    return tmp_path_factory.mktemp("vagrant-home")


@pytest.fixture(scope="module")
def vboxmanage(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A directory with a `VBoxManage` stub that answers `--version` only (None when a real
    one is installed): Vagrant's VirtualBox provider is then usable enough to validate."""
    if shutil.which("VBoxManage"):
        return None
    stub = tmp_path_factory.mktemp("vboxmanage") / "VBoxManage"
    stub.write_text('#!/bin/sh\n[ "$1" = --version ] && echo 7.0.14r161095\nexit 0\n')
    stub.chmod(0o755)
    return stub.parent




def _validate(tmp: Path, home: Path, settings: dict[str, Any] | Path | None,
              provider: str = "libvirt", vagrant_dir: Path = VAGRANT_DIR,
              stub_dir: Path | None = None, tag: str = "run") -> Validated:
    """`vagrant validate` in vagrant_dir. settings: a file, or a mapping written to one, named
    by HACLUSTER_VAGRANT_SETTINGS ({} = the defaults, whatever vagrant/settings.yml holds);
    None: no such variable, so the Vagrantfile reads settings.yml next to itself. stub_dir
    goes first on the PATH; runs with distinct tags may go at once."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAGRANT_", "HACLUSTER_VAGRANT_"))}
    dump = tmp / f"dump-{tag}.json"
    dump.unlink(missing_ok=True)
    env.update(VAGRANT_HOME=str(home), VAGRANT_DOTFILE_PATH=str(tmp / "dotfile"),
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER=provider,
               HACLUSTER_VAGRANT_DUMP=str(dump))
    if isinstance(settings, dict):
        path = tmp / f"settings-{tag}.yml"
        path.write_text(yaml.safe_dump(settings))
        settings = path
    if settings is not None:
        env["HACLUSTER_VAGRANT_SETTINGS"] = str(settings)
    if stub_dir is not None:
        env["PATH"] = f"{stub_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    run = subprocess.run([VAGRANT, "validate"], cwd=vagrant_dir, env=env, capture_output=True,
                         text=True, timeout=TIMEOUT_S)
    return Validated(run.returncode, run.stdout + run.stderr,
                     json.loads(dump.read_text()) if dump.exists() else None)


def _check_inventory(tmp: Path, dump: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The role's inventory-only checks against an inventory made of the dump, as the
    provisioner would pass it (groups + host_vars; extra_vars with -e)."""
    assert CHECK_INVENTORY.exists(), f"{CHECK_INVENTORY.relative_to(ROOT)} is missing"
    inventory = {"all": {"children": {
        group: {"hosts": {h: dump["host_vars"].get(h, {}) for h in hosts}}
        for group, hosts in dump["groups"].items()}}}
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp / "extra.json").write_text(json.dumps(dump["extra_vars"]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CFG), "ANSIBLE_HOME": str(tmp / "ansible"),
           "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible" / "tmp"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    playbook = Path(sys.executable).parent / "ansible-playbook"
    assert playbook.exists(), f"{playbook} is missing: run scripts/setup.sh (ansible-core)"
    return subprocess.run([str(playbook), "-i", str(tmp / "inventory.yml"), str(CHECK_INVENTORY),
                           "-e", f"@{tmp / 'extra.json'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def _failures(run: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if "FAILED!" in line]


def _expect_lab(dump: dict[str, Any], subnet: str, servers: list[str], first: int) -> None:
    """The dump is what the role expects of the lab with these servers from SUBNET.first."""
    net = ipaddress.ip_network(f"{subnet}.0/24")
    addresses = {f"n{i + 1}": f"{subnet}.{first + i}" for i in range(len(servers))}
    assert dump["groups"]["hacluster_servers"] == servers
    assert dump["host_vars"] == {n: {"hacluster_node_id": n, "hacluster_address": addresses[n]}
                                 for n in servers}
    ids = [dump["host_vars"][n]["hacluster_node_id"] for n in servers]
    assert len(set(ids)) == len(ids)
    machine_ips = [m["ip"] for m in dump["machines"]]
    assert len(set(machine_ips)) == len(machine_ips), machine_ips
    assert all(ipaddress.ip_address(ip) in net for ip in machine_ips), machine_ips
    ev = dump["extra_vars"]
    vip = ev["hacluster_vips"][0]["address"]
    assert ev["hacluster_vips"] == [{"address": vip, "prefix": 24}]
    assert ipaddress.ip_address(vip) in net and vip not in machine_ips
    [service] = ev["hacluster_services"]
    assert service["vip"] == vip and service["check"] in [c["name"] for c in ev["hacluster_checks"]]
    assert service["backends"] == [{"node": n} for n in servers]
    assert re.fullmatch(r"[0-9a-f]{48}", ev["hacluster_secret"])


def _agent_accepts(dump: dict[str, Any]) -> None:
    """The agent's own config parser takes the lab's cluster, members, VIPs, checks and
    services (the parts of hacluster.yaml.j2 that come from the Vagrantfile), so `hacluster
    config validate` on the servers will not be the first to find a mistake in them."""
    ev = dump["extra_vars"]
    members = [{"id": hv["hacluster_node_id"], "address": hv["hacluster_address"],
                "raft_port": 7100, "grpc_port": 7101} for hv in dump["host_vars"].values()]
    for me in members:
        parse_config({
            "cluster": ev["hacluster_cluster_name"], "node_id": me["id"], "members": members,
            "vips": [{**v, "interface": "eth1"} for v in ev["hacluster_vips"]],
            "checks": ev["hacluster_checks"], "services": ev["hacluster_services"],
            "data_dir": "/var/lib/hacluster", "secret_file": "/etc/hacluster/secret",
            "tls": {"ca_file": "ca.crt", "cert_file": "node.crt", "key_file": "node.key"},
        })


@dataclass
class DefaultLab:
    state_dir: Path  # VAGRANT_DOTFILE_PATH of the two good runs
    runs: dict[str, Validated]


@pytest.fixture(scope="module")
def default_lab(tmp_path_factory: pytest.TempPathFactory, vagrant_home: Path,
                vboxmanage: Path | None) -> DefaultLab:
    """`vagrant validate` of the default lab, four runs at once: with the libvirt and with the
    VirtualBox provider (each validates its own provider block only), and each again on a copy
    with an unknown option in that provider's block, which must fail (so the block is really
    checked). The VirtualBox run reads settings.example.yml, which must hold the defaults."""
    tmp = tmp_path_factory.mktemp("default-lab")
    broken = tmp / "broken"
    broken.mkdir()
    text = (VAGRANT_DIR / "Vagrantfile").read_text()
    for var, option in (("lv", "bogus_libvirt_option"), ("vb", "bogus_virtualbox_option")):
        text, n = re.subn(rf"^(\s*){var}\.cpus = .*$", rf"\g<0>\n\g<1>{var}.{option} = 1", text,
                          flags=re.M)
        assert n == 1, f"no `{var}.cpus =` line in the Vagrantfile's provider block"
    (broken / "Vagrantfile").write_text(text)
    runs = {
        "libvirt": dict(tmp=tmp, settings={}, provider="libvirt"),
        "virtualbox": dict(tmp=tmp, settings=VAGRANT_DIR / "settings.example.yml",
                           provider="virtualbox", stub_dir=vboxmanage),
        "bogus_libvirt_option": dict(tmp=broken, settings={}, provider="libvirt",
                                     vagrant_dir=broken),
        "bogus_virtualbox_option": dict(tmp=broken, settings={}, provider="virtualbox",
                                        vagrant_dir=broken, stub_dir=vboxmanage),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {tag: pool.submit(_validate, home=vagrant_home, tag=tag, **kw)
                   for tag, kw in runs.items()}
        return DefaultLab(tmp / "dotfile", {tag: f.result() for tag, f in futures.items()})


def test_default_lab_validates_and_its_inventory_passes_the_role_checks(tmp_path, default_lab):
    v = default_lab.runs["libvirt"]
    assert v.returncode == 0, v.output
    assert "validated successfully" in v.output
    assert v.dump is not None, "the Vagrantfile wrote no HACLUSTER_VAGRANT_DUMP"
    assert v.dump["groups"] == {"hacluster_servers": ["n1", "n2", "n3"],
                                "hacluster_clients": ["client1"]}
    assert v.dump["machines"] == [
        {"name": "n1", "ip": "192.168.56.11", "role": "server"},
        {"name": "n2", "ip": "192.168.56.12", "role": "server"},
        {"name": "n3", "ip": "192.168.56.13", "role": "server"},
        {"name": "client1", "ip": "192.168.56.5", "role": "client"},
    ]
    _expect_lab(v.dump, "192.168.56", ["n1", "n2", "n3"], 11)
    ev = v.dump["extra_vars"]
    assert ev["hacluster_vips"] == [{"address": "192.168.56.100", "prefix": 24}]
    assert ev["hacluster_cluster_name"] == "vlab"
    # the lab secret and PKI live with Vagrant's machine state (VAGRANT_DOTFILE_PATH)
    secret_file = default_lab.state_dir / "hacluster-secret"
    assert secret_file.read_text().strip() == ev["hacluster_secret"]
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert ev["hacluster_pki_dir"] == str(default_lab.state_dir / "hacluster-pki")
    assert (VAGRANT_DIR / ".vagrant").exists() == DOT_VAGRANT_BEFORE, "Vagrant wrote in vagrant/"
    _agent_accepts(v.dump)

    run = _check_inventory(tmp_path, v.dump)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not _failures(run)


def test_both_provider_blocks_pass_their_providers_validation(default_lab):
    """The same dump from both runs: settings.example.yml holds the defaults, and two
    evaluations (at once, even) share one lab secret."""
    v = default_lab.runs
    assert v["libvirt"].returncode == 0, v["libvirt"].output
    assert v["virtualbox"].returncode == 0, v["virtualbox"].output
    assert v["libvirt"].dump is not None and v["libvirt"].dump == v["virtualbox"].dump
    for option in ("bogus_libvirt_option", "bogus_virtualbox_option"):
        assert v[option].returncode != 0 and option in v[option].output, v[option].output


def test_settings_override_five_servers_in_another_subnet(tmp_path, vagrant_home):
    v = _validate(tmp_path, vagrant_home, {"servers": 5, "subnet": "10.77.3", "first_server_ip": 21})
    assert v.returncode == 0, v.output
    assert v.dump is not None
    servers = [f"n{i}" for i in range(1, 6)]
    assert [(m["name"], m["ip"]) for m in v.dump["machines"]] == [
        *((f"n{i}", f"10.77.3.{20 + i}") for i in range(1, 6)), ("client1", "10.77.3.5")]
    _expect_lab(v.dump, "10.77.3", servers, 21)
    assert v.dump["extra_vars"]["hacluster_vips"] == [{"address": "10.77.3.100", "prefix": 24}]
    _agent_accepts(v.dump)

    run = _check_inventory(tmp_path, v.dump)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not _failures(run)


def test_even_server_count_validates_but_the_role_refuses_it(tmp_path, vagrant_home):
    v = _validate(tmp_path, vagrant_home, {"servers": 4})
    assert v.returncode == 0, v.output
    assert v.dump is not None and v.dump["groups"]["hacluster_servers"] == ["n1", "n2", "n3", "n4"]

    run = _check_inventory(tmp_path, v.dump)
    assert run.returncode != 0, run.stdout + run.stderr
    failures = _failures(run)
    # the fatal message itself (fail_msg), not a task name: those print on success too
    assert failures and all("use an odd number of voters" in line for line in failures), \
        run.stdout + run.stderr


def test_unknown_setting_in_settings_yml_is_named(tmp_path, vagrant_home):
    """vagrant/settings.yml, next to the Vagrantfile (here a copy, not to touch the repo)."""
    lab = tmp_path / "lab"
    lab.mkdir()
    shutil.copy(VAGRANT_DIR / "Vagrantfile", lab / "Vagrantfile")
    (lab / "settings.yml").write_text("servers: 3\nserver_count: 5\n")
    v = _validate(tmp_path, vagrant_home, None, vagrant_dir=lab)
    assert v.returncode != 0
    assert re.search(r"unknown setting.*server_count", v.output), v.output
    assert "allowed: servers, clients, subnet" in v.output, v.output
    assert v.dump is None


@pytest.mark.parametrize("settings, message", [
    ({"vip": 12}, r"the VIP and n2 would both get 192\.168\.56\.12"),
    ({"client_ip_start": 10, "clients": 2}, r"client2 and n1 would both get 192\.168\.56\.11"),
    ({"servers": 5, "first_server_ip": 252}, r"n4 would get 192\.168\.56\.255"),
    ({"servers": 10}, r"setting servers: must be an integer 1-9, got 10"),
    ({"subnet": "10.0.300"}, r"setting subnet: must be the first three octets"),
])
def test_bad_settings_fail_validation_with_what_to_fix(tmp_path, vagrant_home, settings, message):
    v = _validate(tmp_path, vagrant_home, settings)
    assert v.returncode != 0
    assert re.search(message, v.output), v.output
