"""Operating the cluster from the CLI in a real lab: failover."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import agent_status, all_healthy, assert_no_overlap, cli_json, wait_until


def cli(lab, name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`hacluster ARGS` in server `name`'s namespace with its config: the whole result."""
    node = lab.node(name)
    return subprocess.run(
        ["ip", "netns", "exec", node.netns, sys.executable, "-m", "hacluster_cli.main", *args,
         "--config", str(node.config)], capture_output=True, text=True, timeout=timeout)


def test_failover_to_a_named_member_moves_the_vip_with_no_overlap(lab, monitor):
    wait_until(lambda: all_healthy(lab), 30, "every member alive and healthy")
    old = lab.holders()[0]
    target, third = [n.name for n in lab.nodes if n.name != old]
    # dry run: says what it would do, changes nothing
    dry = cli(lab, third, "failover", "--to", target, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] and (plan["source"], plan["target"]) == (old, target)
    assert lab.holders() == [old]
    # asked through a member that is neither the leader nor the target
    done = cli(lab, third, "failover", "--to", target, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["source"], out["target"], out["vips"]) == (old, target, [lab.vip])
    assert out["switch_ms"] is not None and out["switch_ms"] >= 0, out
    assert lab.holders() == [target]
    assert_no_overlap(monitor)
    # nothing left behind: the old leader is a plain follower, not in handoff
    st = agent_status(lab, old)
    assert st["role"] == "follower" and st["leader"] == target and not st["handoff"], st
    assert lab.holders() == [target]


def test_failover_refuses_clearly_and_changes_nothing(lab):
    wait_until(lambda: all_healthy(lab), 30, "every member alive and healthy")
    old = lab.holders()[0]
    other = next(n.name for n in lab.nodes if n.name != old)
    for args, words in ((("--to", "n9"), "no member 'n9'"),
                        (("--to", old), "already leads"),
                        (("--timeout", "5", "--wait", "99"), "99")):
        r = cli(lab, other, "failover", *args)
        assert r.returncode in (1, 2), (args, r.stdout, r.stderr)
        assert words in r.stderr, (args, r.stderr)
    # a draining member is not eligible to lead
    assert cli_json(lab, old, "drain", other) is not None
    r = cli(lab, old, "failover", "--to", other)
    assert r.returncode == 1 and "draining" in r.stderr, r.stderr
    assert lab.holders() == [old]
    # no --to: the leader picks the member that is eligible
    moved = cli(lab, old, "failover", "--json")
    assert moved.returncode == 0, moved.stderr
    target = json.loads(moved.stdout)["target"]
    assert target not in (old, other) and lab.holders() == [target]
