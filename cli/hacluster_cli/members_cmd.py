"""`hacluster members add|remove|replace|promote|demote`: change the committed membership.

The change is made by the leader (ChangeMembers); any member can be asked: the command finds
the leader, and when the leader itself is to be removed or demoted, it first moves leadership
and the VIPs away gracefully (as `hacluster failover` does), then asks the new leader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
import grpc

from hacluster.api import admin_pb2
from hacluster_cli.client import (
    AdminCallError,
    _call,
    _leader_target,
    failover,
    fetch_status,
)
from hacluster_cli.safe_text import printable

CHANGE_TIMEOUT_S = 30.0  # a removal drains and waits for two commits: more than a flag


def change_members(target: str, creds: grpc.ChannelCredentials, op: str, node: str, *,
                   new_node: str = "", address: str = "", raft_port: int = 0, grpc_port: int = 0,
                   non_voter: bool = False, allow_even: bool = False,
                   timeout: float = CHANGE_TIMEOUT_S, progress: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    st = fetch_status(target, creds, timeout)
    leader = _leader_target(st, target)
    moved = None
    if op in ("remove", "demote") and st.leader == node:
        say(f"{node} leads and holds the VIPs: moving leadership away first")
        moved = failover(target, creds, None, False, 3.0, timeout, say)
        say(moved["detail"])
        st = fetch_status(target, creds, timeout)
        if st.leader == node or st.leader is None:
            raise AdminCallError(f"leadership did not move away from {node}: nothing removed")
        leader = _leader_target(st, target)
    say(f"asking the leader {st.leader} ({leader})")
    r = _call(leader, creds, max(timeout, CHANGE_TIMEOUT_S), "ChangeMembers", admin_pb2.ChangeMembersRequest(
        op=op, node=node, new_node=new_node, address=address, raft_port=raft_port,
        grpc_port=grpc_port, non_voter=non_voter, allow_even=allow_even))
    return {"op": op, "node": node, "detail": r.detail, "steps": list(r.steps),
            "members_generation": r.members_generation, "leader": st.leader,
            "moved_leadership": moved is not None}


def register(group: click.Group, agent_options: Callable[[Any], Any],
             ask: Callable[[dict[str, Any], Callable[[str, Any], Any]], Any]) -> None:
    """Add the subcommands to the `members` group (main.py owns the shared options)."""

    def run(conn: dict[str, Any], as_json: bool, timeout: float, op: str, node: str, **kw: Any) -> None:
        def progress(msg: str) -> None:
            if not as_json:
                click.echo(printable(msg), err=True)
        out = ask(conn, lambda t, k: change_members(t, k, op, node, timeout=max(timeout, CHANGE_TIMEOUT_S),
                                                    progress=progress, **kw))
        if as_json:
            click.echo(json.dumps(out))
        else:
            for step in out["steps"]:
                click.echo(printable(f"  {step}"), err=True)
            click.echo(printable(out["detail"]))

    ports = [click.option("--raft-port", type=click.IntRange(1, 65535), default=7000, show_default=True,
                          help="Its Raft port."),
             click.option("--grpc-port", type=click.IntRange(1, 65535), default=7001, show_default=True,
                          help="Its gRPC (gossip and admin) port.")]
    even = click.option("--allow-even", is_flag=True,
                        help="Accept an even number of voters (a 50/50 split then leaves no side "
                        "with a quorum).")

    def with_ports(fn: Any) -> Any:
        for opt in reversed(ports):
            fn = opt(fn)
        return fn

    @group.command("add")
    @click.argument("node", metavar="ID")
    @click.argument("address", metavar="ADDRESS")
    @with_ports
    @click.option("--non-voter", is_flag=True, help="A member that gossips, runs checks, serves "
                  "backends and holds the replicated table, but never votes or leads.")
    @even
    @agent_options
    def add(node: str, address: str, raft_port: int, grpc_port: int, non_voter: bool, allow_even: bool,
            conn: dict[str, Any], as_json: bool, timeout: float) -> None:
        """Add a server to the running cluster (no restart of the others).

        Start the new server's agent with a config that lists the cluster's members and
        itself; then add it here. A voter is first committed as a member (every member's
        Raft guard and gossip then admit it), then added to Raft's configuration. One change
        at a time; refused with the reason when the cluster has no quorum or the voter count
        would be even (--allow-even, or --non-voter).

        \b
        Examples:
          hacluster members add ward-4 10.0.0.14
          hacluster members add lab-7 10.0.0.17 --non-voter --raft-port 7100 --grpc-port 7101
        """
        run(conn, as_json, timeout, "add", node, address=address, raft_port=raft_port,
            grpc_port=grpc_port, non_voter=non_voter, allow_even=allow_even)

    @group.command("remove")
    @click.argument("node", metavar="ID")
    @even
    @agent_options
    def remove(node: str, allow_even: bool, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
        """Retire a server: drain its backends, move the VIPs away if it holds them, then
        remove it from Raft and from the membership. Stop its agent afterwards.

        Refused when the voters that remain would not include a reachable majority.

        \b
        Examples:
          hacluster members remove ward-2
        """
        run(conn, as_json, timeout, "remove", node, allow_even=allow_even)

    @group.command("replace")
    @click.argument("old", metavar="OLD")
    @click.argument("new", metavar="NEW")
    @click.argument("address", metavar="ADDRESS")
    @with_ports
    @even
    @agent_options
    def replace(old: str, new: str, address: str, raft_port: int, grpc_port: int, allow_even: bool,
                conn: dict[str, Any], as_json: bool, timeout: float) -> None:
        """Replace server OLD by NEW (at ADDRESS): add NEW in OLD's role, then remove OLD.

        \b
        Examples:
          hacluster members replace ward-2 ward-2b 10.0.0.22
        """
        run(conn, as_json, timeout, "replace", old, new_node=new, address=address, raft_port=raft_port,
            grpc_port=grpc_port, allow_even=allow_even)

    for name, verb in (("promote", "Make non-voter ID a voter"), ("demote", "Make voter ID a non-voter")):
        def make(op: str, words: str) -> None:
            @group.command(op, help=f"{words}; its agent restarts its Raft in the new role "
                           "(a non-voter never holds the VIPs).\n\n\b\nExamples:\n"
                           f"  hacluster members {op} ward-4")
            @click.argument("node", metavar="ID")
            @even
            @agent_options
            def cmd(node: str, allow_even: bool, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
                run(conn, as_json, timeout, op, node, allow_even=allow_even)
        make(name, verb)
