"""load_tls: the agent refuses TLS material it should not use, saying which file and why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hacluster.model import TlsFiles
from hacluster.tls import TlsError, load_tls

from .pki import CLUSTER, PKI


def _copy(tmp: Path, name: str, where: str = "ca", mode: int = 0o600) -> TlsFiles:
    f = PKI.files(name, where)
    out = TlsFiles(f.ca_file, tmp / f"{name}.crt", tmp / f"{name}.key")
    shutil.copy(f.cert_file, out.cert_file)
    shutil.copy(f.key_file, out.key_file)
    out.key_file.chmod(mode)
    return out


def test_a_good_node_certificate_loads(tmp_path):
    m = load_tls(_copy(tmp_path, "n1"), CLUSTER, ("node",), "n1")
    assert (m.identity.role, m.identity.name) == ("node", "n1") and m.key_pem and m.ca_pem


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_others_can_read_is_refused(tmp_path, mode):
    with pytest.raises(TlsError, match="key_file"):
        load_tls(_copy(tmp_path, "n1", mode=mode), CLUSTER, ("node",), "n1")


def test_the_wrong_node_cluster_role_ca_or_key_is_refused(tmp_path):
    files = _copy(tmp_path, "n1")
    with pytest.raises(TlsError, match="names node 'n1', not 'n2'"):
        load_tls(files, CLUSTER, ("node",), "n2")
    with pytest.raises(TlsError, match="is for cluster 'ward', this is 'other'"):
        load_tls(files, "other", ("node",), "n1")
    with pytest.raises(TlsError, match="is a admin certificate; this needs node"):
        load_tls(_copy(tmp_path, "alice"), CLUSTER, ("node",))
    with pytest.raises(TlsError, match="not issued by CA"):
        load_tls(_copy(tmp_path, "n2", "rogue"), CLUSTER, ("node",), "n2")
    mixed = TlsFiles(files.ca_file, files.cert_file, _copy(tmp_path, "n2").key_file)
    with pytest.raises(TlsError, match="is not the key of cert_file"):
        load_tls(mixed, CLUSTER, ("node",), "n1")
    with pytest.raises(TlsError, match="cannot read"):
        load_tls(TlsFiles(tmp_path / "nope.crt", files.cert_file, files.key_file), CLUSTER, ("node",))
