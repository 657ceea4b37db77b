"""The layout the README's "Layout" section promises, checked on the source: which part may
import which, that the decision-making parts know nothing of gRPC or pysyncobj, and that no
hand-written module grows past a readable size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
LEAF = set()  # stdlib only

# part -> what it may import besides the standard library and itself ("hacluster" alone is
# `from hacluster import __version__` / `clock`). Keep in step with README.md "Layout".
MAY_IMPORT: dict[str, set[str]] = {
    "hacluster": LEAF,
    "hacluster.model": LEAF, "hacluster.errors": LEAF, "hacluster.endpoints": LEAF,
    "hacluster.clock": LEAF, "hacluster.events": LEAF, "hacluster.logs": LEAF,
    "hacluster.sdnotify": LEAF,
    "hacluster.certs": {"cryptography"},
    "hacluster.config": {"hacluster.model", "hacluster.endpoints", "hacluster.dataplane", "hacluster.gossip",
                         "hacluster.health", "hacluster.config_spec", "hacluster.config_hints", "pydantic",
                         "yaml"},
    "hacluster.config_hints": {"hacluster.config_spec", "pydantic"},
    "hacluster.config_host": {"hacluster.config", "hacluster.health", "hacluster.tls"},
    "hacluster.config_spec": {"hacluster.dataplane", "hacluster.health", "pydantic"},
    "hacluster.consensus": {"hacluster.model", "hacluster.config", "hacluster.clock", "pysyncobj"},
    "hacluster.gossip": {"hacluster.model", "hacluster.api", "hacluster.endpoints", "hacluster.tls", "grpc"},
    "hacluster.health": {"hacluster.model", "pydantic", "pydantic_core", "pynetdicom"},
    "hacluster.dataplane": {"hacluster.model", "pydantic"},
    "hacluster.hostops": {"hacluster", "hacluster.model", "hacluster.clock"},
    "hacluster.ha": {"hacluster", "hacluster.model", "hacluster.config", "hacluster.consensus",
                     "hacluster.dataplane", "hacluster.events", "hacluster.errors", "hacluster.gossip",
                     "hacluster.hostops"},
    "hacluster.agent": {"hacluster.clock", "hacluster.model", "hacluster.config", "hacluster.consensus",
                        "hacluster.events", "hacluster.ha", "hacluster.hostops"},
    "hacluster.actions": {"hacluster.model", "hacluster.config", "hacluster.dataplane", "hacluster.errors"},
    "hacluster.tls": {"hacluster", "hacluster.certs", "hacluster.model", "cryptography", "grpc"},
    "hacluster.channels": {"grpc"},
    "hacluster.admin": {"hacluster.api", "hacluster.channels", "hacluster.endpoints", "hacluster.errors",
                        "hacluster.events", "hacluster.gossip", "hacluster.model", "hacluster.tls", "grpc",
                        "grpc_health"},
    "hacluster.metrics": {"hacluster.events", "hacluster.model", "prometheus_client"},
    "hacluster.listener": {"hacluster.certs", "hacluster.endpoints", "hacluster.tls", "prometheus_client"},
    "hacluster.statuspage": {"hacluster.events", "hacluster.model"},
    "hacluster.audit": LEAF,
    "hacluster.roster": {"hacluster.config", "hacluster.model"},
    "hacluster.lab": {"hacluster", "hacluster.certs", "yaml", "hl7"},  # it runs agents; it imports none
    "hacluster.reload": {"hacluster.config", "hacluster.dataplane", "hacluster.events", "hacluster.logs"},
    "hacluster.daemon": {"*"},  # the wiring: everything
    "hacluster_cli": {"hacluster", "hacluster.api", "hacluster.audit", "hacluster.certs",
                      "hacluster.channels", "hacluster.config", "hacluster.config_host",
                      "hacluster.endpoints", "hacluster.gossip", "hacluster.lab", "hacluster.model",
                      "hacluster.tls", "click", "grpc"},
}
# Finer rules inside a part: the HA core reaches Raft and the host only through their contracts.
NEVER = {
    "hacluster.ha": {"hacluster.consensus.raft", "hacluster.consensus.pysyncobj_compat",
                     "hacluster.hostops.netlink", "hacluster.hostops.arp", "hacluster.hostops.conntrackd",
                     "grpc", "pysyncobj"},
    "hacluster.agent": {"hacluster.consensus.raft", "hacluster.hostops.netlink",
                        "hacluster.hostops.conntrackd", "grpc"},
    "hacluster.actions": {"grpc"},
    "hacluster_cli": {"hacluster.agent", "hacluster.daemon", "hacluster.admin", "hacluster.ha",
                      "hacluster.consensus", "hacluster.hostops"},
}
MAX_LINES = 600


def _tracked(pattern: str) -> list[Path]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", pattern], capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / p for p in out]


def _part(path: Path) -> str:
    """hacluster/ha/loop.py -> hacluster.ha; hacluster/admin.py -> hacluster.admin;
    cli/hacluster_cli/main.py -> hacluster_cli; hacluster/__init__.py -> hacluster."""
    rel = path.relative_to(ROOT)
    parts = rel.with_suffix("").parts
    if parts[0] == "cli":
        return "hacluster_cli"
    return "hacluster" if parts[1] == "__init__" else f"hacluster.{parts[1]}"


def _coarse(name: str) -> str:
    top = name.split(".")
    return ".".join(top[:2]) if top[0] == "hacluster" else top[0]


def _imports(path: Path) -> set[str]:
    """Every non-stdlib module the file imports, dotted (`from hacluster import clock` is
    hacluster.clock; `from hacluster import __version__` is the package itself)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "hacluster":
                names |= {"hacluster" if a.name == "__version__" else f"hacluster.{a.name}"
                          for a in node.names}
            else:
                names.add(node.module)
    return {n for n in names if n.split(".")[0] not in STDLIB}


def _product_modules() -> list[Path]:
    return [p for p in _tracked("hacluster/*.py") + _tracked("cli/*.py") if "api" not in p.parts]


@pytest.mark.parametrize("path", _product_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_part_imports_only_what_the_layout_allows(path: Path) -> None:
    part = _part(path)
    assert part in MAY_IMPORT, f"{part} is not in the layout: add it to README.md and MAY_IMPORT"
    allowed = MAY_IMPORT[part]
    where = path.relative_to(ROOT)
    for name in _imports(path):
        coarse = _coarse(name)
        if coarse == part or name.split(".")[0] == part:
            continue
        assert "*" in allowed or coarse in allowed, \
            f"{where} imports {name}: {part} may import {sorted(allowed) or 'the stdlib only'}"
        for banned in NEVER.get(part, ()):
            assert name != banned and not name.startswith(banned + "."), \
                f"{where} imports {name}, which {part} must never reach"


def test_no_hand_written_module_is_longer_than_a_sitting() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _tracked("*.py") if "api" not in p.parts
            and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these (over {MAX_LINES} lines): {long}"


def test_the_agent_module_stays_a_thin_assembly() -> None:
    assert len((ROOT / "hacluster" / "agent.py").read_text().splitlines()) <= 400
