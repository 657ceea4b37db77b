"""A failed TLS handshake is one clear line on the CLI's stderr: no gRPC C-core log lines,
no ": OK" left over from gRPC's status text, the CA file it trusted named."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hacluster.admin import AdminService, start_admin
from hacluster_cli.client import AgentRefused, AgentUnreachable, TlsFailed, _call_error

from .pki import PKI
from .test_admin import STATUS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def agent_port() -> Iterator[int]:
    """An agent's admin API whose certificate the cluster "ward"'s CA signed."""
    server, port = start_admin("127.0.0.1:0", AdminService(lambda: STATUS, PKI.authority()),
                               PKI.server("n1"))
    yield port
    server.stop(None)


def _cli(*args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it: its own process, gRPC's logging variables unset (this
    test process has them set, by importing hacluster_cli) unless given in `env_extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "cli")])
    return subprocess.run([sys.executable, "-m", "hacluster_cli.main", *args], capture_output=True,
                          text=True, env={**env, **env_extra}, timeout=60, stdin=subprocess.DEVNULL)


def _status_trusting_another_ca(port: int, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """Trusting another CA (one that also calls itself "ward"): the agent's certificate fails."""
    rogue = PKI.rogue_dir
    return _cli("status", "--agent", "--timeout", "10", "--admin", f"127.0.0.1:{port}",
                "--ca", str(rogue / "ca.crt"), "--cert", str(rogue / "alice.crt"),
                "--key", str(rogue / "alice.key"), **env_extra)


def test_a_wrong_ca_is_one_line_that_names_it(agent_port: int) -> None:
    r = _status_trusting_another_ca(agent_port)
    assert r.returncode == 4, r
    assert r.stdout == ""
    assert r.stderr == (f"Error: cannot reach agent 127.0.0.1:{agent_port}: TLS handshake failed "
                        f"(certificate not signed by the cluster CA {PKI.rogue_dir / 'ca.crt'}?)\n")


def test_the_operators_own_grpc_logging_is_left_alone(agent_port: int) -> None:
    r = _status_trusting_another_ca(agent_port, GRPC_VERBOSITY="INFO")
    assert r.returncode == 4 and "Handshake failed" in r.stderr  # gRPC's own line, as asked
    assert r.stderr.splitlines()[-1].startswith("Error: cannot reach agent")


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("details, kind, line", [
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:7001: Tls handshake "
     "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
     "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK", TlsFailed,
     "cannot reach agent 10.0.0.1:7001: TLS handshake failed (certificate not signed by the "
     "cluster CA?)"),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:7001: Custom "
     "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed.",
     TlsFailed, "cannot reach agent 10.0.0.1:7001: TLS handshake failed (the agent's certificate "
     "does not name 10.0.0.1; ask it at an address its certificate names, see hacluster certs show)"),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:7001: Ssl handshake "
     "failed: SSL_ERROR_SSL: WRONG_VERSION_NUMBER: OK", TlsFailed,
     "cannot reach agent 10.0.0.1:7001: TLS handshake failed (Ssl handshake failed: SSL_ERROR_SSL: "
     "WRONG_VERSION_NUMBER)"),
    ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:10.0.0.1:7001: Socket "
     "closed", AgentUnreachable, "cannot reach agent 10.0.0.1:7001: it closed the connection (does "
     "it trust the CA that signed our certificate? is it stopping? is 10.0.0.1:7001 its grpc_port?)"),
])
def test_each_handshake_failure_is_one_line(details: str, kind: type, line: str) -> None:
    e = _call_error("10.0.0.1:7001", 3.0, _RpcError(UNAVAILABLE, details))
    assert type(e) is kind and str(e) == line
    if isinstance(e, TlsFailed):
        assert isinstance(e, AgentRefused) and e.exit_code == 4


def test_the_ca_file_goes_where_the_cause_names_it() -> None:
    e = TlsFailed("10.0.0.1:7001", "certificate not signed by the cluster CA{ca}?")
    assert e.line("/etc/hacluster/ca.pem") == ("cannot reach agent 10.0.0.1:7001: TLS handshake "
                                               "failed (certificate not signed by the cluster CA "
                                               "/etc/hacluster/ca.pem?)")


def test_no_error_keeps_grpcs_trailing_ok() -> None:
    e = _call_error("10.0.0.1:7001", 3.0, _RpcError(
        UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:7001: "
        "Failed to connect to remote host: Connection refused: OK"))
    assert isinstance(e, AgentUnreachable) and ": OK" not in str(e)
    assert str(e).startswith("cannot reach the hacluster agent at 10.0.0.1:7001: Failed to connect "
                             "to remote host: Connection refused\n")
