"""Mutual TLS for every gRPC connection: gossip between agents, and the admin API.

Every agent serves with its node certificate and accepts only clients whose certificate
the cluster CA signed (`require_client_auth`); every client (a peer agent, the CLI)
presents its own. Who the caller is comes from its certificate's identity URI
(`hacluster://CLUSTER/ROLE/NAME`, certs.py), never from anything it says:

- gossip: only `node` certificates of this cluster, and the named node must be the sender
  the message claims (a member cannot speak for another);
- admin reads (status, members, checks, backends): `admin`, `reader` or `node`;
- admin actions (drain, weight, failover...): `admin` only.

The server side is `Authority` (pure over a gRPC context's auth_context()); the material
(CA, certificate, key) is loaded and checked once, at start, by `load_tls`, which refuses a
key file others can read, a certificate that another CA signed, that has expired, or that
names another cluster, role or node.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hacluster import certs
from hacluster.certs import CertError, Identity
from hacluster.model import TlsFiles

__all__ = ["ACT_ROLES", "NODE_ROLES", "READ_ROLES", "Authority", "TlsError", "TlsFiles", "TlsMaterial",
           "load_tls", "refusal_for"]

READ_ROLES = frozenset({"admin", "reader", "node"})
ACT_ROLES = frozenset({"admin"})
NODE_ROLES = frozenset({"node"})


class TlsError(Exception):
    """TLS material that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    identity: Identity
    not_after: datetime

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca_pem, private_key=self.key_pem,
                                            certificate_chain=self.cert_pem)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsError(f"{what} {path}: cannot read: {e.strerror or e}") from None


def load_tls(files: TlsFiles, cluster: str, roles: Collection[str], name: str | None = None) -> TlsMaterial:
    """Read and check a certificate, its key and the CA: the key private (0600), the
    certificate signed by this CA and valid now, its identity of `cluster`, one of `roles`
    and (when given) named `name`, and the key the certificate's."""
    try:
        certs.check_private_file(files.key_file)
    except CertError as e:
        raise TlsError(f"key_file: {e}") from None
    ca_pem = _read(files.ca_file, "ca_file")
    cert_pem = _read(files.cert_file, "cert_file")
    key_pem = _read(files.key_file, "key_file")
    try:
        cert = certs.load_cert(cert_pem)
        certs.verify_chain(cert, certs.load_cert(ca_pem))
        identity = certs.identity_from_cert(cert)
    except CertError as e:
        raise TlsError(f"cert_file {files.cert_file}: {e}") from None
    if identity.cluster != cluster:
        raise TlsError(f"cert_file {files.cert_file} is for cluster {identity.cluster!r}, this is "
                       f"{cluster!r}")
    if identity.role not in roles:
        raise TlsError(f"cert_file {files.cert_file} is a {identity.role} certificate; this needs "
                       f"{' or '.join(sorted(roles))}")
    if name is not None and identity.name != name:
        raise TlsError(f"cert_file {files.cert_file} names {identity.role} {identity.name!r}, not {name!r}")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise TlsError(f"key_file {files.key_file}: not a PEM private key without a passphrase "
                       f"({e})") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise TlsError(f"key_file {files.key_file} is not the key of cert_file {files.cert_file}")
    return TlsMaterial(ca_pem, cert_pem, key_pem, identity, cert.not_valid_after_utc)


def cert_days_left(material: TlsMaterial, now: datetime) -> float:
    return (material.not_after - now).total_seconds() / 86400


class Authority:
    """Who is calling, from the TLS peer certificate gRPC verified against the CA."""

    def __init__(self, cluster: str):
        self.cluster = cluster

    def caller(self, context: Any) -> Identity | str:
        """The caller's identity, or why it has none we accept."""
        try:
            ctx = context.auth_context()
        except Exception:  # noqa: BLE001 - a context without TLS: no identity
            ctx = {}
        if not ctx or not ctx.get(certs.AUTH_PEM_CERT_KEY):
            return "no client certificate: calls need mutual TLS with a certificate of the cluster CA"
        try:
            identity = certs.identity_from_auth_context(ctx)
        except CertError as e:
            return f"client certificate without a usable identity: {e}"
        return identity

    def check(self, context: Any, roles: Collection[str], what: str) -> tuple[Identity | None, str | None]:
        """(identity, None) if the caller may do `what`, else (identity or None, refusal)."""
        who = self.caller(context)
        if isinstance(who, str):
            return None, who
        # another cluster's certificate is no identity here (UNAUTHENTICATED); one of ours
        # whose role may not do this is (PERMISSION_DENIED)
        return (who if who.cluster == self.cluster else None), refusal_for(who, self.cluster, roles, what)


def refusal_for(who: Identity, cluster: str, roles: Collection[str], what: str) -> str | None:
    """The one authorization rule, for every listener (admin and gossip gRPC, the metrics and
    status page): None if `who` may do `what`, else why not. The certificate was already
    verified against the cluster CA; it must also name this cluster and one of `roles`."""
    if who.cluster != cluster:
        return f"certificate of cluster {who.cluster!r}, this is {cluster!r}"
    if who.role not in roles:
        return f"{who.role} {who.name!r} may not {what} (needs {' or '.join(sorted(roles))})"
    return None


def subject_of(cert_pem: bytes) -> str:
    return x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()
