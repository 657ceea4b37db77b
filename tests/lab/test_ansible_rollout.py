"""The Ansible role, run for real: ansible-playbook over SSH against three lab servers
(network namespaces running sshd, each with its own install prefix). The cluster forms with
one VIP holder, a second run changes nothing, and a rolling upgrade to a new version keeps
the VIP served: never two holders, and the VIP moves once, by a graceful switchover.

The three tests share one deployment (module scope) and run in order: each builds on the
state the previous one leaves.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from hacluster.lab.lab import Lab, random_prefix
from hacluster.lab.monitor import HolderMonitor
from hacluster.lab.netns import netns_list
from hacluster.lab.traffic import Prober
from tests.support.wait import wait_until

from .conftest import assert_no_overlap
from .rollout import RolloutLab, upgraded_source

UPGRADE_VERSION = "0.1.0+rollout2"
# What the runs measured (playbook durations, the upgrade's longest gap, the drill's switch
# times), for people to read: test-artifacts/ is git-ignored.
FIGURES = Path(__file__).resolve().parents[2] / "test-artifacts" / "ansible-rollout.json"


def record(**figures) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    old = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps({**old, **figures}, indent=2))


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    lab = Lab(random_prefix("t", 7), 3)
    r = RolloutLab(lab, tmp_path_factory.mktemp("wheelhouse"))
    try:
        r.up()
        FIGURES.unlink(missing_ok=True)
        t = time.monotonic()
        r.first = r.playbook("site.yml")
        record(site_first_run_s=round(time.monotonic() - t, 1))
        yield r
    finally:
        r.down()
        assert not [ns for ns in netns_list() if ns.startswith(lab.prefix + "-")]


def test_site_converges_three_servers_into_a_cluster(rollout):
    run = rollout.first
    assert run.rc == 0, run.tail()
    assert set(run.recap) == {"n1", "n2", "n3"}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 and r["changed"] > 0
               for r in run.recap.values()), run.recap
    lab = rollout.lab
    # one holder of the VIP, the cluster healthy as the installed CLI sees it from each server
    assert len(lab.holders()) == 1
    for n in lab.nodes:
        st = rollout.cli(n.name, "status", "--cluster", "--json", "--timeout", "5")
        assert st.returncode == 0, st.stdout + st.stderr
        view = json.loads(st.stdout)
        assert view["healthy"] and view["leader"] == lab.holders()[0], view
    # every agent runs as the unprivileged user, with the two network capabilities only
    for n in lab.nodes:
        pid = rollout.agent_pid(n.name)
        assert pid is not None, f"{n.name}: no agent running"
        status = open(f"/proc/{pid}/status").read()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert uid != "0", f"{n.name}: the agent runs as root"
        eff = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
        assert int(eff, 16) == (1 << 12) | (1 << 13), f"{n.name}: capabilities {eff}"  # NET_ADMIN, NET_RAW
    # the secret and the node key are readable by their owner only
    for n in lab.nodes:
        for f in ("secret", "node.key", "cli.key"):
            mode = (rollout.root(n.name) / "etc/hacluster" / f).stat().st_mode & 0o777
            assert mode == 0o600, f"{n.name}: {f} has mode {mode:o}"
    # and clients are served through the VIP
    out = lab.in_client("curl", "-s", "--max-time", "3", f"http://{lab.vip}/")
    assert out.strip() in {"n1", "n2", "n3"}


def test_second_run_changes_nothing(rollout):
    assert rollout.first.rc == 0, "the first run failed"
    t = time.monotonic()
    run = rollout.playbook("site.yml")
    record(site_second_run_s=round(time.monotonic() - t, 1))
    assert run.rc == 0, run.tail()
    assert {h: r["changed"] for h, r in run.recap.items()} == {"n1": 0, "n2": 0, "n3": 0}, run.tail(120)


def test_a_live_config_change_is_reloaded_not_restarted(rollout):
    """Only a live key changes (the log level): the role reloads every agent (same pids, the
    VIP stays), and the staleness check then finds nothing to restart. An agent without the
    reload call (before issue 16's reload) is restarted instead, one at a time."""
    assert rollout.first.rc == 0, "the first run failed"
    lab = rollout.lab
    pids = {n.name: rollout.agent_pid(n.name) for n in lab.nodes}
    holders = lab.holders()
    can_reload = rollout.cli(lab.nodes[0].name, "reload", "--help").returncode == 0
    t = time.monotonic()
    run = rollout.playbook("site.yml", "-e", json.dumps({"hacluster_log_level": "debug"}))
    record(site_reload_run_s=round(time.monotonic() - t, 1))
    assert run.rc == 0, run.tail()
    assert "the agent reloads its config (only live keys changed)" in run.output, run.tail(60)
    for n in lab.nodes:
        config = (rollout.root(n.name) / "etc/hacluster/hacluster.yaml").read_text()
        assert "log_level: \"debug\"" in config
        stale = subprocess.run([str(rollout.root(n.name) / "opt/hacluster/libexec/hacluster-ctl"), "stale"],
                               capture_output=True, text=True, timeout=30)
        assert stale.stdout.strip() == "no", (n.name, stale.stdout, stale.stderr)
    if can_reload:
        assert {n.name: rollout.agent_pid(n.name) for n in lab.nodes} == pids, run.tail(60)
        assert lab.holders() == holders
    else:
        assert "RUNNING HANDLER [hacluster : Restart hacluster]" in run.output, run.tail(60)
        assert all(rollout.agent_pid(n.name) not in (None, pids[n.name]) for n in lab.nodes)


def test_a_bad_config_value_stops_the_run_and_changes_nothing(rollout):
    assert rollout.first.rc == 0, "the first run failed"
    lab = rollout.lab
    configs = {n.name: (rollout.root(n.name) / "etc/hacluster/hacluster.yaml").read_bytes()
               for n in lab.nodes}
    pids = {n.name: rollout.agent_pid(n.name) for n in lab.nodes}
    holders = lab.holders()
    run = rollout.playbook("site.yml", "--tags", "configure",
                           "-e", json.dumps({"hacluster_timing": {"heartbeat_ms": 1}}))
    assert run.rc != 0
    # the agent's own validator names the bad value...
    assert "timing.heartbeat_ms" in run.output, run.tail(40)
    # ...and the servers keep their config, their agents and the VIP's holder
    for n in lab.nodes:
        assert (rollout.root(n.name) / "etc/hacluster/hacluster.yaml").read_bytes() == configs[n.name]
        assert rollout.agent_pid(n.name) == pids[n.name]
    assert lab.holders() == holders


def test_rolling_upgrade_keeps_the_vip_served(rollout, tmp_path):
    assert rollout.first.rc == 0, "the first run failed"
    lab = rollout.lab
    source = upgraded_source(tmp_path / "src", UPGRADE_VERSION)
    pids_before = {n.name: rollout.agent_pid(n.name) for n in lab.nodes}
    holder_before = lab.holders()
    monitor = HolderMonitor(lab.vip, {n.name: n.netns for n in lab.nodes})
    monitor.start({n.name: n.name in holder_before for n in lab.nodes})
    # A client request every 50 ms through the VIP for the whole upgrade (bounded: 10 min).
    prober = Prober(lab, duration=600, interval=0.05, timeout=1.0)
    try:
        t0 = time.time()
        run = rollout.playbook("rolling_upgrade.yml", "-e", f"hacluster_source_dir={source}")
        t1 = time.time()
        assert run.rc == 0, run.tail(120)
        wait_until(lambda: len(lab.holders()) == 1, 10, "one VIP holder after the upgrade")
    finally:
        prober.proc.terminate()
        out, _ = prober.proc.communicate(timeout=30)
        monitor.stop()
    # every agent restarted, on the new version
    for n in lab.nodes:
        assert rollout.agent_pid(n.name) not in (None, pids_before[n.name]), f"{n.name} not restarted"
        v = rollout.cli(n.name, "status", "--agent", "--json")
        assert v.returncode == 0 and UPGRADE_VERSION in v.stdout, v.stdout + v.stderr
    # never two holders; the VIP moved exactly once, away from the old leader (the failover),
    # and was never dropped and re-taken by one server (a restart without a handover)
    assert_no_overlap(monitor)
    timeline = monitor.timeline()
    start = timeline[0][0]  # the holders read when the monitor started, then kernel events
    initial = [h for t, h in timeline if t == start][-1]
    later = [(t, h) for t, h in timeline if t > start]
    assert len(holder_before) == 1 and initial == frozenset(holder_before), timeline
    owners = [initial] + [h for _, h in later if h]
    moves = [(a, b) for a, b in itertools.pairwise(owners) if a != b]
    assert len(moves) == 1 and holder_before[0] not in moves[0][1], timeline
    assert lab.holders() != holder_before
    empty = [t for t, h in later if not h]
    assert len(empty) <= 1, f"the VIP was without a holder {len(empty)} times: {timeline}"
    # the service stayed up: the longest run of failed requests is a switchover's gap, not
    # an election's (a crashed leader costs >= 300 ms of election timeout plus the claim)
    rows = sorted((json.loads(line) for line in out.splitlines() if line.strip()), key=lambda r: r["t"])
    during = [r for r in rows if t0 <= r["t"] <= t1]
    assert len(during) > 100, f"the client made only {len(during)} requests"
    worst, last_ok = 0.0, None
    for r in during:
        if r["ok"]:
            if last_ok is not None:
                worst = max(worst, r["t"] - last_ok)
            last_ok = r["t"]
    failed = sum(not r["ok"] for r in during)
    record(rolling_upgrade_s=round(t1 - t0, 1), upgrade_requests=len(during), upgrade_failed=failed,
           upgrade_longest_gap_ms=round(worst * 1000, 1))
    assert worst < 0.5, f"longest gap between answered requests: {worst * 1000:.0f} ms ({failed} failed)"


def test_failover_drill_moves_the_vip_to_every_server(rollout):
    assert rollout.first.rc == 0, "the first run failed"
    lab = rollout.lab
    monitor = HolderMonitor.for_lab(lab)
    try:
        run = rollout.playbook("failover_drill.yml")
    finally:
        monitor.stop()
    assert run.rc == 0, run.tail(120)
    assert_no_overlap(monitor)
    # every server held the VIP, and the drill reported a switch time for each move
    assert monitor.holders_ever() == {"n1", "n2", "n3"}, monitor.timeline()
    reported = re.findall(r"(n[123]): (\d+(?:\.\d+)?) ms", run.output)
    record(drill_switch_ms=reported)
    assert {name for name, _ in reported} >= {"n2", "n3"} and len(reported) >= 3, run.tail(40)
