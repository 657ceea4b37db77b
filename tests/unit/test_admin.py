"""The admin API end to end on loopback: the CLI's status command against serve_admin."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from hacluster.admin import AdminBindError, AdminService, start_admin, status_to_pb
from hacluster.api import admin_pb2, admin_pb2_grpc
from hacluster.model import AgentStatus, MemberStatus, Role, SyncState, SyncStatus, VipStatus
from hacluster_cli.client import status_from_pb
from hacluster_cli.main import cli
from hacluster_cli.render import render_status

from .pki import PKI

STATUS = AgentStatus(
    node="n1", cluster="lab", version="0.1.0", role=Role.LEADER, term=7, leader="n1",
    lease_ok=True, lease_remaining_ms=143.0, has_quorum=True, handoff=False,
    vips=(VipStatus("10.99.0.100", 24, "eth0", True),
          VipStatus("10.99.0.101", 24, "eth0", False)),
    members=(MemberStatus("n1", "127.0.0.1:17100", True, True, None),
             MemberStatus("n2", "127.0.0.2:17100", False, True, 12.0),
             MemberStatus("n3", "127.0.0.3:17100", False, False, None)),
    sentence="leader, lease ok, holds 10.99.0.100, table gen 42",
    commit_index=120, last_applied=119, epoch_term=7, generation=42, uptime_s=3725.0,
)

# The connection-state sync as each kind of agent reports it (STATUS itself has none: an
# agent older than the field).
SYNC_OK = SyncStatus(SyncState.OK, "FTFW over unicast on eth0 (10.99.0.2), port 3780", 1, 4.5)
SYNC_DOWN = SyncStatus(SyncState.DOWN, "conntrackd exited with status 1: cannot bind", 3)
SYNC_OFF = SyncStatus(SyncState.OFF, "conntrack_sync: off")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as(name: str = "alice", where: str = "ca") -> tuple[str, ...]:
    """CLI options presenting `name`'s certificate (alice admin, rita reader)."""
    f = PKI.files(name, where)
    return ("--ca", str(f.ca_file), "--cert", str(f.cert_file), "--key", str(f.key_file))


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    servers: list[grpc.Server] = []

    def start(provider: Callable[[], AgentStatus] = lambda: STATUS) -> int:
        server, port = start_admin("127.0.0.1:0", AdminService(provider, PKI.authority()),
                                   PKI.server("n1"))
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.stop(None)


def _status(*args: str) -> object:
    return CliRunner().invoke(cli, ["status", *args])


def test_status_table(serve: Callable[..., int]) -> None:
    port = serve()
    result = _status("--agent", "--admin", f"127.0.0.1:{port}", *_as())
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in ("n1  (cluster lab, hacluster 0.1.0, up 1h02m)", "leader, term 7",
                     "ok, 143 ms left", "VIPs held  10.99.0.100/24", STATUS.sentence,
                     "commit index 120, applied 119", "epoch term 7, generation 42"):
        assert expected in out, f"{expected!r} not in:\n{out}"
    rows = {line.split()[0]: line.split() for line in out.splitlines()[-3:]}
    assert rows["n1"][2] == "self"
    assert rows["n2"][2:] == ["up", "12", "ms", "ago"]
    assert rows["n3"][2:] == ["DOWN", "-"]
    assert "10.99.0.101/24  eth0       -" in out


@pytest.mark.parametrize("sync, line", [
    (SYNC_OK, "connection sync  ok (FTFW over unicast on eth0 (10.99.0.2), port 3780; restarted 1 "
              "time, last claim's commit took 4.5 ms)"),
    (SYNC_DOWN, "connection sync  DOWN (conntrackd exited with status 1: cannot bind; restarted 3 "
                "times) — established flows through the VIP will break when it moves"),
    (SYNC_OFF, "connection sync  off (conntrack_sync: off)"),
], ids=["ok", "down", "off"])
def test_status_table_shows_the_connection_sync(sync: SyncStatus, line: str) -> None:
    out = render_status(dataclasses.replace(STATUS, connection_sync=sync))
    assert line in out.splitlines(), out
    assert "VIPs held        10.99.0.100/24" in out  # the block stays aligned


def test_status_table_of_an_agent_without_connection_sync_says_nothing_of_it() -> None:
    assert "connection sync" not in render_status(STATUS)


def test_status_json(serve: Callable[..., int]) -> None:
    port = serve()
    result = _status("--agent", "--admin", f"127.0.0.1:{port}", *_as(), "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert list(got) == [f.name for f in dataclasses.fields(AgentStatus)]
    assert got["role"] == "leader"
    assert got["leader"] == "n1" and got["term"] == 7 and got["generation"] == 42
    assert got["vips"][0] == {"address": "10.99.0.100", "prefixlen": 24, "interface": "eth0",
                              "held": True, "claimed_at_unix_ms": None, "waiting": ""}
    assert [m["last_ack_ms"] for m in got["members"]] == [None, 12.0, None]
    assert [m["connected"] for m in got["members"]] == [True, True, False]


def test_status_through_config(serve: Callable[..., int], tmp_path: Path) -> None:
    port = serve()
    tls = PKI.tls_doc()
    (tmp_path / "ha.yaml").write_text(f"""\
cluster: ward
node_id: n1
members:
  - {{id: n1, address: 127.0.0.1, raft_port: 17100, grpc_port: {port}}}
  - {{id: n2, address: 127.0.0.2, raft_port: 17100, grpc_port: 17101}}
  - {{id: n3, address: 127.0.0.3, raft_port: 17100, grpc_port: 17101}}
data_dir: ./data
secret_file: ./secret
tls: {json.dumps(tls)}
""")
    result = _status("--agent", "--config", str(tmp_path / "ha.yaml"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["node"] == "n1"


def test_the_cli_refuses_a_certificate_its_ca_did_not_sign(serve: Callable[..., int]) -> None:
    port = serve()
    result = _status("--admin", f"127.0.0.1:{port}", *_as("alice", "rogue"))
    assert result.exit_code == 2, result.output
    assert "was not issued by CA" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("where", ["rogue", "other"])
def test_the_agent_refuses_a_certificate_from_another_ca(serve: Callable[..., int], where: str) -> None:
    port = serve()
    with grpc.secure_channel(f"127.0.0.1:{port}", PKI.client("alice", where)) as channel:
        with pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


class _Ctx:
    def __init__(self, pem: bytes | None):
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {} if self._pem is None else {"x509_pem_cert": [self._pem]}


def test_the_authority_checks_cluster_and_role_from_the_certificate() -> None:
    auth = PKI.authority()
    alice = PKI.files("alice").cert_file.read_bytes()
    who, refusal = auth.check(_Ctx(alice), {"admin"}, "act")
    assert refusal is None and (who.role, who.name) == ("admin", "alice")
    _, refusal = auth.check(_Ctx(PKI.files("rita").cert_file.read_bytes()), {"admin"}, "act")
    assert refusal == "reader 'rita' may not act (needs admin)"
    _, refusal = auth.check(_Ctx(PKI.files("alice", "other").cert_file.read_bytes()), {"admin"}, "act")
    assert refusal == "certificate of cluster 'elsewhere', this is 'ward'"
    _, refusal = auth.check(_Ctx(None), {"admin"}, "act")
    assert refusal.startswith("no client certificate")


def test_a_call_without_a_client_certificate_cannot_even_connect(serve: Callable[..., int]) -> None:
    port = serve()
    anonymous = grpc.ssl_channel_credentials(PKI.files("alice").ca_file.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", anonymous) as channel:
        with pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_call_is_not_served(serve: Callable[..., int]) -> None:
    port = serve()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_reader_may_read_but_not_act(serve: Callable[..., int]) -> None:
    port = serve()
    assert _status("--agent", "--admin", f"127.0.0.1:{port}", *_as("rita")).exit_code == 0
    result = CliRunner().invoke(cli, ["drain", "n2", "--admin", f"127.0.0.1:{port}", *_as("rita")])
    assert result.exit_code == 4, result.output
    assert "reader 'rita' may not act on the cluster (needs admin)" in result.stderr


def test_no_agent_is_unreachable() -> None:
    port = _free_port()
    result = _status("--admin", f"127.0.0.1:{port}", *_as(),
                     "--timeout", "5")
    assert result.exit_code == 3, result.output
    assert f"127.0.0.1:{port}" in result.stderr
    assert "is hacluster-agent running on this server?" in result.stderr
    assert f"is 127.0.0.1:{port} the member's grpc_port?" in result.stderr


def test_provider_failure_is_a_failed_call(serve: Callable[..., int]) -> None:
    def broken() -> AgentStatus:
        raise RuntimeError("no tick yet")

    port = serve(broken)
    result = _status("--admin", f"127.0.0.1:{port}", *_as())
    assert result.exit_code == 1, result.output
    assert "INTERNAL" in result.stderr and "no tick yet" in result.stderr


@pytest.mark.parametrize("args, needle", [
    ((), "no hacluster config found: tried --config"),
    (("--admin", "127.0.0.1:1"), "or give --admin HOST:PORT with --ca, --cert and --key"),
    (("--admin", "nonsense", "x"), "must be HOST:PORT"),
    (("--admin", "127.0.0.1:1", "--ca", "a", "--cert", "b"), "--cert and --key go together"),
])
def test_usage_errors_exit_2(args: tuple[str, ...], needle: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from hacluster_cli import connect  # no config anywhere (tests/unit/test_cli_lookup.py)
    monkeypatch.delenv(connect.CONFIG_ENV, raising=False)
    monkeypatch.setattr(connect, "DEFAULT_CONFIG", str(tmp_path / "none.yaml"))
    args = tuple(a for x in args for a in (_as() if x == "x" else (x,)))
    result = _status(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_a_key_file_others_can_read_exits_2(tmp_path: Path) -> None:
    f = PKI.files("alice")
    loose = tmp_path / "alice.key"
    loose.write_bytes(f.key_file.read_bytes())
    loose.chmod(0o644)
    result = _status("--admin", "127.0.0.1:1", "--ca", str(f.ca_file), "--cert", str(f.cert_file),
                     "--key", str(loose))
    assert result.exit_code == 2, result.output
    assert "cannot use the certificate: key_file:" in result.stderr and "0644" in result.stderr


def test_bad_config_exits_2_with_every_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("cluster: lab\nnode_id: n9\nmembers: []\n")
    result = _status("--config", str(tmp_path / "bad.yaml"))
    assert result.exit_code == 2, result.output
    for path in ("members:", "data_dir:", "secret_file:", "tls:"):
        assert f"\n  {path}" in result.stderr, result.stderr


def test_status_survives_the_wire_unchanged() -> None:
    assert status_from_pb(status_to_pb(STATUS)) == STATUS
    lost = dataclasses.replace(STATUS, role=Role.CANDIDATE, leader=None, lease_ok=False)
    assert status_from_pb(status_to_pb(lost)) == lost


@pytest.mark.parametrize("sync", [SYNC_OK, SYNC_DOWN, SYNC_OFF,
                                  SyncStatus(SyncState.OK, "", 0, 0.0)],  # 0 ms is not "none"
                         ids=["ok", "down", "off", "zero-commit"])
def test_connection_sync_survives_the_wire_unchanged(sync: SyncStatus) -> None:
    st = dataclasses.replace(STATUS, connection_sync=sync)
    assert status_from_pb(status_to_pb(st)) == st


def test_an_agent_without_connection_sync_or_with_a_state_unknown_here_shows_none() -> None:
    pb = status_to_pb(STATUS)
    assert not pb.HasField("connection_sync")  # an older agent's reply looks like this
    assert status_from_pb(pb).connection_sync is None
    pb = status_to_pb(dataclasses.replace(STATUS, connection_sync=SYNC_OK))
    pb.connection_sync.state = "degraded"  # a newer agent's
    assert status_from_pb(pb).connection_sync is None


def test_status_json_carries_connection_sync(serve: Callable[..., int]) -> None:
    port = serve(lambda: dataclasses.replace(STATUS, connection_sync=SYNC_DOWN))
    result = _status("--agent", "--admin", f"127.0.0.1:{port}", *_as(), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["connection_sync"] == {
        "state": "down", "detail": SYNC_DOWN.detail, "restarts": 3, "last_commit_ms": None}
    port = serve()
    result = _status("--agent", "--admin", f"127.0.0.1:{port}", *_as(), "--json")
    assert json.loads(result.stdout)["connection_sync"] is None


def test_every_admin_method_is_authenticated() -> None:
    methods = admin_pb2.DESCRIPTOR.services_by_name["Admin"].methods
    assert methods
    for m in methods:
        assert getattr(getattr(AdminService, m.name), "_hacluster_guarded", False), m.name


def test_port_in_use_fails_clearly(serve: Callable[..., int]) -> None:
    port = serve()
    service = AdminService(lambda: STATUS, PKI.authority())
    with pytest.raises(AdminBindError, match=f"cannot listen for admin calls on 127.0.0.1:{port}"):
        start_admin(f"127.0.0.1:{port}", service, PKI.server("n1"))


def test_cli_does_not_import_agent_internals() -> None:
    code = ("import sys, hacluster_cli.main; "
            "bad = [m for m in sys.modules if m in ('hacluster.agent', 'hacluster.daemon', "
            "'hacluster.admin') "
            "or m.startswith(('hacluster.consensus', 'hacluster.hostops', 'hacluster.ha'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_standard_grpc_health_service_answers_over_mtls(serve: Callable[..., int]) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from hacluster.channels import admin_channel
    port = serve()
    with admin_channel(f"127.0.0.1:{port}", PKI.client("rita")) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "hacluster.v1.Admin"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_every_domain_refusal_has_a_grpc_status() -> None:
    from hacluster.admin import REFUSAL_CODES
    from hacluster.errors import Refusal
    assert set(REFUSAL_CODES) == set(Refusal)
    assert len(set(REFUSAL_CODES.values())) == len(Refusal)  # the CLI tells them apart


DISK_PROBLEM = ("Raft data disk full (/var/lib/hacluster): 512 KiB free, the journal needs 1024 KiB; "
                "entries go into the space reserved ahead; this node steps down and stands for "
                "election last until space is freed")


def test_a_raft_disk_problem_survives_the_wire_and_leads_the_status_screen() -> None:
    st = dataclasses.replace(STATUS, raft_disk_problem=DISK_PROBLEM, journal_write_errors=2)
    assert status_from_pb(status_to_pb(st)) == st
    assert status_from_pb(status_to_pb(STATUS)).raft_disk_problem == ""  # and an older agent's
    first = render_status(st).splitlines()[0]
    assert first.startswith("RAFT DISK") and "512 KiB free" in first
    assert "RAFT DISK" not in render_status(STATUS)
