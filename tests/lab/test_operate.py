"""Operating the cluster from the CLI in a real lab: failover."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import agent_status, all_healthy, assert_no_overlap, cli_json, committed, wait_until


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


def _events(lab, name: str, *args: str) -> list[dict]:
    r = cli(lab, name, "events", "--json", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_a_failover_leaves_events_and_a_verifiable_audit_trail_with_who_did_it(lab):
    wait_until(lambda: all_healthy(lab), 30, "every member alive and healthy")
    old = lab.holders()[0]
    target = next(n.name for n in lab.nodes if n.name != old)
    # a reader certificate may look but not act: refused, nothing moves, nothing audited
    reader = ("--cert", str(lab.pki / "lab-reader.crt"), "--key", str(lab.pki / "lab-reader.key"))
    r = cli(lab, old, "failover", "--to", target, *reader)
    assert r.returncode == 4 and "may not act on the cluster" in r.stderr, r.stderr
    assert lab.holders() == [old]
    done = cli(lab, old, "failover", "--to", target, "--json")
    assert done.returncode == 0, done.stderr
    admin = f"hacluster://{lab.prefix}/admin/lab-admin"
    # the new holder's own timeline: it leads by transfer and claimed the VIP
    evs = _events(lab, target)
    assert any(e["kind"] == "leader" and e["text"] == f"{target} leads (term {e['fields']['term']}, by "
               "transfer)" for e in evs), evs
    assert any(e["kind"] == "vip" and e["fields"]["vip"] == lab.vip and e["fields"]["by_transfer"] == "True"
               for e in evs), evs
    # merged: the old leader's release and the admin action with its author
    merged = _events(lab, target, "--all")
    assert any(e["node"] == old and e["kind"] == "vip" and e["text"] == f"released {lab.vip}"
               for e in merged), merged
    acts = [e for e in merged if e["kind"] == "admin" and e["fields"]["action"] == "failover"]
    assert len(acts) == 1 and acts[0]["node"] == old and acts[0]["fields"]["who"] == admin, acts
    # the audit log on the node that executed it: started + outcome, chained, verifiable
    audit = lab.node(old).data_dir / "audit.jsonl"
    v = subprocess.run([sys.executable, "-m", "hacluster_cli.main", "audit", "verify", str(audit), "--json"],
                       capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, v.stdout + v.stderr
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["action"], r["result"] == "started", r["ok"], r["who"]) for r in records] == [
        ("failover", True, True, admin), ("failover", False, True, admin)], records
    # an edited line is detected
    lines = audit.read_text().splitlines()
    lines[0] = lines[0].replace(admin, admin.replace("lab-admin", "someone-else"))
    audit.write_text("\n".join(lines) + "\n")
    v = subprocess.run([sys.executable, "-m", "hacluster_cli.main", "audit", "verify", str(audit)],
                       capture_output=True, text=True, timeout=30)
    assert v.returncode == 1 and "line 1" in (v.stdout + v.stderr), v.stdout + v.stderr


def _backend_state(view: dict, node: str) -> str:
    return next(b["state"] for s in view["services"] if s["name"] == "web" for b in s["backends"]
                if b["id"] == node)


def test_maintenance_freezes_the_table_while_health_is_still_committed(lab):
    wait_until(lambda: all_healthy(lab), 30, "every member alive and healthy")
    holder = lab.holders()[0]
    victim = next(n for n in lab.nodes if n.name != holder)
    on = cli_json(lab, holder, "maintenance", "on")
    assert on is not None and "maintenance mode ON" in on["detail"], on
    assert all(agent_status(lab, n.name)["maintenance"] for n in lab.nodes)
    frozen = cli_json(lab, holder, "backends")["table_generation"]
    lab.stop_backend(victim)
    # health is still checked and committed ...
    wait_until(lambda: (c := cli_json(lab, holder, "checks")) is not None
               and committed(c, victim.name) is False, 30, f"{victim.name}/web committed down")
    # ... but the table stays as it was
    view = cli_json(lab, holder, "backends")
    assert view["table_generation"] == frozen and _backend_state(view, victim.name) == "active", view
    assert "MAINTENANCE" in agent_status(lab, holder)["sentence"]
    off = cli_json(lab, holder, "maintenance", "off")
    assert off is not None and not agent_status(lab, holder)["maintenance"]
    wait_until(lambda: (v := cli_json(lab, holder, "backends")) is not None
               and _backend_state(v, victim.name) == "down", 30, "the table following health again")


def test_a_drained_leader_hands_over_to_an_eligible_member(lab, monitor):
    wait_until(lambda: all_healthy(lab), 30, "every member alive and healthy")
    old = lab.holders()[0]
    assert cli_json(lab, old, "drain", old) is not None
    new = wait_until(lambda: (h := lab.holders()) and h != [old] and len(h) == 1 and h[0], 30,
                     f"{old}, drained, handing over")
    assert new != old
    assert_no_overlap(monitor)
    st = agent_status(lab, old)
    assert st["role"] == "follower" and st["leader"] == new, st
