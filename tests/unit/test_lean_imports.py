"""What an agent imports is what its config uses (issue 17: an idle agent's memory): probe
modules of unused check kinds, the userspace proxy beside nftables, and the CLI stay out.
Each case runs in a fresh interpreter, where sys.modules shows what was loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BUILD = """
import json, sys
from unittest import mock
from tests.support.config import config
from hacluster import daemon
from hacluster.dataplane.apply import NftApplier
from hacluster.health.runner import HealthRunner

c = config(checks=CHECKS, services=[{"name": "web", "vip": "10.0.0.100", "port": 80,
           "backend_port": 8080, "backends": [{"address": "10.0.0.21"}]}])
with mock.patch.object(NftApplier, "available", lambda self: (True, "")):
    daemon._make_dataplane(c, None)
runner = HealthRunner(c.checks, default_host="10.0.0.11")
daemon._say_how_exec_checks_run(c.checks)
print(json.dumps(sorted(sys.modules)))
"""


def loaded(checks: list[dict]) -> set[str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", BUILD.replace("CHECKS", repr(checks))], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_an_agent_loads_the_probe_modules_of_its_check_kinds_only():
    mods = loaded([{"name": "web", "kind": "http", "port": 80}])
    assert "hacluster.health.http" in mods
    unused = {"hacluster.health.dicom", "hacluster.health.sip", "hacluster.health.mllp",
              "hacluster.health.exec_check", "pynetdicom", "pydicom"}
    assert not unused & mods, unused & mods
    # nftables serves the table: the userspace proxy is never built, nor imported
    assert "hacluster.dataplane.proxy" not in mods
    # the CLI and the lab's tools are never part of an agent
    assert not {m for m in mods if m.split(".")[0] in ("hacluster_cli", "click", "hl7")}
    assert "hacluster.lab" not in mods


def test_a_dicom_check_loads_its_probe_module():
    mods = loaded([{"name": "pacs", "kind": "dicom", "port": 104}])
    assert "hacluster.health.dicom" in mods and "hacluster.health.http" not in mods
