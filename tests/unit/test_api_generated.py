"""hacluster/api/ is generated: it must match what scripts/gen_proto.sh makes from proto/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) is not installed")

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "hacluster" / "api"
HAND_WRITTEN = {"__init__.py"}


def _generated(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.is_file() and p.name not in HAND_WRITTEN and p.suffix in (".py", ".pyi")}


def test_committed_api_matches_proto(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run scripts/gen_proto.sh")
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    fresh, committed = _generated(tmp_path), _generated(API)
    assert fresh, "gen_proto.sh produced nothing"
    assert sorted(committed) == sorted(fresh), (
        "hacluster/api/ and proto/ disagree on which files exist; run scripts/gen_proto.sh")
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, (f"{stale} differ from what proto/ generates (edited by hand, or proto/ "
                       "changed, or another grpcio-tools version); run scripts/gen_proto.sh")


def test_generated_imports_resolve_inside_hacluster_api() -> None:
    from hacluster.api import admin_pb2, admin_pb2_grpc

    assert admin_pb2.DESCRIPTOR.name == "hacluster/v1/admin.proto"
    assert admin_pb2.DESCRIPTOR.package == "hacluster.v1"
    assert admin_pb2_grpc.AdminStub is not None
