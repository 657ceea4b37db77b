"""Health checks: one module per kind, a common interface, rise/fall hysteresis.

Every kind module exposes `async def probe(spec, host) -> Outcome` (never raises for a
failing target) and `target(spec, host) -> str` (what it checks, for humans). `spec.py`
holds the config models, `runner.py` runs the checks on their intervals in a thread of
their own and turns results into `model.CheckReport`s, `load.py` samples CPU and memory.
Imports only `model` from the rest of hacluster (DESIGN.md §1).
"""

from __future__ import annotations

from types import ModuleType

from hacluster.health import dicom, exec_check, http, mllp, sip, tcp

# kind -> module; http and https share one module.
PROBES: dict[str, ModuleType] = {
    "tcp": tcp,
    "http": http,
    "https": http,
    "exec": exec_check,
    "mllp": mllp,
    "dicom": dicom,
    "sip": sip,
}


def module_for(kind: str) -> ModuleType:
    try:
        return PROBES[kind]
    except KeyError:
        raise ValueError(f"unknown check kind {kind!r}, expected one of: {', '.join(PROBES)}") from None
