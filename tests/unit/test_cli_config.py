"""`hacluster config validate`: ok files pass, every error of a bad file is listed."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from hacluster_cli.main import cli

from .pki import PKI

GOOD = """\
cluster: lab
node_id: n1
members:
  - {id: n1, address: 127.0.0.1, raft_port: 17100, grpc_port: 17101}
  - {id: n2, address: 127.0.0.2, raft_port: 17100, grpc_port: 17101}
  - {id: n3, address: 127.0.0.3, raft_port: 17100, grpc_port: 17101}
vips:
  - {address: 10.99.0.100, prefix: 24, interface: eth0}
data_dir: ./data
secret_file: ./secret
tls: {ca_file: pki/ca.crt, cert_file: pki/n1.crt, key_file: pki/n1.key}
"""

# Schema errors (pydantic) are reported together...
SCHEMA_ERRORS = """\
cluster: lab
node_id: n1
colour: blue
members:
  - {id: n1, address: 127.0.0.1, raft_port: 17100, grpc_port: 17101}
  - {id: n2, address: 127.0.0.2, raft_port: 0, grpc_port: 17101}
vips:
  - {address: 10.99.0.100, prefix: 0, interface: eth0}
timing: {heartbeat_ms: 1}
data_dir: ./data
"""
SCHEMA_PATHS = ["colour:", "members[1].raft_port:", "vips[0].prefix:", "timing.heartbeat_ms:",
                "secret_file:", "tls:"]

# ...and so are the semantic ones, once the schema is right.
SEMANTIC_ERRORS = """\
cluster: lab
node_id: n9
members:
  - {id: n1, address: 127.0.0.1, raft_port: 17100, grpc_port: 17101}
  - {id: n1, address: 127.0.0.2, raft_port: 17100, grpc_port: 17100}
  - {id: n3, address: not-an-ip, raft_port: 17100, grpc_port: 17101}
vips:
  - {address: 127.0.0.1, prefix: 24, interface: eth0}
timing: {lease_ms: 300}
data_dir: ./data
secret_file: ./secret
tls: {ca_file: pki/ca.crt, cert_file: pki/n1.crt, key_file: pki/n1.key}
"""
SEMANTIC_PATHS = ["node_id:", "members[1].id:", "members[1].grpc_port:", "members[2].address:",
                  "vips[0].address:", "timing: lease_ms"]


def _validate(tmp_path: Path, text: str, *extra: str) -> tuple[str, object]:
    path = tmp_path / "hacluster.yaml"
    path.write_text(text)
    return str(path), CliRunner().invoke(cli, ["config", "validate", str(path), *extra])


def _on_this_host(tmp_path: Path, text: str = GOOD) -> str:
    """GOOD as on its server: the test PKI's certificates (cluster ward), the secret in place,
    the VIP on loopback's subnet."""
    secret = tmp_path / "secret"
    secret.write_text("a-secret-of-thirty-two-characters\n")
    secret.chmod(0o600)
    tls = PKI.tls_doc(cli=None)
    return (text.replace("cluster: lab", "cluster: ward")
            .replace("10.99.0.100, prefix: 24, interface: eth0", "127.0.0.100, prefix: 8, interface: lo")
            .replace("{ca_file: pki/ca.crt, cert_file: pki/n1.crt, key_file: pki/n1.key}",
                     json.dumps(tls)))


def test_good_file(tmp_path: Path) -> None:
    path, result = _validate(tmp_path, _on_this_host(tmp_path), "--strict")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{path}: ok (cluster ward, node n1, 3 members, 1 VIP)"]


def test_host_findings_are_warnings_unless_strict(tmp_path: Path) -> None:
    """Away from its server (no secret, no certificates, no such interface) a file is still
    valid: warnings and a note, exit 0; --strict fails on the warnings."""
    text = GOOD.replace("interface: eth0", "interface: hacl-nosuch0")
    path, result = _validate(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{path}: ok (cluster lab, node n1, 3 members, 1 VIP)",
        f"  warning: secret_file: {tmp_path / 'secret'} is missing: the agent refuses to start "
        "without the cluster secret",
        *[f"  warning: tls.{k}: {tmp_path / 'pki' / f} is missing: the agent refuses to start without it"
          for k, f in (("ca_file", "ca.crt"), ("cert_file", "n1.crt"), ("key_file", "n1.key"))],
        "  note: vips[0].interface: interface hacl-nosuch0 not present here: subnet not checked",
    ]
    _, strict = _validate(tmp_path, text, "--strict")
    assert strict.exit_code == 1
    assert strict.stdout.startswith(f"{path}: not ok with --strict (cluster lab")
    _, as_json = _validate(tmp_path, text, "--strict", "--json")
    got = json.loads(as_json.stdout)
    assert as_json.exit_code == 1 and got["ok"] is False and got["errors"] == []
    assert [w.split(":")[0] for w in got["warnings"]] == ["secret_file", "tls.ca_file", "tls.cert_file",
                                                          "tls.key_file"]
    assert got["notes"] == ["vips[0].interface: interface hacl-nosuch0 not present here: subnet not checked"]


def test_a_vip_outside_its_interfaces_subnet(tmp_path: Path) -> None:
    text = _on_this_host(tmp_path).replace("127.0.0.100, prefix: 8", "10.99.0.100, prefix: 24")
    path, result = _validate(tmp_path, text)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].startswith(
        "  warning: vips[0].address: 10.99.0.100 is outside lo's subnets here (127.0.0.0/8")


def test_a_typo_gets_the_nearest_key(tmp_path: Path) -> None:
    _, result = _validate(tmp_path, GOOD.replace("node_id: n1", "nodeid: n1"))
    assert result.exit_code == 1
    assert "  nodeid: extra inputs are not permitted, got 'n1'; did you mean `node_id`?" in (
        result.output.splitlines())
    typo = GOOD.replace("raft_port: 17100, grpc_port: 17101}\n  - {id: n2",
                        "raft_prot: 17100, grpc_port: 17101}\n  - {id: n2")
    _, result = _validate(tmp_path, typo, "--json")
    assert "members[0].raft_prot: extra inputs are not permitted, got 17100; did you mean `raft_port`?" in (
        json.loads(result.stdout)["errors"])


def test_good_file_with_warning(tmp_path: Path) -> None:
    two = GOOD.replace("  - {id: n3, address: 127.0.0.3, raft_port: 17100, grpc_port: 17101}\n",
                       "")
    _, result = _validate(tmp_path, two)
    assert result.exit_code == 0, result.output
    assert "2 members" in result.stdout
    assert "  warning: members: 2 voters" in result.stdout


def _assert_all_listed(result: object, paths: list[str]) -> None:
    assert result.exit_code == 1, result.output
    for p in paths:
        assert any(line.lstrip().startswith(p) for line in result.output.splitlines()), (
            f"{p!r} not listed in:\n{result.output}")


def test_schema_errors_all_listed(tmp_path: Path) -> None:
    path, result = _validate(tmp_path, SCHEMA_ERRORS)
    _assert_all_listed(result, SCHEMA_PATHS)
    assert result.output.startswith(f"{path}: ")


def test_semantic_errors_all_listed(tmp_path: Path) -> None:
    _, result = _validate(tmp_path, SEMANTIC_ERRORS)
    _assert_all_listed(result, SEMANTIC_PATHS)


def test_json(tmp_path: Path) -> None:
    path, result = _validate(tmp_path, _on_this_host(tmp_path), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "file": path, "ok": True, "cluster": "ward", "node_id": "n1", "members": 3, "vips": 1,
        "warnings": [], "notes": [], "errors": []}
    _, result = _validate(tmp_path, SEMANTIC_ERRORS, "--json")
    assert result.exit_code == 1
    got = json.loads(result.stdout)
    assert got["ok"] is False
    for p in SEMANTIC_PATHS:
        assert any(e.startswith(p) for e in got["errors"]), p


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "(file): cannot read" in result.output
    _, result = _validate(tmp_path, "cluster: [unclosed\n")
    assert result.exit_code == 1 and "not valid YAML" in result.output


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*path, name))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*path, name))
    return out


def test_every_command_has_help_with_an_example() -> None:
    commands = _commands(cli)
    assert {("failover",), ("maintenance",), ("events",), ("certs", "issue"), ("audit", "verify"),
            ("status",), ("drain",)} <= set(commands)
    for path in [(), *commands]:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, path
    assert "4  agent refused" in CliRunner().invoke(cli, ["--help"]).output
    assert CliRunner().invoke(cli, ["version"]).output.startswith("hacluster ")
