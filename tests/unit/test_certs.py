"""Cluster CA and mTLS certificates: real crypto, real files, one real gRPC TLS handshake."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hacluster import certs
from hacluster.certs import CertError, CertInputError, Identity
from hacluster_cli.certs_cmd import certs as certs_group


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _ext(cert: x509.Certificate, cls: type) -> object:
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA with node n1 (127.0.0.1, ::1), admin alice, reader prom; shared, read-only."""
    d = tmp_path_factory.mktemp("pki")
    certs.init_ca(d, "lab")
    certs.issue(d, d, "node", "n1", ["127.0.0.1", "::1"])
    certs.issue(d, d, "admin", "alice")
    certs.issue(d, d, "reader", "prom")
    return d


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("other")
    certs.init_ca(d, "lab")  # same cluster name, different CA: must still be refused
    certs.issue(d, d, "admin", "mallory")
    return d


# --- the library --------------------------------------------------------------------------

def test_ca_files_modes_and_extensions(pki: Path) -> None:
    assert _mode(pki / "ca.crt") == 0o644 and _mode(pki / "ca.key") == 0o600
    ca = certs.load_cert(pki / "ca.crt")
    bc = _ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = _ext(ca, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "hacluster lab"
    life = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert life == timedelta(days=certs.CA_DAYS) + certs.CLOCK_SKEW
    assert ca.not_valid_before_utc < datetime.now(UTC) - timedelta(minutes=4)


def test_node_cert_sans_ekus_and_identity(pki: Path) -> None:
    c = certs.load_cert(pki / "n1.crt")
    san = _ext(c, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["hacluster://lab/node/n1"]
    assert san.get_values_for_type(x509.DNSName) == ["n1"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert list(_ext(c, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH,
                                                          ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(c, x509.BasicConstraints).value.ca is False
    assert _ext(c, x509.KeyUsage).value.digital_signature
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "n1"
    assert certs.identity_from_cert(c) == Identity("lab", "node", "n1")
    assert certs.identity_from_cert((pki / "n1.crt").read_bytes()) == Identity("lab", "node", "n1")


@pytest.mark.parametrize("role, name", [("admin", "alice"), ("reader", "prom")])
def test_client_certs_are_client_only(pki: Path, role: str, name: str) -> None:
    c = certs.load_cert(pki / f"{name}.crt")
    assert list(_ext(c, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = _ext(c, x509.SubjectAlternativeName).value
    assert not san.get_values_for_type(x509.DNSName) and not san.get_values_for_type(x509.IPAddress)
    assert certs.identity_from_cert(c) == Identity("lab", role, name)
    assert _mode(pki / f"{name}.key") == 0o600
    life = c.not_valid_after_utc - c.not_valid_before_utc
    assert life == timedelta(days=365) + certs.CLOCK_SKEW


def test_serials_are_random_and_distinct(pki: Path) -> None:
    serials = {certs.load_cert(pki / f).serial_number for f in ("ca.crt", "n1.crt", "alice.crt", "prom.crt")}
    assert len(serials) == 4 and all(s.bit_length() > 64 for s in serials)


def test_identity_uri_round_trip_and_garbage() -> None:
    ident = Identity("prod-1.x", "reader", "grafana_2")
    assert certs.identity_from_uri(ident.uri) == ident
    assert str(ident) == "hacluster://prod-1.x/reader/grafana_2"
    for bad in ["hacluster://lab/root/x", "hacluster://lab/node/", "hacluster://lab/node/a/b",
                "hacluster:///node/n1", "https://lab/node/n1", "hacluster://lab/node/n1?x", ""]:
        with pytest.raises(CertError, match="not a hacluster identity"):
            certs.identity_from_uri(bad)


def test_identity_from_cert_refuses_none_or_several(pki: Path) -> None:
    with pytest.raises(CertError, match="no subjectAltName"):
        certs.identity_from_cert(certs.load_cert(pki / "ca.crt"))
    with pytest.raises(CertError, match="not a PEM or DER"):
        certs.identity_from_cert(b"garbage")
    # Hand-build certificates with two or with garbled hacluster URIs, signed by anything.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.now(UTC)

    def make(*uris: str) -> x509.Certificate:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris])
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
                .add_extension(san, critical=False).sign(key, hashes.SHA256()))

    with pytest.raises(CertError, match="2 hacluster:// URI SANs"):
        certs.identity_from_cert(make("hacluster://lab/node/a", "hacluster://lab/admin/b"))
    with pytest.raises(CertError, match="not a hacluster identity"):
        certs.identity_from_cert(make("hacluster://lab/god/a"))
    with pytest.raises(CertError, match="no hacluster:// URI SAN"):
        certs.identity_from_cert(make("spiffe://lab/x"))
    assert certs.identity_from_cert(make("spiffe://x/y", "hacluster://lab/admin/b")).role == "admin"


def test_verify_chain_accepts_own_ca_refuses_other_and_expired(pki: Path, other_pki: Path) -> None:
    for name in ("n1", "alice", "prom"):
        certs.verify_chain(pki / f"{name}.crt", pki / "ca.crt")
    with pytest.raises(CertError, match="not issued by CA"):
        certs.verify_chain(other_pki / "mallory.crt", pki / "ca.crt")
    with pytest.raises(CertError, match="not a CA certificate"):
        certs.verify_chain(pki / "alice.crt", pki / "n1.crt")
    with pytest.raises(CertError, match="expired"):
        certs.verify_chain(pki / "alice.crt", pki / "ca.crt", now=datetime.now(UTC) + timedelta(days=366))
    with pytest.raises(CertError, match="not valid before"):
        certs.verify_chain(pki / "alice.crt", pki / "ca.crt", now=datetime.now(UTC) - timedelta(hours=1))


def test_certs_pass_cryptography_rfc5280_client_and_server_verifiers(pki: Path) -> None:
    """The stricter webpki-style policy also accepts them: no sloppy extension, EKU or SAN."""
    from cryptography.x509.verification import PolicyBuilder, Store
    builder = PolicyBuilder().store(Store([certs.load_cert(pki / "ca.crt")]))
    node = certs.load_cert(pki / "n1.crt")
    builder.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(node, [])
    builder.build_server_verifier(x509.DNSName("n1")).verify(node, [])
    for name in ("n1", "alice", "prom"):
        verified = builder.build_client_verifier().verify(certs.load_cert(pki / f"{name}.crt"), [])
        assert any(isinstance(s, x509.UniformResourceIdentifier) for s in verified.subjects or [])


def test_init_refuses_overwrite_unless_force(tmp_path: Path) -> None:
    first = certs.init_ca(tmp_path, "lab")
    fp = first.fingerprint_sha256
    with pytest.raises(CertError, match="refusing to overwrite"):
        certs.init_ca(tmp_path, "lab")
    assert certs.describe(tmp_path / "ca.crt")["fingerprint_sha256"] == fp
    again = certs.init_ca(tmp_path, "lab", force=True, days=30)
    assert again.fingerprint_sha256 != fp and _mode(again.key) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_issue_refuses_overwrite_unless_force(tmp_path: Path) -> None:
    certs.init_ca(tmp_path, "lab")
    out = tmp_path / "out"
    a = certs.issue(tmp_path, out, "admin", "bob")
    key_before = a.key.read_bytes()
    with pytest.raises(CertError, match="refusing to overwrite"):
        certs.issue(tmp_path, out, "admin", "bob")
    assert a.key.read_bytes() == key_before
    # Only the key left behind (say a crashed run): still refused, and the key survives.
    a.cert.unlink()
    with pytest.raises(CertError, match="bob.key"):
        certs.issue(tmp_path, out, "reader", "bob")
    assert a.key.read_bytes() == key_before
    b = certs.issue(tmp_path, out, "reader", "bob", force=True)
    assert b.key.read_bytes() != key_before and _mode(b.key) == 0o600 and _mode(b.cert) == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["bob.crt", "bob.key"]


def test_key_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        certs.init_ca(tmp_path, "lab")
        issued = certs.issue(tmp_path, tmp_path / "o", "node", "n2", ["10.0.0.2"])
    finally:
        os.umask(old)
    assert _mode(tmp_path / "ca.key") == 0o600 and _mode(issued.key) == 0o600
    assert _mode(issued.cert) == 0o644


def test_issue_refuses_a_ca_key_others_can_read(tmp_path: Path) -> None:
    certs.init_ca(tmp_path, "lab")
    os.chmod(tmp_path / "ca.key", 0o640)
    with pytest.raises(CertError, match=r"ca.key is readable by group or others \(mode 0640\)"):
        certs.issue(tmp_path, tmp_path / "o", "admin", "a")


def test_issue_without_a_ca(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="no CA here"):
        certs.issue(tmp_path, tmp_path, "admin", "a")


@pytest.mark.parametrize("kwargs, field", [
    (dict(role="node", name="n1", addresses=[]), "addresses: a node certificate needs"),
    (dict(role="node", name="n1", addresses=["10.0.0.300"]), r"addresses\[0\]: not an IPv4"),
    (dict(role="node", name="n1", addresses=["::1", "host.example"]), r"addresses\[1\]"),
    (dict(role="admin", name="a", addresses=["10.0.0.1"]), "addresses: only node"),
    (dict(role="node", name="-n1", addresses=["::1"]), "name: must be"),
    (dict(role="admin", name="a/b"), "name: must be"),
    (dict(role="admin", name="x" * 64), "name: must be"),
    (dict(role="admin", name="a", days=0), "days: must be .* 1 to 825"),
    (dict(role="admin", name="a", days=826), "days: must be .* 1 to 825"),
    (dict(role="root", name="a"), "role: must be one of node, admin, reader"),
    (dict(role="admin", name="ca"), "name: 'ca' would overwrite"),
])
def test_issue_input_errors_name_the_field(pki: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        certs.issue(pki, pki, **kwargs)
    assert isinstance(info.value, CertInputError) and isinstance(info.value, CertError)


@pytest.mark.parametrize("cluster, days, field", [
    ("", 10, "cluster: must be"), ("a b", 10, "cluster: must be"), (".lab", 10, "cluster: must be"),
    ("lab", 0, "days: must be .* 1 to 3650"), ("lab", 3651, "days: must be .* 1 to 3650"),
])
def test_init_input_errors_name_the_field(tmp_path: Path, cluster: str, days: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        certs.init_ca(tmp_path, cluster, days=days)
    assert not list(tmp_path.iterdir())


def test_leaf_may_not_outlive_the_ca(tmp_path: Path) -> None:
    certs.init_ca(tmp_path, "lab", days=30)
    with pytest.raises(CertInputError, match="days: the CA expires on .* at most 29 days"):
        certs.issue(tmp_path, tmp_path / "o", "admin", "a")
    certs.issue(tmp_path, tmp_path / "o", "admin", "a", days=29)


def test_addresses_are_canonical_and_deduplicated(tmp_path: Path) -> None:
    certs.init_ca(tmp_path, "lab")
    issued = certs.issue(tmp_path, tmp_path, "node", "n3", ["fd00:0::1", "10.0.0.3", "fd00::1"])
    assert issued.addresses == ("fd00::1", "10.0.0.3")


@pytest.mark.parametrize("mode, ok", [(0o600, True), (0o400, True), (0o644, False), (0o640, False),
                                      (0o604, False), (0o620, False), (0o610, False)])
def test_check_private_file_modes(tmp_path: Path, mode: int, ok: bool) -> None:
    p = tmp_path / "secret"
    p.write_text("x")
    os.chmod(p, mode)
    if ok:
        certs.check_private_file(p)
    else:
        with pytest.raises(CertError, match=f"group or others \\(mode {mode:04o}\\); run: chmod 600"):
            certs.check_private_file(p)


def test_check_private_file_missing_and_not_regular(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="cannot read"):
        certs.check_private_file(tmp_path / "nope")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(CertError, match="not a regular file"):
        certs.check_private_file(d)


def test_describe(pki: Path) -> None:
    now = datetime.now(UTC)
    info = certs.describe(pki / "n1.crt", now=now)
    assert info["identity"] == {"uri": "hacluster://lab/node/n1", "cluster": "lab", "role": "node",
                                "name": "n1"}
    assert info["subject"] == "CN=n1,O=hacluster lab"
    assert info["issuer"] == "CN=hacluster lab CA,O=hacluster lab"
    assert info["days_left"] in (824, 825) and not info["expired"] and not info["is_ca"]
    assert info["ip_addresses"] == ["127.0.0.1", "::1"] and info["dns_names"] == ["n1"]
    assert info["extended_key_usage"] == ["serverAuth", "clientAuth"]
    assert len(info["fingerprint_sha256"]) == 32 * 3 - 1
    assert datetime.fromisoformat(info["not_after"]) > now
    json.dumps(info)
    later = certs.describe(pki / "n1.crt", now=now + timedelta(days=900))
    assert later["expired"] and later["days_left"] < 0
    ca = certs.describe(pki / "ca.crt")
    assert ca["is_ca"] and ca["identity"] is None and "no subjectAltName" in ca["identity_error"]


def test_identity_from_auth_context(pki: Path) -> None:
    pem = (pki / "alice.crt").read_bytes()
    ctx = {"x509_pem_cert": [pem], "x509_subject_alternative_name": [b"hacluster://lab/admin/alice"]}
    assert certs.identity_from_auth_context(ctx) == Identity("lab", "admin", "alice")
    with pytest.raises(CertError, match="no client certificate"):
        certs.identity_from_auth_context({"transport_security_type": [b"ssl"]})


# --- a real gRPC mutual-TLS handshake ------------------------------------------------------

_METHOD = "/hacluster.test.Echo/WhoAmI"


class _WhoAmI(grpc.GenericRpcHandler):
    """Answers with the caller's identity as the server sees it (what admin.py will do)."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != _METHOD:
            return None

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            return certs.identity_from_auth_context(context.auth_context()).uri.encode()

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture(scope="module")
def tls_server(pki: Path):  # type: ignore[no-untyped-def]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((_WhoAmI(),))
    creds = grpc.ssl_server_credentials([((pki / "n1.key").read_bytes(), (pki / "n1.crt").read_bytes())],
                                        root_certificates=(pki / "ca.crt").read_bytes(),
                                        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    yield port
    server.stop(None)


def _call(port: int, ca: Path, client_dir: Path, client: str,
          options: tuple[tuple[str, str], ...] = ()) -> bytes:
    creds = grpc.ssl_channel_credentials((ca / "ca.crt").read_bytes(),
                                         private_key=(client_dir / f"{client}.key").read_bytes(),
                                         certificate_chain=(client_dir / f"{client}.crt").read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        return channel.unary_unary(_METHOD)(b"", timeout=5)


def test_mtls_handshake_admin_and_node_clients(pki: Path, tls_server: int) -> None:
    # Dialled by address: the server certificate's IP SAN 127.0.0.1 is what is checked.
    assert _call(tls_server, pki, pki, "alice") == b"hacluster://lab/admin/alice"
    assert _call(tls_server, pki, pki, "prom") == b"hacluster://lab/reader/prom"
    # A node dialling a peer by node id (its DNS SAN), as gossip may do.
    assert _call(tls_server, pki, pki, "n1", (("grpc.ssl_target_name_override", "n1"),)) \
        == b"hacluster://lab/node/n1"


def test_mtls_refuses_client_from_another_ca(pki: Path, other_pki: Path, tls_server: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(tls_server, pki, other_pki, "mallory")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_refuses_server_name_not_in_cert(pki: Path, tls_server: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(tls_server, pki, pki, "alice", (("grpc.ssl_target_name_override", "n2"),))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# --- the CLI ------------------------------------------------------------------------------

def _run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(certs_group, list(args), catch_exceptions=False)


def test_cli_init_issue_show(tmp_path: Path) -> None:
    pki, out = tmp_path / "pki", tmp_path / "n1"
    r = _run("init", "--dir", str(pki), "--cluster", "prod")
    assert r.exit_code == 0, r.output
    assert f"wrote {pki / 'ca.key'} (mode 0600)" in r.output and "cluster prod" in r.output
    r = _run("issue", "n1", "--address", "10.0.0.11", "--address", "fd00::11", "--dir", str(pki),
             "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "hacluster://prod/node/n1, addresses 10.0.0.11, fd00::11" in r.output
    assert f"wrote {out / 'n1.key'} (mode 0600)" in r.output
    r = _run("issue", "--admin", "alice", "--dir", str(pki), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["identity"] == "hacluster://prod/admin/alice" and doc["key_mode"] == "0600"
    assert Path(doc["key"]) == pki / "alice.key" and Path(doc["cert"]).is_file()

    r = _run("show", str(out / "n1.crt"), "--ca", str(pki / "ca.crt"))
    assert r.exit_code == 0, r.output
    assert "hacluster://prod/node/n1" in r.output and "chain        ok" in r.output
    assert "serverAuth, clientAuth" in r.output and "10.0.0.11, fd00::11" in r.output
    r = _run("show", str(pki / "alice.crt"), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["identity"]["role"] == "admin"
    r = _run("show", str(pki / "ca.crt"))
    assert r.exit_code == 0 and "(a CA certificate)" in r.output


def test_cli_init_json_and_refusal(tmp_path: Path) -> None:
    r = _run("init", "--dir", str(tmp_path), "--cluster", "lab", "--days", "30", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["key_mode"] == "0600" and doc["cert_mode"] == "0644" and doc["cluster"] == "lab"
    r = _run("init", "--dir", str(tmp_path), "--cluster", "lab")
    assert r.exit_code == 1 and "refusing to overwrite" in r.output and "--force" in r.output
    assert _run("init", "--dir", str(tmp_path), "--cluster", "lab", "--force").exit_code == 0


def test_cli_errors_and_exit_codes(tmp_path: Path, other_pki: Path) -> None:
    pki = tmp_path
    assert _run("init", "--dir", str(pki), "--cluster", "lab").exit_code == 0
    usage = [
        ("issue", "--dir", str(pki)),  # nothing to issue
        ("issue", "n1", "--admin", "a", "--address", "::1", "--dir", str(pki)),  # two things
        ("issue", "--admin", "a", "--address", "::1", "--dir", str(pki)),
        ("issue", "n1", "--dir", str(pki)),  # node without address
        ("issue", "n1", "--address", "nope", "--dir", str(pki)),
        ("issue", "--reader", "a b", "--dir", str(pki)),
        ("issue", "--admin", "a", "--days", "9999", "--dir", str(pki)),
        ("init", "--dir", str(tmp_path / "x"), "--cluster", "bad/name"),
    ]
    for args in usage:
        r = _run(*args)
        assert r.exit_code == 2, (args, r.output)
    r = _run("issue", "n1", "--address", "nope", "--dir", str(pki))
    assert "addresses[0]: not an IPv4 or IPv6 address: 'nope'" in r.output
    r = _run("issue", "--admin", "a", "--dir", str(tmp_path / "no-ca"))
    assert r.exit_code == 1 and "no CA here" in r.output
    assert _run("issue", "--admin", "a", "--dir", str(pki)).exit_code == 0
    r = _run("issue", "--admin", "a", "--dir", str(pki))
    assert r.exit_code == 1 and "refusing to overwrite" in r.output
    r = _run("show", str(other_pki / "mallory.crt"), "--ca", str(pki / "ca.crt"), "--json")
    assert r.exit_code == 1
    doc = json.loads(r.output.splitlines()[0])
    assert doc["chain"]["ok"] is False and "not issued by CA" in doc["chain"]["error"]
    (tmp_path / "junk.crt").write_text("hello")
    r = _run("show", str(tmp_path / "junk.crt"))
    assert r.exit_code == 1 and "not a PEM or DER" in r.output


def test_cli_help_has_examples() -> None:
    for cmd in ("init", "issue", "show"):
        r = _run(cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.output and f"hacluster certs {cmd}" in r.output
