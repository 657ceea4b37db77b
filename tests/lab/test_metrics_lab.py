"""Prometheus metrics of live lab agents: promtool accepts them, and the failover histogram
records the lab's failovers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support.wait import wait_until

from .conftest import all_healthy
from .test_operate import cli

_GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def scrape(lab, name: str) -> str:
    node = lab.node(name)
    r = subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-c", _GET,
                        f"http://{node.ip}:9464/metrics"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def value(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(3) or "").split(","))) == want:
            return float(m.group(4))
    return None


def promtool() -> str:
    found = shutil.which("promtool") or str(Path(sys.executable).parent / "promtool")
    assert Path(found).exists(), "promtool is missing: run scripts/setup.sh (it unpacks it into .venv/bin)"
    return found


def test_live_metrics_pass_promtool_and_the_failover_histogram_records_a_failover(lab):
    wait_until(lambda: all_healthy(lab), 30, "every member alive and healthy")
    old = lab.holders()[0]
    target = next(n.name for n in lab.nodes if n.name != old)
    text = scrape(lab, old)
    check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert value(text, "hacluster_leader") == 1.0 and value(text, "hacluster_vip_held", vip=lab.vip) == 1.0
    assert value(text, "hacluster_members", state="alive") == 3.0
    # the first leader committed the table and health (timed), every member applied it (timed)
    assert value(text, "hacluster_raft_commit_latency_seconds_count") >= 1.0
    assert value(text, "hacluster_nft_apply_duration_seconds_count", result="ok") >= 1.0
    assert value(text, "hacluster_gossip_probe_rtt_seconds_count") >= 1.0
    expiry = value(text, "hacluster_tls_cert_expiry_timestamp_seconds")  # lab certs: 825 days
    assert expiry is not None and expiry - time.time() > 800 * 86400
    before = value(scrape(lab, target), "hacluster_failover_duration_seconds_count", cause="transfer")
    assert before == 0.0
    done = cli(lab, old, "failover", "--to", target)
    assert done.returncode == 0, done.stderr
    after = scrape(lab, target)
    assert value(after, "hacluster_leader") == 1.0
    assert value(after, "hacluster_failover_duration_seconds_count", cause="transfer") == 1.0
    assert value(after, "hacluster_leader_changes_total") >= 1.0
    assert value(scrape(lab, old), "hacluster_vip_held", vip=lab.vip) == 0.0
