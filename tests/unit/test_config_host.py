"""config_host: what a valid config refers to on this host (files, exec commands, VIP
subnets) as warnings and notes with their paths; the interfaces through a fake, and once
for real on loopback."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from hacluster.config import parse_config
from hacluster.config_host import (
    HostFindings,
    InterfaceUnreadable,
    LocalInterfaces,
    file_problem,
    host_findings,
)

from .pki import CLUSTER, PKI
from .test_config import doc

SECRET = "s3cret-of-the-ward-" * 2


class FakeInterfaces:
    """name -> its addresses ("10.0.0.11/24"), None (absent), or an exception to raise."""

    def __init__(self, table: dict[str, list[str] | None | Exception]):
        self.table = table
        self.asked: list[str] = []

    def addresses(self, name: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] | None:
        self.asked.append(name)
        got = self.table.get(name)
        if isinstance(got, Exception):
            raise got
        return None if got is None else [ipaddress.ip_interface(a) for a in got]


ETH0_OK = FakeInterfaces({"eth0": ["10.0.0.11/24", "fe80::1/64"]})


def _ready(tmp_path: Path, **over: object) -> dict:
    """A config whose secret and certificates (the test PKI's, cluster ward) are in place."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return doc(**{"cluster": CLUSTER, "secret_file": str(secret), "tls": PKI.tls_doc(cli="alice"), **over})


def _find(tmp_path: Path, d: dict, interfaces: FakeInterfaces = ETH0_OK) -> HostFindings:
    return host_findings(parse_config(d, base=tmp_path), interfaces)


def test_a_server_with_everything_in_place_has_nothing_to_say(tmp_path: Path) -> None:
    found = _find(tmp_path, _ready(tmp_path))
    assert found.warnings == [] and found.notes == []


def test_missing_files_are_warnings_with_the_path_and_the_consequence(tmp_path: Path) -> None:
    found = _find(tmp_path, doc(tls={**PKI.tls_doc(cli="alice"), "ca_file": "pki/ca.crt"}))
    assert found.warnings == [
        f"secret_file: {tmp_path / 'secret'} is missing: the agent refuses to start without the "
        "cluster secret",
        f"tls.ca_file: {tmp_path / 'pki/ca.crt'} is missing: the agent refuses to start without it",
    ]


def test_a_directory_where_a_file_belongs(tmp_path: Path) -> None:
    (tmp_path / "keydir").mkdir()
    d = _ready(tmp_path)
    d["tls"] = {**d["tls"], "key_file": str(tmp_path / "keydir")}
    (tmp_path / "secret").unlink()
    (tmp_path / "secret").mkdir()
    found = _find(tmp_path, d)
    assert found.warnings == [
        f"secret_file: {tmp_path / 'secret'} is a directory: the agent refuses to start without the "
        "cluster secret",
        f"tls.key_file: {tmp_path / 'keydir'} is a directory: the agent refuses to start without it",
    ]


def test_a_file_this_user_cannot_read(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unreadable = tmp_path / "cli.key"
        unreadable.write_text("x")
        unreadable.chmod(0)
    else:  # root reads any mode; procfs still refuses it this write-only file
        unreadable = Path("/proc/sys/vm/compact_memory")
        if file_problem(unreadable) is None:
            pytest.skip("no file here that root cannot read")
    assert file_problem(unreadable).startswith("is not readable (permission denied; mode ")
    d = _ready(tmp_path)
    d["tls"] = {**d["tls"], "cli_key_file": str(unreadable)}
    found = _find(tmp_path, d)
    assert found.warnings == [f"tls.cli_key_file: {unreadable} {file_problem(unreadable)}: "
                              "`hacluster --config` on this server cannot use it (pass --cert and --key)"]


def test_file_problem_reasons(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert file_problem(tmp_path / "f") is None
    assert file_problem(tmp_path / "nope") == "is missing"
    assert file_problem(tmp_path / "f" / "below") == "is missing (a parent is not a directory)"
    assert file_problem(tmp_path) == "is a directory"
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert file_problem(tmp_path / "dangling") == "is missing"
    os.mkfifo(tmp_path / "fifo")
    assert file_problem(tmp_path / "fifo") == "is not a regular file"  # and opening it would hang


def test_the_secret_is_checked_as_the_agent_would(tmp_path: Path) -> None:
    d = _ready(tmp_path)
    (tmp_path / "secret").chmod(0o644)
    found = _find(tmp_path, d)
    assert len(found.warnings) == 1 and "readable by group or others" in found.warnings[0]
    assert found.warnings[0].startswith("secret_file: ") and "chmod 600" in found.warnings[0]
    (tmp_path / "secret").chmod(0o600)
    (tmp_path / "secret").write_text("short\n")
    assert ["needs at least 16" in w for w in _find(tmp_path, d).warnings] == [True]
    assert SECRET not in repr(_find(tmp_path, _ready(tmp_path, cluster="elsewhere")))  # never shown


def test_certificates_the_agent_would_refuse(tmp_path: Path) -> None:
    other_cluster = _find(tmp_path, _ready(tmp_path, cluster="ward-b"))
    assert len(other_cluster.warnings) == 1
    assert other_cluster.warnings[0].startswith("tls.cert_file ")
    assert "is for cluster 'ward', this is 'ward-b'" in other_cluster.warnings[0]
    assert other_cluster.warnings[0].endswith(": the agent refuses to start with it")
    d = _ready(tmp_path)
    d["tls"] = {**d["tls"], "cert_file": str(PKI.files("n2").cert_file),
                "key_file": str(PKI.files("n2").key_file)}
    (w,) = _find(tmp_path, d).warnings
    assert "names node 'n2', not 'n1'" in w


def _exec(command: list[str], **extra: object) -> dict:
    return {"name": f"c{len(command[0])}", "kind": "exec", "command": command, **extra}


def test_exec_check_commands(tmp_path: Path) -> None:
    script = tmp_path / "check-pacs"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ward-probe").write_text("#!/bin/sh\n")
    (bin_dir / "ward-probe").chmod(0o755)
    checks = [{"name": "tcp", "kind": "tcp", "port": 104},
              {"name": "ok-abs", "kind": "exec", "command": ["/bin/sh", "-c", "true"]},
              {"name": "ok-name", "kind": "exec", "command": ["sh", "-c", "true"]},
              {"name": "gone", "kind": "exec", "command": ["/opt/nowhere/check"]},
              {"name": "noexec", "kind": "exec", "command": [str(script)]},
              {"name": "noname", "kind": "exec", "command": ["hacluster-no-such-check"]},
              {"name": "ownpath", "kind": "exec", "command": ["ward-probe"], "env": {"PATH": str(bin_dir)}},
              {"name": "dir", "kind": "exec", "command": [str(tmp_path)]},
              {"name": "rel", "kind": "exec", "command": ["./check-pacs"]}]
    found = _find(tmp_path, _ready(tmp_path, checks=checks))
    assert found.warnings == [
        "checks[3].command[0]: /opt/nowhere/check is missing: check gone fails until it is",
        f"checks[4].command[0]: {script} is not executable: check noexec fails until it is",
        "checks[5].command[0]: hacluster-no-such-check is not found on the check's PATH "
        "(/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin): check noname fails until "
        "it is installed",
        f"checks[7].command[0]: {tmp_path} is a directory: check dir fails until it is",
        "checks[8].command[0]: ./check-pacs is a relative path: the agent runs it from its own working "
        "directory (/ under systemd), not this one; give it in full",
    ]


@pytest.mark.parametrize(("addresses", "expect"), [
    (["10.0.0.11/24"], []),
    (["10.0.0.11/16", "fe80::1/64"], []),  # inside a wider subnet
    (["192.168.7.5/24", "10.9.0.1/16", "10.0.0.100/24"],  # the VIP itself (held now) is no subnet
     ["vips[0].address: 10.0.0.100 is outside eth0's subnets here (10.9.0.0/16, 192.168.7.0/24): "
      "clients on them would not find it by ARP; check the address or vips[0].interface"]),
    (["fe80::1/64", "10.0.0.100/24"],
     ["vips[0].address: eth0 has no IPv4 address here: hosts on its network cannot be told where "
      "10.0.0.100 is; check vips[0].interface"]),
])
def test_a_vip_outside_its_interfaces_subnets(tmp_path: Path, addresses: list[str],
                                              expect: list[str]) -> None:
    found = _find(tmp_path, _ready(tmp_path), FakeInterfaces({"eth0": addresses}))
    assert found.warnings == expect and found.notes == []


def test_an_absent_or_unreadable_interface_is_a_note_and_asked_once(tmp_path: Path) -> None:
    vips = [{"address": "10.0.0.100", "prefix": 24, "interface": "bond0"},
            {"address": "10.0.0.101", "prefix": 24, "interface": "bond0"},
            {"address": "10.0.1.100", "prefix": 24, "interface": "vlan7"}]
    fake = FakeInterfaces({"bond0": None, "vlan7": InterfaceUnreadable("no `ip` command (iproute2)")})
    found = _find(tmp_path, _ready(tmp_path, vips=vips), fake)
    assert found.warnings == []
    assert found.notes == [
        "vips[0].interface: interface bond0 not present here: subnet not checked",
        "vips[1].interface: interface bond0 not present here: subnet not checked",
        "vips[2].interface: cannot read vlan7's addresses (no `ip` command (iproute2)): subnet not checked",
    ]
    assert fake.asked == ["bond0", "vlan7"]


def test_local_interfaces_on_this_host() -> None:
    lo = LocalInterfaces().addresses("lo")
    assert lo is not None and ipaddress.ip_interface("127.0.0.1/8") in lo
    assert LocalInterfaces().addresses("hacl-nosuch0") is None


def test_local_interfaces_when_ip_misbehaves() -> None:
    def answer(code: int, out: str, err: str = ""):
        return lambda argv, **kw: subprocess.CompletedProcess(argv, code, out, err)

    with pytest.raises(InterfaceUnreadable, match="unexpected output"):
        LocalInterfaces(answer(0, "not json")).addresses("lo")
    with pytest.raises(InterfaceUnreadable, match="Device went away"):
        LocalInterfaces(answer(1, "", "Device went away\n")).addresses("lo")
    got = LocalInterfaces(answer(0, '[{"addr_info": [{"family": "inet", "local": "10.1.2.3", '
                                    '"prefixlen": 22}, {"family": "link"}]}]')).addresses("lo")
    assert got == [ipaddress.ip_interface("10.1.2.3/22")]


def test_validate_on_this_host_with_a_vip_on_loopback(tmp_path: Path) -> None:
    """No fake: the real interface lookup says 127.0.0.100 is in lo's 127.0.0.0/8, and
    10.99.0.100 is not."""
    good = _ready(tmp_path, vips=[{"address": "127.0.0.100", "prefix": 8, "interface": "lo"}])
    assert host_findings(parse_config(good, base=tmp_path)) == HostFindings()
    bad = _ready(tmp_path, vips=[{"address": "10.99.0.100", "prefix": 24, "interface": "lo"}])
    (w,) = host_findings(parse_config(bad, base=tmp_path)).warnings
    assert w.startswith("vips[0].address: 10.99.0.100 is outside lo's subnets here (127.0.0.0/8")
