"""Health check specs: what a check probes, how often, and how many results flip its state.

`CheckSpec` is the type to put in a config model (`checks: list[CheckSpec]`). It validates a
mapping against the model its `kind` names, and reports errors at the check's own path
(`checks[2].port: ...`), not at pydantic's usual `checks[2].tcp.port`, so the messages read
like every other config error (STYLE.md 6). `check_spec_errors()` adds the rules that span
fields; name uniqueness across checks is the config loader's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WrapValidator, field_validator
from pydantic_core import PydanticCustomError

# A check's name is half of its committed health key ("node/check") and gossip carries it:
# gossip/wire.py takes these names (and CHECK@IPV4, derived for external backends) and
# refuses any other at the wire (a test holds the rules equal; gossip may not import this
# module).
CHECK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_HL7_DELIMITERS = "|^~\\&\r\n"


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=63, pattern=CHECK_NAME)
    interval_ms: int = Field(default=1000, ge=50, le=3_600_000)
    # Must stay below interval_ms (check_spec_errors), so one check never has two attempts
    # in flight and a hanging target costs one attempt per interval at most.
    timeout_ms: int = Field(default=500, ge=10, le=3_600_000)
    rise: int = Field(default=2, ge=1, le=100)  # successes in a row before PASSING
    fall: int = Field(default=2, ge=1, le=100)  # failures in a row before FAILING
    # None: the checking node's own member address, filled in at run time.
    host: str | None = Field(default=None, min_length=1, max_length=253, pattern=r"^[^\s/]+$")


_Port = Annotated[int, Field(ge=1, le=65535)]


class TcpCheck(_Check):
    """Healthy when a TCP connection to host:port opens."""

    kind: Literal["tcp"]
    port: _Port


class HttpCheck(_Check):
    """Healthy when GET path answers with one of expect_status (and body_match, if set)."""

    kind: Literal["http"]
    port: _Port = 80
    path: str = Field(default="/", pattern=r"^/[\x21-\x7e]*$")
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default=[200], min_length=1)
    body_match: str | None = None  # a regular expression searched in the first 64 KiB
    host_header: str | None = Field(default=None, min_length=1, pattern=r"^[\x21-\x7e]+$")

    @field_validator("body_match")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except (re.error, OverflowError, RecursionError) as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class HttpsCheck(HttpCheck):
    kind: Literal["https"]  # type: ignore[assignment]
    port: _Port = 443
    verify: bool = True  # check the certificate chain and the name; off only for lab setups
    ca_file: str | None = Field(default=None, min_length=1)  # None: the system trust store
    server_name: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9.:_-]+$")


# A login name as useradd takes it (or a numeric uid): it goes to setpriv as an argument.
USER_NAME = r"^([a-z_][a-z0-9_-]{0,31}[$]?|[0-9]{1,10})$"


class ExecCheck(_Check):
    """Healthy when the command exits with expect_exit. argv, never a shell.

    It runs without the agent's capabilities, with an allow-listed environment, and as
    `user` when one is set (exec_check.py)."""

    kind: Literal["exec"]
    command: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    expect_exit: int = Field(default=0, ge=0, le=255)
    # Run as this user and its groups, not as the agent's user (who can read the cluster
    # secret and the node key). None: the config's checks_user, else the agent's user.
    user: str | None = Field(default=None, pattern=USER_NAME)
    # The check's own environment variables, added to PATH, LANG, LC_*, TZ and
    # HACLUSTER_CHECK_NAME/HOST: nothing else of the agent's environment reaches it.
    env: dict[str, str] = Field(default_factory=dict, max_length=64)

    @field_validator("env")
    @classmethod
    def _plain_env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", key):
                raise ValueError(f"{key!r} is not a variable name (letters, digits, _)")
            if key.upper().startswith("HACLUSTER_"):
                raise ValueError(f"{key!r}: HACLUSTER_* names are the agent's")
            if "\0" in value or len(value) > 4096:
                raise ValueError(f"{key}: a value without NUL, at most 4096 characters")
        return v


class MllpCheck(_Check):
    """HL7 v2 over MLLP: healthy when the engine ACKs a probe message with an accepted code.

    The default message is NMD^N02 (application management data, HL7 v2 chapter 14) with one
    NCK (system clock) segment: it is HL7's own network-management message, so it carries no
    patient and cannot start a clinical workflow, and engines in original acknowledgment
    mode answer it with a general ACK like any other message. An engine that filters
    unknown types may need message_type set to one it routes (and should then ACK AA/CA
    without acting on a message that has no PID).
    """

    kind: Literal["mllp"]
    port: _Port = 2575
    sending_app: str = Field(default="HACLUSTER", max_length=180)
    sending_facility: str = Field(default="HACLUSTER", max_length=180)
    receiving_app: str = Field(default="", max_length=180)
    receiving_facility: str = Field(default="", max_length=180)
    # MSH-9: type^trigger[^structure]; components are separated by ^, so it has its own rule.
    message_type: str = Field(default="NMD^N02^NMD_N02",
                              pattern=r"^[A-Z0-9]{3}\^[A-Z0-9]{3}(\^[A-Z0-9_]{3,7})?$")
    version: str = Field(default="2.5", pattern=r"^2\.[1-9](\.[0-9])?$")  # MSH-12
    accept: list[Literal["AA", "AE", "AR", "CA", "CE", "CR"]] = Field(default=["AA", "CA"],
                                                                      min_length=1)

    @field_validator("sending_app", "sending_facility", "receiving_app", "receiving_facility")
    @classmethod
    def _plain_field(cls, v: str) -> str:
        # Written verbatim into MSH: a delimiter would shift every later field.
        bad = sorted({c for c in v if c in _HL7_DELIMITERS or not 0x20 <= ord(c) < 0x7F})
        if bad:
            raise ValueError(f"must be printable ASCII without HL7 delimiters (| ^ ~ \\ &), "
                             f"found {''.join(bad)!r}")
        return v


class DicomCheck(_Check):
    """DICOM C-ECHO (Verification SOP class): association, echo, status 0x0000, release."""

    kind: Literal["dicom"]
    port: _Port = 104
    calling_ae: str = "HACLUSTER"
    called_ae: str = "ANY-SCP"

    @field_validator("calling_ae", "called_ae")
    @classmethod
    def _ae_title(cls, v: str) -> str:
        # PS3.5 6.2: 1-16 characters of the default repertoire, no backslash or control
        # characters; spaces are padding, so an all-space title is no title.
        if not v.strip(" "):
            raise ValueError("must not be empty or only spaces")
        if len(v) > 16:
            raise ValueError(f"must be at most 16 characters (a DICOM AE title), got {len(v)}")
        if any(c == "\\" or not 0x20 <= ord(c) < 0x7F for c in v):
            raise ValueError("must be printable ASCII without backslash")
        return v


class SipCheck(_Check):
    """SIP OPTIONS (RFC 3261 11): healthy when the final answer is one of expect_status."""

    kind: Literal["sip"]
    port: _Port = 5060
    transport: Literal["udp", "tcp"] = "udp"
    expect_status: list[Annotated[int, Field(ge=200, le=699)]] = Field(default=[200], min_length=1)


AnyCheck = TcpCheck | HttpCheck | HttpsCheck | ExecCheck | MllpCheck | DicomCheck | SipCheck

MODELS: dict[str, type[_Check]] = {
    "tcp": TcpCheck, "http": HttpCheck, "https": HttpsCheck, "exec": ExecCheck,
    "mllp": MllpCheck, "dicom": DicomCheck, "sip": SipCheck,
}
KINDS = tuple(MODELS)


def _validate(value: Any, _handler: Any) -> AnyCheck:
    # A hand-made discriminator: pydantic's own puts the tag into error paths
    # (checks[2].tcp.port); validating the chosen model here keeps them as checks[2].port.
    if isinstance(value, tuple(MODELS.values())):
        return value  # type: ignore[return-value]
    if not isinstance(value, dict):
        raise PydanticCustomError("check_type", "must be a mapping with a `kind`")
    kind = value.get("kind")
    if kind is None:
        raise PydanticCustomError("check_kind_missing", "`kind` is required, one of: {kinds}",
                                  {"kinds": ", ".join(KINDS)})
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise PydanticCustomError("check_kind", "unknown kind '{kind}', expected one of: {kinds}",
                                  {"kind": str(kind), "kinds": ", ".join(KINDS)})
    return model.model_validate(value)  # type: ignore[return-value]


# The wrap validator never calls the inner (tagged union) validator; the union stays for
# serialisation and JSON schema.
CheckSpec = Annotated[AnyCheck, Field(discriminator="kind"), WrapValidator(_validate)]


def with_default_user(specs: Iterable[AnyCheck], user: str | None) -> tuple[AnyCheck, ...]:
    """The checks, exec ones without a `user` of their own given `user` (config checks_user)."""
    return tuple(s.model_copy(update={"user": user}) if isinstance(s, ExecCheck) and s.user is None
                 and user is not None else s for s in specs)


def check_spec_errors(specs: Iterable[AnyCheck], path: str = "checks") -> list[str]:
    """Rules spanning fields, as 'checks[i].field: message' lines."""
    errs: list[str] = []
    for i, s in enumerate(specs):
        p = f"{path}[{i}]"
        if s.timeout_ms >= s.interval_ms:
            errs.append(f"{p}.timeout_ms: must be less than interval_ms ({s.interval_ms}), got "
                        f"{s.timeout_ms}; otherwise attempts of one check overlap")
        if isinstance(s, HttpsCheck) and not s.verify and s.ca_file:
            errs.append(f"{p}.ca_file: is ignored because verify is false; remove it or set "
                        "verify: true")
    return errs
