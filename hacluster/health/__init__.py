"""Health checks: one module per kind, a common interface, rise/fall hysteresis.

Every kind module exposes `async def probe(spec, host) -> Outcome` (never raises for a
failing target) and `target(spec, host) -> str` (what it checks, for humans). `spec.py`
holds the config models, `runner.py` runs the checks on their intervals in a thread of
their own and turns results into `model.CheckReport`s, `load.py` samples CPU and memory.
Imports only `model` from the rest of hacluster (DESIGN.md §1).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# kind -> module (imported at its first use: an agent loads the kinds its checks use, and the
# config, which imports spec.py through this package, loads none); http and https share one.
PROBES: dict[str, str] = {
    "tcp": "tcp",
    "http": "http",
    "https": "http",
    "exec": "exec_check",
    "mllp": "mllp",
    "dicom": "dicom",
    "sip": "sip",
}


def module_for(kind: str) -> ModuleType:
    try:
        name = PROBES[kind]
    except KeyError:
        raise ValueError(f"unknown check kind {kind!r}, expected one of: {', '.join(PROBES)}") from None
    return importlib.import_module(f"{__name__}.{name}")
