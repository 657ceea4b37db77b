"""Check specs: defaults, and bad specs rejected with clear messages at their paths."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hacluster.health.spec import (
    CheckSpec,
    DicomCheck,
    HttpsCheck,
    MllpCheck,
    SipCheck,
    TcpCheck,
    check_spec_errors,
)


class Cfg(BaseModel):
    checks: list[CheckSpec]


def errors(*checks: dict[str, Any]) -> list[str]:
    """Validation errors as 'path: message' lines, the way config.py prints them."""
    try:
        Cfg.model_validate({"checks": list(checks)})
    except ValidationError as e:
        out = []
        for err in e.errors():
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            out.append(f"{path}: {err['msg']}")
        return out
    return []


OK_TCP = {"name": "db", "kind": "tcp", "port": 5432}


@pytest.mark.parametrize(("check", "expected"), [
    ({"kind": "tcp", "port": 1}, "checks[1].name: Field required"),
    ({**OK_TCP, "port": 0}, "checks[1].port: Input should be greater than or equal to 1"),
    ({**OK_TCP, "port": 70000}, "checks[1].port: Input should be less than or equal to 65535"),
    ({**OK_TCP, "name": "-bad"}, "checks[1].name: String should match pattern"),
    ({**OK_TCP, "name": "x" * 64}, "checks[1].name: String should have at most 63 characters"),
    ({**OK_TCP, "interval_ms": 10}, "checks[1].interval_ms: Input should be greater than or equal to 50"),
    ({**OK_TCP, "rise": 0}, "checks[1].rise: Input should be greater than or equal to 1"),
    ({**OK_TCP, "fall": 101}, "checks[1].fall: Input should be less than or equal to 100"),
    ({**OK_TCP, "colour": "red"}, "checks[1].colour: Extra inputs are not permitted"),
    ({"name": "x", "kind": "smtp"}, "checks[1]: unknown kind 'smtp', expected one of: tcp, http, https, "
                                    "exec, mllp, dicom, sip"),
    ({"name": "x"}, "checks[1]: `kind` is required, one of: tcp, http"),
    ("tcp://db:5432", "checks[1]: must be a mapping with a `kind`"),
    ({"name": "x", "kind": "http", "path": "health"}, "checks[1].path: String should match pattern"),
    ({"name": "x", "kind": "http", "expect_status": [200, 999]},
     "checks[1].expect_status[1]: Input should be less than or equal to 599"),
    ({"name": "x", "kind": "http", "expect_status": []},
     "checks[1].expect_status: List should have at least 1"),
    ({"name": "x", "kind": "http", "body_match": "(unclosed"},
     "checks[1].body_match: Value error, not a valid regular expression: missing ), unterminated subpattern"),
    ({"name": "x", "kind": "https", "verify": "maybe"}, "checks[1].verify: Input should be a valid boolean"),
    ({"name": "x", "kind": "http", "verify": False}, "checks[1].verify: Extra inputs are not permitted"),
    ({"name": "x", "kind": "exec", "command": []}, "checks[1].command: List should have at least 1 item"),
    ({"name": "x", "kind": "exec", "command": "true"}, "checks[1].command: Input should be a valid list"),
    ({"name": "x", "kind": "exec", "command": ["true"], "expect_exit": 256},
     "checks[1].expect_exit: Input should be less than or equal to 255"),
    ({"name": "x", "kind": "mllp", "sending_app": "A|B"},
     "checks[1].sending_app: Value error, must be printable ASCII without HL7 delimiters (| ^ ~ \\ &), "
     "found '|'"),
    ({"name": "x", "kind": "mllp", "accept": ["OK"]}, "checks[1].accept[0]: Input should be 'AA', 'AE'"),
    ({"name": "x", "kind": "mllp", "message_type": "ADT-A01"}, "checks[1].message_type: String should match"),
    ({"name": "x", "kind": "dicom", "called_ae": "A" * 17},
     "checks[1].called_ae: Value error, must be at most 16 characters (a DICOM AE title), got 17"),
    ({"name": "x", "kind": "dicom", "calling_ae": "   "},
     "checks[1].calling_ae: Value error, must not be empty or only spaces"),
    ({"name": "x", "kind": "dicom", "calling_ae": "A\\B"},
     "checks[1].calling_ae: Value error, must be printable ASCII without backslash"),
    ({"name": "x", "kind": "sip", "transport": "tls"}, "checks[1].transport: Input should be 'udp' or 'tcp'"),
    ({"name": "x", "kind": "sip", "expect_status": [180]},
     "checks[1].expect_status[0]: Input should be greater than or equal to 200"),
])
def test_bad_spec_is_reported_at_its_path(check, expected):
    errs = errors(OK_TCP, check)
    assert len(errs) == 1, errs
    assert errs[0].startswith(expected), errs


def test_every_error_is_reported():
    errs = errors({"name": "a", "kind": "tcp"}, {"name": "b", "kind": "sip", "port": 0, "rise": 0})
    assert errs == ["checks[0].port: Field required",
                    "checks[1].rise: Input should be greater than or equal to 1",
                    "checks[1].port: Input should be greater than or equal to 1"]


def test_defaults():
    cfg = Cfg.model_validate({"checks": [
        OK_TCP, {"name": "w", "kind": "https"}, {"name": "h", "kind": "mllp"},
        {"name": "d", "kind": "dicom"}, {"name": "s", "kind": "sip"}]})
    tcp, https, mllp, dicom, sip = cfg.checks
    assert isinstance(tcp, TcpCheck)
    assert (tcp.interval_ms, tcp.timeout_ms, tcp.rise, tcp.fall, tcp.host) == (1000, 500, 2, 2, None)
    assert isinstance(https, HttpsCheck)
    assert (https.port, https.path, https.expect_status, https.verify) == (443, "/", [200], True)
    assert isinstance(mllp, MllpCheck)
    assert (mllp.port, mllp.sending_app, mllp.receiving_app, mllp.accept) == (
        2575, "HACLUSTER", "", ["AA", "CA"])
    assert mllp.message_type == "NMD^N02^NMD_N02"
    assert isinstance(dicom, DicomCheck) and (dicom.port, dicom.calling_ae, dicom.called_ae) == (
        104, "HACLUSTER", "ANY-SCP")
    assert isinstance(sip, SipCheck) and (sip.port, sip.transport, sip.expect_status) == (5060, "udp", [200])


def test_specs_are_frozen_and_round_trip():
    cfg = Cfg.model_validate({"checks": [OK_TCP, {"name": "w", "kind": "http", "port": 8080}]})
    with pytest.raises(ValidationError):
        cfg.checks[0].port = 1  # type: ignore[misc]
    assert Cfg.model_validate_json(cfg.model_dump_json()) == cfg


def test_cross_field_errors():
    cfg = Cfg.model_validate({"checks": [
        OK_TCP,
        {"name": "slow", "kind": "tcp", "port": 1, "interval_ms": 500, "timeout_ms": 500},
        {"name": "tls", "kind": "https", "verify": False, "ca_file": "/etc/ca.pem"},
    ]})
    assert check_spec_errors(cfg.checks) == [
        "checks[1].timeout_ms: must be less than interval_ms (500), got 500; otherwise attempts "
        "of one check overlap",
        "checks[2].ca_file: is ignored because verify is false; remove it or set verify: true",
    ]
    assert check_spec_errors(cfg.checks[:1]) == []
