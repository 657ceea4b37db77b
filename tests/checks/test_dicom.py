"""DICOM C-ECHO against a real pynetdicom Verification SCP."""

from __future__ import annotations

import asyncio

import pytest

from hacluster.health import dicom
from hacluster.health.spec import DicomCheck

from .conftest import HOST, PATIENT_MS, probe_until_stuck


def spec(port: int, **kw) -> DicomCheck:
    return DicomCheck(name="pacs", kind="dicom", port=port, **kw)


def probe(s: DicomCheck):
    return asyncio.run(dicom.probe(s, HOST))


def test_echo_passes(dicom_scp):
    port, aet = dicom_scp
    out = probe(spec(port, called_ae=aet, timeout_ms=PATIENT_MS))
    assert out.ok, out.error
    assert out.latency_ms is not None


def test_wrong_called_ae_is_rejected(dicom_scp):
    port, _ = dicom_scp
    out = probe(spec(port, called_ae="NOT-THE-PACS", timeout_ms=PATIENT_MS))
    assert not out.ok
    assert out.error == "association rejected (permanent): called AE title not recognised"


# pynetdicom 3.0 closes a socket whose connect() failed only after shutdown(), which raises
# ENOTCONN first; the socket is then closed by its finaliser, with a ResourceWarning.
@pytest.mark.filterwarnings("ignore::ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
def test_closed_port(closed_port):
    out = probe(spec(closed_port, timeout_ms=PATIENT_MS))
    assert out.error == "connection refused"


def test_silent_listener_times_out(silent_tcp):
    # What we sent is an A-ASSOCIATE-RQ PDU (type 0x01) calling HACLUSTER.
    out = probe_until_stuck(dicom.probe, spec(silent_tcp.port, timeout_ms=PATIENT_MS),
                            lambda: b"HACLUSTER" in b"".join(silent_tcp.seen))
    assert out.error == "timed out after 10000 ms waiting for the association and C-ECHO"
    assert b"".join(silent_tcp.seen)[:1] == b"\x01"


def test_target():
    assert dicom.target(spec(11112, called_ae="PACS1"), HOST) == "dicom://PACS1@127.0.0.1:11112"
