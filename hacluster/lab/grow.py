"""Grow and shrink a running lab through the product's own commands (issue 16).

`add_server` builds a new server (namespace, certificate, backend, agent), then joins it the
way an operator would: `hacluster members add` run on an existing server. `remove_server`
retires one with `hacluster members remove` (which drains it and, when it holds the VIPs,
moves them away first), then stops it and removes its namespace. Both rewrite every server's
config file (members seed only a new cluster; the services' backends follow the servers)
and reload the agents (SIGHUP), so that the balancing table follows too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

from hacluster import certs
from hacluster.lab.lab import GRPC_PORT, RAFT_PORT, Lab, LabError, LabNode, cli_argv
from hacluster.lab.netns import ip, kill_netns_processes

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def agent_pid(node: LabNode) -> int | None:
    if node.agent is not None:
        return node.agent.pid if node.agent.poll() is None else None
    return node.agent_pid if _alive(node.agent_pid) else None


def _cli(lab: Lab, node: LabNode, *args: str, timeout: float = 60) -> dict:
    cmd = cli_argv(node.netns, *args, "--config", str(node.config), "--json", python=lab.python)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise LabError(f"`hacluster {' '.join(args)}` on {node.name} failed ({proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _asker(lab: Lab, exclude: str) -> LabNode:
    for n in lab.nodes:
        if n.name != exclude and n.voter and agent_pid(n) is not None:
            return n
    raise LabError(f"no running voter left in lab {lab.prefix} to ask")


def reload_agents(lab: Lab, say: Say = _quiet) -> list[str]:
    """SIGHUP every running agent: each re-reads its config file (services, backends...)."""
    done = []
    for n in lab.nodes:
        pid = agent_pid(n)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            done.append(n.name)
    say(f"reloaded {', '.join(done)}")
    return done


def wait_member(lab: Lab, node: LabNode, timeout: float = 30.0) -> dict:
    """Until the new server's agent follows a leader and has the committed membership."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        pid = agent_pid(node)
        if pid is None:
            raise LabError(f"{node.name}: agent exited; log {node.log}:\n{lab.tail(node)}")
        try:
            st = _cli(lab, node, "status", "--agent", "--timeout", "2", timeout=10)
            if st.get("leader") and st.get("commit_index", 0) > 0 and \
                    any(m.get("id") == node.name for m in st.get("members", [])):
                return st
            last = st.get("sentence")
        except (LabError, subprocess.TimeoutExpired, ValueError) as e:
            last = e
        time.sleep(0.2)
    raise LabError(f"{node.name} did not join within {timeout:.0f} s (last: {last})\n{lab.tail(node)}")


def add_server(lab: Lab, non_voter: bool = False, reload: bool = True, say: Say = _quiet) -> LabNode:
    node = lab.new_node()
    node.voter = not non_voter
    say(f"{node.name}: namespace {node.netns} at {node.ip}")
    lab.add_host(node.netns, node.port, node.ip)
    try:
        certs.issue(lab.pki, lab.pki, "node", node.name, [node.ip])
        lab.nodes.append(node)
        lab.write_configs()
        lab.start_backend(node)
        lab.start_agent(node)
        asker = _asker(lab, node.name)
        say(f"{node.name}: hacluster members add on {asker.name}")
        out = _cli(lab, asker, "members", "add", node.name, node.ip, "--raft-port", str(RAFT_PORT),
                   "--grpc-port", str(GRPC_PORT), "--allow-even", *(["--non-voter"] if non_voter else []))
        say(out["detail"])
        wait_member(lab, node)
    except BaseException:
        _discard(lab, node)
        lab.write_configs()
        raise
    if reload:
        reload_agents(lab, say)
    lab.save_description()
    return node


def remove_server(lab: Lab, name: str, reload: bool = True, say: Say = _quiet) -> dict:
    node = lab.node(name)
    asker = _asker(lab, name)
    say(f"{name}: hacluster members remove on {asker.name}")
    out = _cli(lab, asker, "members", "remove", name, "--allow-even", timeout=90)
    say(out["detail"])
    _discard(lab, node)
    lab.write_configs()
    if reload:
        reload_agents(lab, say)
    lab.save_description()
    return out


def _discard(lab: Lab, node: LabNode) -> None:
    """Stop the server's processes (the agent gracefully first) and remove its namespace."""
    pid = agent_pid(node)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            if node.agent is not None and node.agent.poll() is not None:
                break
            time.sleep(0.05)
    kill_netns_processes(node.netns, signal.SIGKILL, spare_observers=False)
    for p in (node.agent, node.backend):
        if p is not None:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    ip("netns", "del", node.netns, check=False)
    if node in lab.nodes:
        lab.nodes.remove(node)
