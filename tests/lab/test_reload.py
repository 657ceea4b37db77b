"""Config reload in a running lab (issue 16 item 3): a client connects through the VIP every
20 ms while every member's file gains a backend and a weight and the agents reload (SIGHUP and
`hacluster reload`): no failed request, the VIP never moves, and the holder's kernel table
carries the new backend and weight. A reload that changes a restart-only key changes nothing."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from typing import Any

from hacluster.lab.lab import METRICS_PORT, Lab, cli_argv
from hacluster.lab.monitor import HolderMonitor
from hacluster.lab.traffic import Prober
from tests.lab.conftest import assert_no_overlap, events
from tests.support.wait import wait_until

INTERVAL_S = 0.02


def web_slots(lab: Lab, holder: str) -> collections.Counter[str] | None:
    """The web service's slots in the holder's kernel table: backend address -> slot count
    (`nft -j list table inet hacluster`; the map m_web_*, one element per slot)."""
    proc = subprocess.run(["ip", "netns", "exec", lab.node(holder).netns, "nft", "-j", "list", "table",
                           "inet", "hacluster"], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return None
    for item in json.loads(proc.stdout)["nftables"]:
        m = item.get("map")
        if m and m["name"].startswith("m_web_"):
            return collections.Counter(_address(v) for _, v in m.get("elem", []))
    return None


def _address(value: Any) -> str:
    # `0 : 10.x.y.z` is [0, "10.x.y.z"]; a target with a port would be {"concat": [...]}
    return value if isinstance(value, str) else value["concat"][0]


def web_backends(lab: Lab, with_x1: bool, n2_weight: int = 1):
    def change(doc: dict[str, Any]) -> None:
        web = next(s for s in doc["services"] if s["name"] == "web")
        web["backends"] = [{"node": "n1"}, {"node": "n2", "weight": n2_weight}, {"node": "n3"}] \
            + ([{"address": lab.externals[0].ip}] if with_x1 else [])
    return change


def metrics_answer(lab: Lab, name: str, port: int) -> bool:
    node = lab.node(name)
    get = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()"
    proc = subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-c", get,
                           f"http://{node.ip}:{port}/metrics"], capture_output=True, timeout=20)
    return proc.returncode == 0


def reload_cli(lab: Lab, name: str) -> tuple[int, dict[str, Any]]:
    node = lab.node(name)
    proc = subprocess.run(cli_argv(node.netns, "reload", "--json", "--config", str(node.config)),
                          capture_output=True, text=True, timeout=30)
    return proc.returncode, json.loads(proc.stdout)


def test_reload_adds_a_backend_and_a_weight_with_no_failed_request_and_no_vip_move(lab_factory):
    lab = lab_factory(externals=1, algorithm="weighted")
    names = [n.name for n in lab.nodes]
    x1, ips = lab.externals[0].ip, {n.ip: n.name for n in lab.nodes}
    holder = lab.wait_single_holder(10)
    wait_until(lambda: (web_slots(lab, holder) or {}).get(x1) == 1, 15, "the first table with x1")

    # Before the client starts: x1 out of web (a reload that removes a backend), every member.
    for n in lab.nodes:
        lab.edit_config(n, web_backends(lab, with_x1=False))
        lab.reload(n)
    wait_until(lambda: web_slots(lab, holder) == {ip: 1 for ip in ips}, 15, "web without x1")

    monitor = HolderMonitor.for_lab(lab)
    prober = Prober(lab, duration=8.0, interval=INTERVAL_S, timeout=1.0)
    try:
        wait_until(lambda: lab.holders() == [holder], 5, "the holder still holding")
        for n in lab.nodes:
            lab.edit_config(n, web_backends(lab, with_x1=True, n2_weight=3))
        t0 = time.monotonic()
        lab.reload(lab.node("n1"))  # SIGHUP, as systemctl reload does
        lab.reload(lab.node("n2"))
        code, out = reload_cli(lab, "n3")  # the admin RPC
        assert code == 0 and out["applied"], out
        assert f"service web: backend {x1}:0 added (weight 1)" in out["changes"]
        assert "service web: backend n2 weight 1 -> 3" in out["changes"]
        n2_ip = lab.node("n2").ip
        want = {**{ip: 1 for ip in ips}, n2_ip: 3, x1: 1}
        wait_until(lambda: web_slots(lab, holder) == want, 15, "the new backend and weight in nft")
        in_kernel_s = time.monotonic() - t0
        attempts = prober.result()
    finally:
        prober.kill()
        monitor.stop()

    failed = [a for a in attempts if not a.ok]
    print(f"reload: {len(attempts)} requests every {INTERVAL_S * 1000:.0f} ms, {len(failed)} failed; "
          f"reloads sent -> new table in the holder's kernel {in_kernel_s:.2f} s (incl. the CLI call); "
          f"served by {dict(collections.Counter(a.server for a in attempts))}")
    assert len(attempts) > 8.0 / INTERVAL_S * 0.8, len(attempts)
    assert failed == [], f"{len(failed)} failed requests of {len(attempts)}, first at {failed[0].t}"
    assert "x1" in {a.server for a in attempts}  # the new backend served clients
    assert monitor.holders_ever() == {holder} and lab.holders() == [holder]
    assert_no_overlap(monitor)
    for name in names:  # every agent says so in its timeline
        assert any(e["kind"] == "agent" and "config reload" in e["text"] and "applied" in e["text"]
                   for e in events(lab, name)), name


def test_a_restart_only_key_is_refused_and_changes_nothing_then_the_metrics_listener_moves(lab_factory):
    lab = lab_factory(algorithm="weighted")
    holder = lab.wait_single_holder(10)
    ips = {n.ip for n in lab.nodes}
    wait_until(lambda: web_slots(lab, holder) == {ip: 1 for ip in ips}, 15, "the first table")
    node = lab.node(holder)

    def change(doc: dict[str, Any]) -> None:
        web_backends(lab, with_x1=False, n2_weight=5)(doc)
        doc["timing"] = {**doc.get("timing", {}), "heartbeat_ms": 40}
        doc["log_level"] = "debug"
    lab.edit_config(node, change)
    code, out = reload_cli(lab, holder)
    assert code == 1 and not out["applied"], out
    assert [k["key"] for k in out["restart_keys"]] == ["timing"]
    assert "service web: backend n2 weight 1 -> 5" in out["changes"]  # said, not applied
    lab.reload(node)  # SIGHUP: refused the same way, recorded in the timeline
    wait_until(lambda: any("config reload (SIGHUP): refused: timing" in e["text"]
                           for e in events(lab, holder)), 10, "the SIGHUP refusal event")
    assert web_slots(lab, holder) == {ip: 1 for ip in ips}
    assert lab.holders() == [holder]

    # the same file without the timing change: applied, and the metrics listener moves
    def fix(doc: dict[str, Any]) -> None:
        doc["timing"].pop("heartbeat_ms")
        doc["metrics"]["listen"] = f"{node.ip}:{METRICS_PORT + 1}"
    lab.edit_config(node, fix)
    code, out = reload_cli(lab, holder)
    assert code == 0 and out["applied"], out
    assert f"metrics.listen: {node.ip}:{METRICS_PORT} -> {node.ip}:{METRICS_PORT + 1}" in out["changes"]
    assert metrics_answer(lab, holder, METRICS_PORT + 1) and not metrics_answer(lab, holder, METRICS_PORT)
    wait_until(lambda: web_slots(lab, holder) == {**{ip: 1 for ip in ips}, lab.node("n2").ip: 5}, 15,
               "the holder's own file's weight in its table")
    assert lab.holders() == [holder]
