"""Every agent command finds its agent without flags (--config, else $HACLUSTER_CONFIG, else
/etc/hacluster/hacluster.yaml), and `status --json` is the view plain `status` shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hacluster.admin import AdminService, start_admin
from hacluster_cli import connect
from hacluster_cli.main import cli

from .pki import PKI
from .test_admin import STATUS


@pytest.fixture
def port() -> Iterator[int]:
    """An agent's admin API (n1's certificate) on loopback: its Status is test_admin.STATUS."""
    server, port = start_admin("127.0.0.1:0", AdminService(lambda: STATUS, PKI.authority()),
                               PKI.server("n1"))
    yield port
    server.stop(None)


def _config(path: Path, grpc_port: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""\
cluster: ward
node_id: n1
members:
  - {{id: n1, address: 127.0.0.1, raft_port: 17100, grpc_port: {grpc_port}}}
  - {{id: n2, address: 127.0.0.2, raft_port: 17100, grpc_port: 17101}}
  - {{id: n3, address: 127.0.0.3, raft_port: 17100, grpc_port: 17101}}
data_dir: ./data
secret_file: ./secret
tls: {json.dumps(PKI.tls_doc())}
""")
    return str(path)


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $HACLUSTER_CONFIG, and the default config is a path that does not exist (yet)."""
    monkeypatch.delenv(connect.CONFIG_ENV, raising=False)
    default = tmp_path / "etc" / "hacluster.yaml"
    monkeypatch.setattr(connect, "DEFAULT_CONFIG", str(default))
    return default


def _agent_node(*args: str) -> tuple[int, str]:
    """`hacluster status --agent --json ARGS`: (exit code, the node that answered or stderr)."""
    r = CliRunner().invoke(cli, ["status", "--agent", "--json", *args])
    return r.exit_code, (json.loads(r.stdout)["node"] if r.exit_code == 0 else r.stderr)


def test_without_flags_the_default_config_is_used(port: int, nowhere: Path) -> None:
    _config(nowhere, port)
    assert _agent_node() == (0, "n1")


def test_hacluster_config_comes_before_the_default(port: int, nowhere: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _config(nowhere, 1)  # the default names a port where nothing listens: not used
    monkeypatch.setenv(connect.CONFIG_ENV, _config(tmp_path / "env.yaml", port))
    assert _agent_node() == (0, "n1")


def test_config_option_comes_before_the_environment(port: int, nowhere: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(connect.CONFIG_ENV, str(tmp_path / "missing.yaml"))
    assert _agent_node("--config", _config(tmp_path / "given.yaml", port)) == (0, "n1")


def test_every_agent_command_uses_the_lookup(port: int, nowhere: Path) -> None:
    _config(nowhere, port)
    # this agent serves Status only: the others answer UNAVAILABLE, which the CLI reports
    # naming the agent it asked -- the one the default config names
    for args in (["members"], ["checks"], ["backends"], ["events"], ["drain", "n2"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0 or f"127.0.0.1:{port}" in r.stderr, (args, r.output)
        assert r.exit_code != 2, (args, r.output)


def test_no_config_anywhere_says_where_it_looked_and_how_to_fix_it(nowhere: Path) -> None:
    code, err = _agent_node()
    assert code == 2
    assert "tried --config (not given), $HACLUSTER_CONFIG (not set) and " \
           f"{nowhere} (no such file)" in err
    assert "Fix:" in err and "--config FILE" in err and "HACLUSTER_CONFIG=FILE" in err
    assert "--admin HOST:PORT with --ca, --cert and --key" in err


def test_a_missing_file_in_the_environment_is_named(nowhere: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(connect.CONFIG_ENV, str(tmp_path / "typo.yaml"))
    code, err = _agent_node()
    assert code == 2 and f"HACLUSTER_CONFIG={tmp_path / 'typo.yaml'}: no such file" in err


def test_admin_with_full_credentials_needs_no_config(port: int, nowhere: Path) -> None:
    f = PKI.files("alice")
    assert _agent_node("--admin", f"127.0.0.1:{port}", "--ca", str(f.ca_file), "--cert",
                       str(f.cert_file), "--key", str(f.key_file)) == (0, "n1")


def test_the_help_documents_the_lookup() -> None:
    top = " ".join(CliRunner().invoke(cli, ["--help"]).output.split())
    assert "--config FILE, else the file named by $HACLUSTER_CONFIG, else " \
           "/etc/hacluster/hacluster.yaml" in top
    members = " ".join(CliRunner().invoke(cli, ["members", "--help"]).output.split())
    assert "(default: $HACLUSTER_CONFIG, else /etc/hacluster/hacluster.yaml)" in members


# ------------------------------------------------------------------ status --json


def test_status_json_is_the_cluster_view_and_agent_json_the_agent_view(port: int,
                                                                       nowhere: Path) -> None:
    _config(nowhere, port)
    plain = CliRunner().invoke(cli, ["status", "--json"])
    view = json.loads(plain.stdout)
    assert list(view)[:3] == ["cluster", "asked", "asked_role"] and view["asked"] == "n1"
    assert view == json.loads(CliRunner().invoke(cli, ["status", "--cluster", "--json"]).stdout)
    table = CliRunner().invoke(cli, ["status"]).stdout
    assert table.startswith(f"cluster {view['cluster']}: leader n1")
    agent = json.loads(CliRunner().invoke(cli, ["status", "--agent", "--json"]).stdout)
    assert agent["node"] == "n1" and "asked" not in agent


def test_the_status_help_says_one_thing() -> None:
    text = " ".join(CliRunner().invoke(cli, ["status", "--help"]).output.split())
    assert "`status --json` is the cluster view, `status --agent --json` the agent view" in text
    assert "today" not in text and "go on working" not in text
