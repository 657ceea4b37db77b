"""A test PKI, made once per test session: the cluster "ward"'s CA, node certificates for
n1..n3 (address 127.0.0.1, so loopback servers match), an admin, a reader, and the same
kinds from a foreign CA (another cluster, and the same cluster name signed by another CA).

    from tests.unit.pki import PKI
    server, port = start_admin("127.0.0.1:0", AdminService(...), PKI.server("n1"))
    channel = admin_channel(f"127.0.0.1:{port}", PKI.client("admin"))
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import grpc

from hacluster import certs
from hacluster.model import TlsFiles
from hacluster.tls import Authority, TlsMaterial, load_tls

CLUSTER = "ward"
NODES = ("n1", "n2", "n3")


class _Pki:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hacluster-test-pki-"))
        self.ca_dir = self.dir / "ca"
        certs.init_ca(self.ca_dir, CLUSTER)
        for n in NODES:
            certs.issue(self.ca_dir, self.ca_dir, "node", n, ["127.0.0.1"])
        certs.issue(self.ca_dir, self.ca_dir, "admin", "alice")
        certs.issue(self.ca_dir, self.ca_dir, "reader", "rita")
        # a CA of another cluster, and one that claims this cluster's name
        self.other_dir = self.dir / "other"
        certs.init_ca(self.other_dir, "elsewhere")
        certs.issue(self.other_dir, self.other_dir, "admin", "alice")
        certs.issue(self.other_dir, self.other_dir, "node", "n2", ["127.0.0.1"])
        self.rogue_dir = self.dir / "rogue"
        certs.init_ca(self.rogue_dir, CLUSTER)
        certs.issue(self.rogue_dir, self.rogue_dir, "admin", "alice")
        certs.issue(self.rogue_dir, self.rogue_dir, "node", "n2", ["127.0.0.1"])

    def files(self, name: str, where: str = "ca") -> TlsFiles:
        d = {"ca": self.ca_dir, "other": self.other_dir, "rogue": self.rogue_dir}[where]
        # the client trusts OUR CA whatever signed its own certificate
        return TlsFiles(self.ca_dir / "ca.crt", d / f"{name}.crt", d / f"{name}.key")

    @cache  # noqa: B019 - one object per session
    def material(self, name: str, where: str = "ca") -> TlsMaterial:
        f = self.files(name, where)
        roles = ("node", "admin", "reader")
        if where == "ca":
            return load_tls(f, CLUSTER, roles)
        # load_tls would (rightly) refuse these: build the material by hand
        ident = certs.identity_from_cert(f.cert_file.read_bytes())
        cert = certs.load_cert(f.cert_file.read_bytes())
        return TlsMaterial(f.ca_file.read_bytes(), f.cert_file.read_bytes(), f.key_file.read_bytes(),
                           ident, cert.not_valid_after_utc)

    def server(self, node: str = "n1") -> grpc.ServerCredentials:
        return self.material(node).server_credentials()

    def client(self, name: str = "alice", where: str = "ca") -> grpc.ChannelCredentials:
        """Channel credentials of `name` (alice = admin, rita = reader, n1..n3 = nodes)."""
        return self.material(name, where).channel_credentials()

    def authority(self) -> Authority:
        return Authority(CLUSTER)

    def tls_doc(self, cli: str | None = "alice", node: str = "n1") -> dict[str, str]:
        """A config's `tls` section for `node`, with `cli`'s certificate for the CLI."""
        d = {"ca_file": str(self.ca_dir / "ca.crt"), "cert_file": str(self.ca_dir / f"{node}.crt"),
             "key_file": str(self.ca_dir / f"{node}.key")}
        if cli:
            d.update(cli_cert_file=str(self.ca_dir / f"{cli}.crt"),
                     cli_key_file=str(self.ca_dir / f"{cli}.key"))
        return d


@cache
def _pki() -> _Pki:
    made = _Pki()
    atexit.register(shutil.rmtree, made.dir, True)
    return made


class _Lazy:
    """Made on first use, so that importing this module costs nothing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_pki(), name)


PKI: Any = _Lazy()
