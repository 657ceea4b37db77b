"""`hacluster lab up|add|remove|status|down|demo`: the network-namespace lab on this machine (root)."""

from __future__ import annotations

import json
import os
import subprocess

import click

from hacluster.lab.grow import add_server, remove_server
from hacluster.lab.lab import MAX_NODES, Lab, LabError, cli_argv, load_description, teardown
from hacluster_cli import GRPC_QUIETED

NAME_HELP = "lab name: prefix of every namespace and file (1-8 letters/digits)"


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("the lab builds network namespaces: run it as root")


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
def lab() -> None:
    """A cluster of network namespaces on this machine: N servers and a client on a bridge.

    \b
    Examples:
      hacluster lab up --nodes 3 --name hcl     # prints the lab's JSON as the last line
      hacluster lab status --name hcl
      ip netns exec hcl-n1 hacluster status --config /run/hacluster-lab/hcl/n1/hacluster.yaml
      hacluster lab down --name hcl
    """
    for name in GRPC_QUIETED:  # the agents the lab starts log gRPC's errors as usual
        os.environ.pop(name, None)


@lab.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, MAX_NODES),
              help="number of servers")
@click.option("--name", default="hcl", show_default=True, help=NAME_HELP)
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for a VIP holder")
@click.option("--balance", type=click.Choice(["round-robin", "weighted", "source-hash", "maglev",
                                              "none"]),
              default="maglev", show_default=True,
              help="how the VIP's services balance over every server's backend (maglev: every "
                   "server maps a flow to the same backend); none: the VIP holder's own backend "
                   "answers alone")
@click.option("--voters", type=click.IntRange(1, MAX_NODES), default=None, metavar="K",
              help="only the first K servers vote in Raft; the others are non-voting members "
                   "(default: all vote)")
def up(nodes: int, name: str, timeout: float, balance: str, voters: int | None) -> None:
    """Build the lab, start an agent and an HTTP backend on every server, wait for a holder.

    The last line of stdout is the lab's JSON description (DESIGN.md §7).

    \b
    Examples:
      hacluster lab up
      hacluster lab up --name ward --balance round-robin
      hacluster lab up --nodes 9 --voters 3
    """
    _need_root()
    try:
        lab_ = Lab(name, nodes, balance=balance != "none",
                   algorithm=balance if balance != "none" else "round-robin", voters=voters)
        _progress(f"lab {name}: {nodes} servers on {lab_.net}.0/24, VIP {lab_.vip}; building...")
        desc = lab_.up(wait_s=timeout)
    except LabError as e:
        raise click.ClickException(str(e)) from None
    holder = lab_.holders()
    _progress(f"lab {name}: up; VIP {lab_.vip} held by {', '.join(holder)}")
    _progress(f"  try: ip netns exec {lab_.client_ns} curl -s http://{lab_.vip}/")
    click.echo(json.dumps(desc))


@lab.command()
@click.option("--name", default="hcl", show_default=True, help=NAME_HELP)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def status(name: str, as_json: bool) -> None:
    """Show each server of the lab: agent process, VIP held, its agent's status sentence.

    \b
    Example:
      hacluster lab status --name hcl --json
    """
    _need_root()
    try:
        desc = load_description(name)
    except LabError as e:
        raise click.ClickException(str(e)) from None
    rows = []
    for node in desc["nodes"]:
        alive = _alive(node.get("agent_pid"))
        st = _agent_status(node) if alive else None
        held = bool(st and any(v["held"] for v in st.get("vips", [])))
        rows.append({"name": node["name"], "netns": node["netns"], "ip": node["ip"],
                     "agent_alive": alive, "role": st.get("role") if st else None,
                     "term": st.get("term") if st else None, "holds_vip": held,
                     "sentence": st.get("sentence") if st else None})
    if as_json:
        click.echo(json.dumps({"name": name, "vips": desc["vips"], "nodes": rows}))
        return
    click.echo(f"lab {name}: VIP {', '.join(desc['vips'])}, client netns {desc['client_netns']}")
    for r in rows:
        state = "agent up" if r["agent_alive"] else "AGENT DOWN"
        click.echo(f"  {r['name']:4} {r['ip']:15} {state:10} {r['role'] or '-':9} "
                   f"{'VIP' if r['holds_vip'] else '   '}  {r['sentence'] or ''}")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _agent_status(node: dict) -> dict | None:
    cmd = cli_argv(node["netns"], "status", "--agent", "--json", "--config", node["config"], "--timeout", "2")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return None


@lab.command("add")
@click.option("--name", default="hcl", show_default=True, help=NAME_HELP)
@click.option("--non-voter", is_flag=True, help="join as a non-voting member")
def add_cmd(name: str, non_voter: bool) -> None:
    """Add a server to the running lab: its namespace, backend and agent, joined with the
    real `hacluster members add` (then every agent reloads its config: the services gain
    its backend). The last line of stdout is the lab's JSON description.

    \b
    Examples:
      hacluster lab add
      hacluster lab add --name ward --non-voter
    """
    _need_root()
    try:
        lab_ = Lab.from_description(load_description(name))
        node = add_server(lab_, non_voter=non_voter, say=_progress)
    except LabError as e:
        raise click.ClickException(str(e)) from None
    _progress(f"lab {name}: {node.name} ({node.ip}) joined as a {'voter' if node.voter else 'non-voter'}")
    click.echo(json.dumps(lab_.describe()))


@lab.command("remove")
@click.argument("node", metavar="NODE")
@click.option("--name", default="hcl", show_default=True, help=NAME_HELP)
def remove_cmd(node: str, name: str) -> None:
    """Retire a server of the running lab with the real `hacluster members remove` (drained
    first; the VIPs move away first if it holds them), then stop it and remove its namespace.
    The last line of stdout is the lab's JSON description.

    \b
    Example:
      hacluster lab remove n2 --name ward
    """
    _need_root()
    try:
        lab_ = Lab.from_description(load_description(name))
        remove_server(lab_, node, say=_progress)
    except LabError as e:
        raise click.ClickException(str(e)) from None
    _progress(f"lab {name}: {node} removed")
    click.echo(json.dumps(lab_.describe()))


@lab.command()
@click.option("--name", default="hcl", show_default=True, help=NAME_HELP)
def down(name: str) -> None:
    """Remove every namespace, process and file of the lab (also after a crashed run).

    \b
    Example:
      hacluster lab down --name hcl
    """
    _need_root()
    try:
        removed = teardown(name)
    except LabError as e:
        raise click.ClickException(str(e)) from None
    _progress(f"lab {name}: removed {len(removed)} namespace(s)" if removed
              else f"lab {name}: nothing to remove")


@lab.command()
@click.option("--name", default="hcdemo", show_default=True, help=NAME_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the measured result as JSON")
def demo(name: str, as_json: bool) -> None:
    """Start a 3-server lab, show status, send traffic through the VIP, cut the leader's
    link, and report who served before and after and the outage the client saw.

    \b
    Example:
      hacluster lab demo
    """
    _need_root()
    from hacluster.lab.demo import run_demo

    try:
        result = run_demo(name, _progress)
    except LabError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result))
