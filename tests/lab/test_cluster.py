"""A real 3-server cluster in network namespaces, real faults, I1 checked throughout."""

from __future__ import annotations

import signal
import time

from hacluster.lab.netns import LabError
from tests.support.wait import wait_until

from .conftest import agent_status, all_healthy, assert_no_overlap


def others(lab, name):
    return tuple(n.name for n in lab.nodes if n.name != name)


def test_election_gives_exactly_one_holder_and_status_agrees(lab, monitor):
    holder = lab.wait_single_holder(10)
    st = agent_status(lab, holder)
    assert st["role"] == "leader" and st["leader"] == holder and st["lease_ok"]
    assert st["has_quorum"] and st["vips"][0]["held"]
    assert st["sentence"].startswith(f"leader, term {st['term']}, lease ok, holds {lab.vip}, table gen")
    assert all(m["connected"] for m in st["members"])
    for name in others(lab, holder):
        f = agent_status(lab, name)
        assert f["role"] == "follower" and f["leader"] == holder and not f["vips"][0]["held"]
        assert f["sentence"].startswith(f"follower of {holder}")
    served = lab.in_client("curl", "-s", "--max-time", "2", f"http://{lab.vip}/").strip()
    assert served in {n.name for n in lab.nodes}  # balanced over every server's backend
    assert_no_overlap(monitor)


def test_holder_power_off_moves_the_vip(lab, monitor):
    old = lab.wait_single_holder(10)
    lab.power_off(lab.node(old))
    new = lab.wait_single_holder(5, exclude=(old,))
    assert new != old
    alive = {n.name for n in lab.nodes} - {old}
    # Through the new holder's table: until the dead server's backend is committed down, a
    # third of new flows still go to it and time out; then only live servers answer.
    def served() -> bool:
        try:
            return lab.in_client("curl", "-s", "--max-time", "1", f"http://{lab.vip}/").strip() in alive
        except LabError:  # curl failed: this flow went to the dead server's backend
            return False
    wait_until(served, 15, "the VIP served by a live server")
    assert_no_overlap(monitor)


def test_partitioned_holder_drops_vip_before_majority_claims(lab, monitor):
    old = lab.wait_single_holder(10)
    lab.partition(lab.node(old))  # peers cut off, client path still up
    new = lab.wait_single_holder(5, exclude=(old,))
    assert new != old
    st = wait_until(lambda: (s := agent_status(lab, old)) and not s["vips"][0]["held"] and s,
                    5, f"{old} to report it holds nothing")
    assert st["role"] != "leader" or not st["lease_ok"]
    assert_no_overlap(monitor)
    # Heal: the old leader rejoins as a follower and the cluster keeps one holder. (Usually
    # of the same leader, thanks to pre-vote; about one heal in ten still sees one more
    # leader change -- a known liveness issue, see the closing note -- so the test asserts
    # the safety properties only.)
    lab.heal(lab.node(old))
    # Reconnecting waits out pysyncobj's connect timeout (2 s) and TCP's SYN retry (1 s).
    wait_until(lambda: (s := agent_status(lab, old)) and s["leader"] not in (None, old), 15,
               f"{old} to follow the new leader")
    lab.wait_single_holder(5, exclude=(old,))
    assert_no_overlap(monitor)


def test_one_way_partition_never_gives_two_holders(lab, monitor):
    old = lab.wait_single_holder(10)
    lab.partition(lab.node(old), one_way="in")  # the leader hears nothing, peers hear it
    new = lab.wait_single_holder(5, exclude=(old,))
    assert new != old
    lab.heal(lab.node(old))
    wait_until(lambda: lab.holders() == [new] or len(lab.holders()) == 1, 5, "one holder")
    assert_no_overlap(monitor)


def test_kill9_agent_waits_for_kernel_lifetime_then_moves(lab, monitor):
    old = lab.wait_single_holder(10)
    node = lab.node(old)
    lab.signal_agent(node, signal.SIGKILL)
    # The killed agent's kernel keeps the VIP until its lifetime ends; the new leader's ARP
    # probe sees it and waits, so there is never a second holder.
    new = lab.wait_single_holder(8, exclude=(old,))
    assert new != old
    assert_no_overlap(monitor)


def test_sigstop_then_cont_gives_no_second_holder(lab, monitor):
    old = lab.wait_single_holder(10)
    node = lab.node(old)
    lab.signal_agent(node, signal.SIGSTOP)
    try:
        new = lab.wait_single_holder(8, exclude=(old,))
        t_stop = time.monotonic()
        wait_until(lambda: time.monotonic() - t_stop > 1.0 and lab.holders() == [new], 5,
                   "the frozen node to stay without the VIP")
    finally:
        lab.signal_agent(node, signal.SIGCONT)
    wait_until(lambda: (s := agent_status(lab, old)) and s["leader"] == new, 5,
               f"thawed {old} to follow {new}")
    assert lab.holders() == [new]
    assert_no_overlap(monitor)


def test_sigterm_on_leader_hands_over_and_exits_cleanly(lab, monitor):
    old = lab.wait_single_holder(10)
    node = lab.node(old)
    lab.signal_agent(node, signal.SIGTERM)
    new = lab.wait_single_holder(3, exclude=(old,))
    assert lab.wait_agent_exit(node, 5) == 0
    log = node.log.read_text()
    assert "released VIP" in log and "handed leadership over" in log
    assert "by transfer, no probe" in lab.node(new).log.read_text()
    assert_no_overlap(monitor)


def test_follower_killed_does_not_move_the_vip(lab, monitor):
    holder = lab.wait_single_holder(10)
    victim = others(lab, holder)[0]
    term = agent_status(lab, holder)["term"]
    lab.power_off(lab.node(victim))
    wait_until(lambda: (s := agent_status(lab, holder)) and not next(
        m for m in s["members"] if m["id"] == victim)["connected"], 5, f"{victim} link down")
    st = agent_status(lab, holder)
    assert st["role"] == "leader" and st["term"] == term and st["lease_ok"]
    assert monitor.holders_ever() == {holder}
    assert_no_overlap(monitor)


def test_whole_cluster_restart_keeps_state_and_terms_go_forward(lab):
    holder = lab.wait_single_holder(10)
    # Let the first health verdicts land first, so the state is quiet when we kill: then the
    # restart must add exactly one entry (the new leader's epoch) and lose none.
    wait_until(lambda: all_healthy(lab), 30, "every backend committed up")
    before = agent_status(lab, holder)
    for n in lab.nodes:
        lab.signal_agent(n, signal.SIGKILL)
    for n in lab.nodes:
        lab.wait_agent_exit(n, 5)
        lab.start_agent(n)
    def new_leader():
        # Not wait_single_holder(): the killed holder's kernel keeps the VIP for its lifetime.
        for n in lab.nodes:
            s = agent_status(lab, n.name)
            if s and s["role"] == "leader" and s["lease_ok"] and s["epoch_term"] == s["term"]:
                return s
        return None

    after = wait_until(new_leader, 15, "a new leader with its epoch applied")
    lab.wait_single_holder(5)
    assert after["term"] > before["term"]
    # nothing lost: the generation goes on from where it was. One new epoch, plus, when the
    # new leader's election followed the old holder's silence (every agent was killed), its
    # suspicion by election and the rejoin that clears it (docs/health.md): up to +4.
    assert before["generation"] + 1 <= after["generation"] <= before["generation"] + 4, (before, after)
    wait_until(lambda: all_healthy(lab), 30, "every backend committed up again")
    for n in lab.nodes:
        s = wait_until(lambda n=n: agent_status(lab, n.name), 5, f"{n.name} status")
        assert s["term"] >= after["term"] - 0 and s["commit_index"] >= before["commit_index"]


def test_agent_refuses_to_start_without_secret(lab):
    node = lab.node("n3")
    lab.signal_agent(node, signal.SIGKILL)
    lab.wait_agent_exit(node, 5)
    bad = node.config.with_name("nosecret.yaml")
    bad.write_text(node.config.read_text().replace(str(lab.dir / "secret"),
                                                   str(lab.dir / "missing-secret")))
    lab.start_agent(node, config=bad)
    assert lab.wait_agent_exit(node, 10) == 2
    assert "refuses to start without a cluster secret" in node.log.read_text()


def test_node_with_wrong_secret_cannot_join(lab):
    holder = lab.wait_single_holder(10)
    victim = others(lab, holder)[0]
    node = lab.node(victim)
    lab.signal_agent(node, signal.SIGKILL)
    lab.wait_agent_exit(node, 5)
    wrong = lab.dir / "wrong-secret"
    wrong.write_text("w" * 40 + "\n")
    wrong.chmod(0o600)
    bad = node.config.with_name("wrong.yaml")
    bad.write_text(node.config.read_text().replace(str(lab.dir / "secret"), str(wrong)))
    lab.start_agent(node, config=bad)
    wait_until(lambda: agent_status(lab, victim, bad) is not None, 10, "the agent to serve status")
    # Watch it for 2 s: it must never learn the leader nor be seen connected by the leader.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        s = agent_status(lab, victim, bad)
        assert s["leader"] is None and s["role"] != "leader"
        lead = agent_status(lab, holder)
        assert not next(m for m in lead["members"] if m["id"] == victim)["connected"]
        time.sleep(0.2)  # pacing: each look spawns two CLI processes
    assert lab.holders() == [holder]
