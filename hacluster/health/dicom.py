"""DICOM C-ECHO check (Verification SOP class) with pynetdicom.

pynetdicom blocks, so each attempt runs in a thread of its own (base.in_daemon_thread). The
asyncio timeout answers the runner on time; pynetdicom's own connection, ACSE, DIMSE and
network timeouts are set to the check's timeout as well, so the abandoned thread of a hung
attempt also ends soon after (at most a few timeouts later: connect, association, echo,
release) instead of piling up one thread per interval.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from typing import Any

from hacluster.health.base import Attempt, Outcome, bounded, describe_error, hostport, in_daemon_thread
from hacluster.health.spec import DicomCheck

_import_lock = threading.Lock()
_loaded: Any = None


def target(spec: DicomCheck, host: str) -> str:
    return f"dicom://{spec.called_ae.strip()}@{hostport(host, spec.port)}"


def _pynetdicom() -> Any:
    # Imported on first use: pydicom is heavy (~0.2 s) and most nodes run no DICOM check.
    global _loaded
    with _import_lock:
        if _loaded is None:
            import pynetdicom
            import pynetdicom.pdu_primitives
            import pynetdicom.sop_class  # noqa: F401  (loaded here, used in _echo)

            log = logging.getLogger("pynetdicom")
            if log.level == logging.NOTSET:
                # It logs every refused or rejected association at ERROR; the check's
                # error already says it, once, without protocol detail every interval.
                log.setLevel(logging.CRITICAL)
            _loaded = pynetdicom
        return _loaded


def _connect_error(addr: str, port: int, timeout_s: float) -> str:
    """Why TCP failed: pynetdicom only logs it, so ask the socket layer once more."""
    try:
        with socket.create_connection((addr, port), timeout=max(timeout_s, 0.05)):
            return "connection failed"  # it works now: a flapping listener
    except OSError as e:
        return describe_error(e)


def _reject_text(p: Any) -> str:
    reason = str(p.reason_str)
    kind = "transient" if p.result == 2 else "permanent"
    return f"association rejected ({kind}): {reason[:1].lower()}{reason[1:]}"


def _echo(spec: DicomCheck, addr: str, timeout_s: float) -> tuple[bool, float | None, str]:
    """One association + C-ECHO + release, blocking. Returns (ok, latency_ms, error)."""
    pnd = _pynetdicom()
    from pynetdicom.pdu_primitives import A_ASSOCIATE
    from pynetdicom.sop_class import Verification

    ae = pnd.AE(ae_title=spec.calling_ae)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    seen: dict[str, Any] = {"open": False, "answer": None}

    def on_open(_event: Any) -> None:
        seen["open"] = True

    def on_acse(event: Any) -> None:
        if isinstance(event.primitive, A_ASSOCIATE) and event.primitive.result is not None:
            seen["answer"] = event.primitive

    started = time.perf_counter()
    assoc = ae.associate(addr, spec.port, ae_title=spec.called_ae, evt_handlers=[
        (pnd.evt.EVT_CONN_OPEN, on_open), (pnd.evt.EVT_ACSE_RECV, on_acse)])
    if not assoc.is_established:
        answer = seen["answer"]
        if not seen["open"]:
            return False, None, _connect_error(addr, spec.port, timeout_s)
        ms = round((time.perf_counter() - started) * 1000, 3)
        if answer is None:
            return False, None, "no answer to the association request"
        if answer.result in (1, 2):
            return False, ms, _reject_text(answer)
        return False, ms, "association accepted without the Verification SOP class"
    try:
        status = assoc.send_c_echo()
        ms = round((time.perf_counter() - started) * 1000, 3)
        if "Status" not in status:
            return False, None, "no C-ECHO response"
        if status.Status != 0x0000:
            return False, ms, f"C-ECHO status 0x{status.Status:04X}"
        return True, ms, ""
    finally:
        if assoc.is_established:
            assoc.release()


async def _resolve(host: str, port: int) -> str:
    """pynetdicom wants an IP address: resolve names here, where waiting is cancellable."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return str(infos[0][4][0])


async def probe(spec: DicomCheck, host: str) -> Outcome:
    timeout_s = spec.timeout_ms / 1000
    if _loaded is None:  # the one-time import must not count against the first attempt
        await in_daemon_thread(_pynetdicom)

    async def run(at: Attempt) -> Outcome:
        addr = await _resolve(host, spec.port)
        at.step = "waiting for the association and C-ECHO"
        ok, ms, error = await in_daemon_thread(_echo, spec, addr, timeout_s)
        return Outcome(ok, ms, error)

    return await bounded(spec.timeout_ms, run)
