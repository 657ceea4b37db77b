"""The cluster CA and the certificates every gRPC peer presents (mutual TLS).

One CA per cluster signs three kinds of leaf certificate. Who a peer is travels in exactly one
URI SAN, never in the CN (the CN is only for people reading `openssl x509` output):

    hacluster://<cluster>/node/<id>      an agent: serves gossip + admin, dials other agents
    hacluster://<cluster>/admin/<name>   an operator's CLI: may change the cluster
    hacluster://<cluster>/reader/<name>  monitoring: read-only admin calls

A server takes the identity from the peer's verified certificate with
`identity_from_auth_context(context.auth_context())` and must then check both the cluster and
the role: the TLS stack only proves "signed by our CA", not "allowed to do this".

Private keys are written 0600 from their first byte (a temp file created O_EXCL|0600, then
linked or renamed into place), and `check_private_file` is the one place that decides whether
a key or secret file is private enough for the agent to use.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Role = Literal["node", "admin", "reader"]
ROLES: tuple[Role, ...] = ("node", "admin", "reader")

URI_SCHEME = "hacluster"

# Lifetimes in days. 825 is the longest leaf lifetime browsers and most TLS stacks still accept
# without complaint; a CA outliving its hardware is fine because it only signs, offline.
CA_DAYS = 3650
NODE_DAYS = 825
ADMIN_DAYS = 365
READER_DAYS = 365
DEFAULT_DAYS: dict[Role, int] = {"node": NODE_DAYS, "admin": ADMIN_DAYS, "reader": READER_DAYS}
CA_MAX_DAYS = 3650
LEAF_MAX_DAYS = 825

# Certificates start this far in the past so that a member whose clock runs a little behind
# the CA's host does not refuse a freshly issued certificate as "not yet valid".
CLOCK_SKEW = timedelta(minutes=5)

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CERT_MODE = 0o644
KEY_MODE = 0o600

# Same rule as ConfigSpec.cluster and MemberSpec.id in config.py, so that every configured
# cluster and node can get a certificate. No '/' and no leading '.', so a name is always a
# plain file name inside out_dir and a single URI path segment.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_URI_RE = re.compile(
    r"hacluster://(?P<cluster>[A-Za-z0-9][A-Za-z0-9_.-]{0,62})"
    r"/(?P<role>node|admin|reader)/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,62})")

# grpcio's auth_context() keys (grpc core's GRPC_X509_*_PROPERTY_NAME).
AUTH_PEM_CERT_KEY = "x509_pem_cert"
AUTH_SAN_KEY = "x509_subject_alternative_name"


class CertError(Exception):
    """A refusal or failure the operator must act on: file exists, bad mode, wrong CA..."""


class CertInputError(CertError, ValueError):
    """A bad argument (name, cluster, address, days, role); the message names the field."""


@dataclass(frozen=True)
class Identity:
    cluster: str
    role: Role
    name: str

    @property
    def uri(self) -> str:
        return f"{URI_SCHEME}://{self.cluster}/{self.role}/{self.name}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class CaFiles:
    cert: Path
    key: Path
    cluster: str
    not_after: datetime
    fingerprint_sha256: str


@dataclass(frozen=True)
class IssuedFiles:
    cert: Path
    key: Path
    identity: Identity
    addresses: tuple[str, ...]
    not_after: datetime
    fingerprint_sha256: str


# --- validation ---------------------------------------------------------------------------

def validate_name(value: str, field: str = "name") -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise CertInputError(f"{field}: must be 1-63 characters of letters, digits, '_', '.', '-' "
                             f"starting with a letter or digit, got {value!r}")
    return value


def validate_days(days: int, maximum: int, field: str = "days") -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= maximum:
        raise CertInputError(f"{field}: must be a whole number of days from 1 to {maximum}, got {days!r}")
    return days


def validate_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Canonical text of each IPv4/IPv6 address, duplicates dropped, order kept."""
    if isinstance(addresses, str):  # a lone "10.0.0.1" would otherwise iterate by character
        addresses = [addresses]
    out: list[str] = []
    for i, a in enumerate(addresses):
        try:
            text = str(ipaddress.ip_address(a.strip() if isinstance(a, str) else a))
        except ValueError:
            raise CertInputError(f"addresses[{i}]: not an IPv4 or IPv6 address: {a!r}") from None
        if text not in out:
            out.append(text)
    return tuple(out)


def _validate_role(role: str) -> Role:
    if role not in ROLES:
        raise CertInputError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    return role  # type: ignore[return-value]


# --- identities ---------------------------------------------------------------------------

def identity_from_uri(uri: str) -> Identity:
    m = _URI_RE.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise CertError(f"not a hacluster identity URI (want hacluster://CLUSTER/node|admin|reader/NAME): "
                        f"{uri!r}")
    return Identity(m["cluster"], m["role"], m["name"])  # type: ignore[arg-type]


def identity_from_cert(cert: x509.Certificate | bytes | str) -> Identity:
    """The one hacluster identity in the certificate's URI SANs; CertError for none or several.

    Other URI SANs (not hacluster://) are ignored, so a certificate may also carry e.g. a SPIFFE
    id. A hacluster:// URI that does not parse is an error, not skipped: it means a broken or
    foreign tool issued it, and guessing would be worse than refusing.
    """
    c = load_cert(cert)
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertError(f"certificate {_subject(c)} has no subjectAltName, "
                        "so no hacluster identity") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.lower().startswith(f"{URI_SCHEME}://")]
    if not uris:
        raise CertError(f"certificate {_subject(c)} has no hacluster:// URI SAN")
    if len(uris) > 1:
        raise CertError(f"certificate {_subject(c)} has {len(uris)} hacluster:// URI SANs "
                        f"({', '.join(uris)}); exactly one is allowed")
    return identity_from_uri(uris[0])


def identity_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> Identity:
    """The peer's identity from grpc `context.auth_context()` on a mutual-TLS server.

    Parses the peer's leaf certificate (`x509_pem_cert`), which grpc only exposes after the
    handshake verified it against the server's root (the cluster CA). We do not use the flat
    `x509_subject_alternative_name` list: it mixes DNS, IP and URI entries without their types.
    """
    pems = auth_context.get(AUTH_PEM_CERT_KEY) or []
    if len(pems) != 1:
        raise CertError("the peer presented no client certificate (is the server's "
                        "require_client_auth off, or is this an insecure port?)")
    return identity_from_cert(pems[0])


# --- loading and inspecting ---------------------------------------------------------------

def load_cert(cert: x509.Certificate | bytes | str | Path) -> x509.Certificate:
    """A certificate from an object, PEM or DER bytes, PEM text, or a path to a PEM/DER file.

    A str without a PEM header is taken as a file name.
    """
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, str) and "-----BEGIN" not in cert:
        cert = Path(cert)
    source = "certificate"
    if isinstance(cert, Path):
        source = str(cert)
        try:
            cert = cert.read_bytes()
        except OSError as e:
            raise CertError(f"{source}: cannot read: {e.strerror or e}") from None
    data = cert.encode("ascii", "replace") if isinstance(cert, str) else cert
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise CertError(f"{source}: not a PEM or DER X.509 certificate ({e})") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER, as `openssl x509 -fingerprint -sha256` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def describe(cert_path: Path | str | x509.Certificate, now: datetime | None = None) -> dict[str, Any]:
    """A JSON-ready summary for `hacluster certs show` and expiry metrics."""
    c = load_cert(cert_path)
    now = now or datetime.now(UTC)
    try:
        identity: Identity | None = identity_from_cert(c)
        identity_error = None
    except CertError as e:
        identity, identity_error = None, str(e)
    san = _ext(c, x509.SubjectAlternativeName)
    eku = _ext(c, x509.ExtendedKeyUsage)
    bc = _ext(c, x509.BasicConstraints)
    left = (c.not_valid_after_utc - now).total_seconds() / 86400
    return {
        "subject": c.subject.rfc4514_string(),
        "issuer": c.issuer.rfc4514_string(),
        "identity": None if identity is None else {
            "uri": identity.uri, "cluster": identity.cluster, "role": identity.role, "name": identity.name},
        "identity_error": identity_error,
        "is_ca": bool(bc and bc.ca),
        "serial": f"{c.serial_number:x}",
        "not_before": c.not_valid_before_utc.isoformat(),
        "not_after": c.not_valid_after_utc.isoformat(),
        "days_left": math.floor(left),
        "expired": left < 0,
        "dns_names": san.get_values_for_type(x509.DNSName) if san else [],
        "ip_addresses": [str(a) for a in san.get_values_for_type(x509.IPAddress)] if san else [],
        "uris": san.get_values_for_type(x509.UniformResourceIdentifier) if san else [],
        "extended_key_usage": [_EKU_NAMES.get(o, o.dotted_string) for o in eku] if eku else [],
        "fingerprint_sha256": fingerprint(c),
    }


def verify_chain(cert: x509.Certificate | bytes | str | Path, ca_cert: x509.Certificate | bytes | str | Path,
                 now: datetime | None = None) -> None:
    """CertError unless `ca_cert` is a CA that signed `cert` and both are valid at `now`.

    A direct-issuer check (our hierarchy is one level deep: CA pathlen 0), not full RFC 5280
    path building; the TLS stack does that for real connections.
    """
    c, ca = load_cert(cert), load_cert(ca_cert)
    now = now or datetime.now(UTC)
    bc = _ext(ca, x509.BasicConstraints)
    if not (bc and bc.ca):
        raise CertError(f"{_subject(ca)} is not a CA certificate (basicConstraints CA:false or missing)")
    try:
        c.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CertError(f"{_subject(c)} was not issued by CA {_subject(ca)} "
                        f"({str(e) or 'signature does not verify'})") from None
    for what, x in (("certificate", c), ("CA certificate", ca)):
        if now < x.not_valid_before_utc:
            raise CertError(f"{what} {_subject(x)} is not valid before {x.not_valid_before_utc.isoformat()} "
                            "(is this machine's clock behind?)")
        if now > x.not_valid_after_utc:
            raise CertError(f"{what} {_subject(x)} expired on {x.not_valid_after_utc.isoformat()}")


def check_private_file(path: Path | str) -> None:
    """CertError unless `path` is an existing regular file with no group/other permission bits.

    Used for private keys and the cluster secret: the agent refuses to start with a file
    another local user could read (steal) or write (replace).
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise CertError(f"{path}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CertError(f"{path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        rw = " and ".join(w for w, bits in (("readable", 0o044), ("writable", 0o022)) if mode & bits)
        rw = rw or "accessible"  # only x bits set for group/other
        raise CertError(f"{path} is {rw} by group or others (mode {mode:04o}); run: chmod 600 {path}")


# --- writing ------------------------------------------------------------------------------

def init_ca(directory: Path, cluster: str, days: int = CA_DAYS, force: bool = False,
            now: datetime | None = None) -> CaFiles:
    """Create the cluster CA: `directory/ca.crt` (0644) and `directory/ca.key` (0600)."""
    validate_name(cluster, "cluster")
    validate_days(days, CA_MAX_DAYS)
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not force:
        _refuse_existing([cert_path, key_path], "a CA already exists")
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"hacluster {cluster}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"hacluster {cluster} CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    cert = (_builder(name, name, key.public_key(), now, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(aki, critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_pair(cert_path, cert, key_path, key, force)
    return CaFiles(cert_path, key_path, cluster, cert.not_valid_after_utc, fingerprint(cert))


def issue(ca_dir: Path, out_dir: Path, role: Role, name: str, addresses: Iterable[str] = (),
          days: int | None = None, force: bool = False, now: datetime | None = None) -> IssuedFiles:
    """Sign a node/admin/reader certificate with the CA in `ca_dir`; write out_dir/<name>.crt|key.

    Nodes need at least one address (their SAN IPs, which clients dialling by address verify);
    admin and reader certificates are client-only and carry none.
    """
    role = _validate_role(role)
    validate_name(name)
    days = DEFAULT_DAYS[role] if days is None else validate_days(days, LEAF_MAX_DAYS)
    addrs = validate_addresses(addresses)
    if role == "node" and not addrs:
        raise CertInputError("addresses: a node certificate needs at least one IP address "
                             "(the addresses other members and the CLI dial it on)")
    if role != "node" and addrs:
        raise CertInputError(f"addresses: only node certificates carry addresses, not {role} ones")
    ca_dir, out_dir = Path(ca_dir), Path(out_dir)
    if name == "ca" and out_dir.resolve() == ca_dir.resolve():
        raise CertInputError(f"name: 'ca' would overwrite the CA's own files in {out_dir}; "
                             "write to another --out directory")
    ca_cert, ca_key = _load_ca(ca_dir)
    cluster = _ca_cluster(ca_cert)
    identity = Identity(cluster, role, name)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    if not force:
        _refuse_existing([cert_path, key_path], f"a certificate for {name} already exists")

    now = now or datetime.now(UTC)
    if now > ca_cert.not_valid_after_utc:
        raise CertError(f"the CA in {ca_dir} expired on {ca_cert.not_valid_after_utc.date()}; "
                        "create a new one with hacluster certs init --force and reissue every certificate")
    not_after = now + timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        left = (ca_cert.not_valid_after_utc - now).days
        raise CertInputError(f"days: the CA expires on {ca_cert.not_valid_after_utc.date()}, before this "
                             f"certificate would; use at most {max(left, 0)} days or renew the CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"hacluster {cluster}"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    ekus = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "node":
        sans += [x509.DNSName(name)] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addrs]
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (_builder(subject, ca_cert.subject, key.public_key(), now, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
            # A URI-only SAN with an empty-ish subject would need critical=True (RFC 5280
            # 4.2.1.6); our subject is never empty, so non-critical is correct and portable.
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    _write_pair(cert_path, cert, key_path, key, force)
    return IssuedFiles(cert_path, key_path, identity, addrs, cert.not_valid_after_utc, fingerprint(cert))


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime, days: int) -> x509.CertificateBuilder:
    # 159 random bits: positive, at most 20 octets (RFC 5280 4.1.2.2), unguessable.
    serial = secrets.randbits(159) | 1
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(serial)
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + timedelta(days=days)))


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    if not cert_path.exists() or not key_path.exists():
        raise CertError(f"{ca_dir}: no CA here (want {CA_CERT_FILE} and {CA_KEY_FILE}); "
                        "create one with: hacluster certs init --dir DIR --cluster NAME")
    check_private_file(key_path)  # a CA key others can read is a CA anyone can use
    ca_cert = load_cert(cert_path)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise CertError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != ca_cert.public_key():
        raise CertError(f"{key_path} does not belong to {cert_path} (different key pair)")
    return ca_cert, key


def _ca_cluster(ca_cert: x509.Certificate) -> str:
    """The cluster name from the CA's O=hacluster <cluster>, as init_ca wrote it."""
    orgs = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    org = str(orgs[0].value) if len(orgs) == 1 else ""
    prefix = "hacluster "
    if not org.startswith(prefix) or not _NAME_RE.fullmatch(org[len(prefix):]):
        raise CertError(f"CA {_subject(ca_cert)} was not made by hacluster certs init "
                        "(no O=hacluster <cluster>)")
    return org[len(prefix):]


def _refuse_existing(paths: Sequence[Path], what: str) -> None:
    present = [str(p) for p in paths if os.path.lexists(p)]
    if present:
        raise CertError(f"{what}: {', '.join(present)}; refusing to overwrite (use --force to replace)")


def _write_pair(cert_path: Path, cert: x509.Certificate, key_path: Path,
                key: ec.EllipticCurvePrivateKey, force: bool) -> None:
    """Key first, then certificate; without force, a lost race removes what we wrote."""
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_atomic(key_path, key_pem, KEY_MODE, force)
    try:
        _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE, force)
    except BaseException:
        if not force:
            with contextlib.suppress(OSError):
                key_path.unlink()
        raise


def _write_atomic(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write via a same-directory temp file created O_EXCL with `mode`, then move into place.

    The temp file has its final mode from creation (umask can only clear bits, fchmod restores
    exactly `mode`), so a key is never readable by others, not even half-written. Without
    force the move is os.link, which fails if `path` appeared meanwhile: no check-then-clobber.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise CertError(f"{path} appeared while writing; refusing to overwrite "
                        "(use --force to replace)") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
    # No hard links here (vfat, some FUSE mounts): check, then rename. Not race-free, but
    # the earlier _refuse_existing already caught the common case.
    if os.path.lexists(path):
        raise CertError(f"{path} appeared while writing; refusing to overwrite (use --force to replace)")
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _ext(c: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return c.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _subject(c: x509.Certificate) -> str:
    return c.subject.rfc4514_string() or "(empty subject)"


_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
