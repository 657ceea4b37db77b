"""The `hacluster` command: a thin gRPC client of the local (or a named) agent.

It never imports agent internals (hacluster.agent, daemon, ha/, consensus/, hostops/): only
the generated API, the config loader, the model and the TLS helpers, so it starts fast and
runs anywhere (tests/unit/test_layout.py checks it).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from hacluster import __version__
from hacluster.config import ConfigError, load_config
from hacluster.config_host import host_findings
from hacluster_cli import members_cmd
from hacluster_cli.audit_cmd import audit
from hacluster_cli.certs_cmd import certs
from hacluster_cli.client import (
    DEFAULT_TIMEOUT_S,
    AdminCallError,
    drain,
    failover,
    fetch_backends,
    fetch_checks,
    fetch_cluster_events,
    fetch_events,
    fetch_members,
    fetch_status,
    follow_events,
    set_maintenance,
    set_weight,
    status_to_dict,
    to_dict,
)
from hacluster_cli.connect import DEFAULT_CONFIG, resolve_agent
from hacluster_cli.lab import lab
from hacluster_cli.reload_cmd import register as register_reload
from hacluster_cli.render import render_backends, render_checks, render_members, render_status
from hacluster_cli.safe_text import printable, scrub

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hacluster")
def cli() -> None:
    """Operate a hacluster HA/VIP cluster: status, gossip members, health checks, configs.

    Every command that talks to an agent finds it through a server's own config (its
    member's grpc_port, the cluster CA and the CLI certificate it names), looked up in this
    order: --config FILE, else the file named by $HACLUSTER_CONFIG, else
    /etc/hacluster/hacluster.yaml (what the Ansible role writes): on a cluster server no
    flag is needed. --admin HOST:PORT asks another agent with those credentials; --admin
    with --ca, --cert and --key needs no config at all. Calls are mutual TLS: an admin
    certificate may act, a reader certificate may only look (hacluster certs issue).

    \b
    Exit codes:
      0  ok
      1  invalid (config validate) or the call failed
      2  usage or config error
      3  agent unreachable
      4  agent refused the call (certificate, role) or TLS failed

    \b
    Examples:
      hacluster status
      HACLUSTER_CONFIG=/srv/ward-b/hacluster.yaml hacluster status
      hacluster status --config /etc/hacluster/hacluster.yaml
    """


def _agent_options(inner: Any) -> Any:
    """--config / --admin / --ca / --cert / --key / --json / --timeout, shared by agent
    commands; the command receives the first five as one `conn` dict."""
    @functools.wraps(inner)
    def fn(**kw: Any) -> Any:
        conn = {k: kw.pop(k) for k in ("config_path", "admin", "ca", "cert", "key")}
        return inner(conn=conn, **kw)

    for opt in reversed([
        click.option("--config", "config_path", metavar="FILE",
                     help="This server's hacluster config: ask its own agent, with the CA and "
                     "CLI certificate it names (default: $HACLUSTER_CONFIG, else "
                     f"{DEFAULT_CONFIG})."),
        click.option("--admin", metavar="HOST:PORT",
                     help="The agent's admin address (a member's address and grpc_port)."),
        click.option("--ca", metavar="FILE", help="The cluster CA certificate (default with "
                     "--config: its tls.ca_file)."),
        click.option("--cert", metavar="FILE", help="Your admin or reader certificate "
                     "(default with --config: its tls.cli_cert_file)."),
        click.option("--key", metavar="FILE", help="Its key (mode 0600)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON object instead of a table (keys as in the docs)."),
        click.option("--timeout", type=click.FloatRange(min=0.05, max=600),
                     default=DEFAULT_TIMEOUT_S, show_default=True, metavar="SECONDS",
                     help="Give up waiting for the agent after this long."),
    ]):
        fn = opt(fn)
    return fn


def _ask(conn: dict[str, Any], call: Callable[[str, Any], Any]) -> Any:
    agent = resolve_agent(conn)
    try:
        return call(agent.target, agent.creds)
    except AdminCallError as e:
        raise agent.error(e) from None


@cli.command()
@click.option("--cluster", is_flag=True,
              help="The cluster view (the default; accepted so that scripts may say it).")
@click.option("--agent", is_flag=True,
              help="The asked agent's own view instead of the cluster's (with or without --json).")
@click.option("--watch", is_flag=True, help="Redraw every --interval until Ctrl-C (exit 0).")
@click.option("--interval", type=click.FloatRange(0.5, 60), default=2.0, show_default=True,
              metavar="SECONDS", help="With --watch: seconds between redraws (0.5-60).")
@_agent_options
def status(cluster: bool, agent: bool, watch: bool, interval: float, conn: dict[str, Any],
           as_json: bool, timeout: float) -> None:
    """Show the cluster at a glance; with --agent, the asked agent's own view instead.

    --json prints the same view as one JSON object: `status --json` is the cluster view,
    `status --agent --json` the agent view.

    The cluster view: cluster name, leader, term, the leader's lease, quorum, each VIP and who
    holds it (from the leader's own status: the asked agent fetches it when it is a
    follower), members (gossip state, Raft role and link, checks passing/total, draining),
    each agent's connection sync (conntrackd: ok, DOWN or off, and why), services with
    healthy/total backends, the balancing table's generation committed vs applied, the last
    events, then the problems (MAINTENANCE mode is one). Its --json object has the keys
    cluster, asked, asked_role, leader, term, lease_ok, lease_remaining_ms, quorum, handoff,
    sentence, vips, members, members_alive, services, table, events, connection_sync,
    problems, missing, healthy (details: cli/hacluster_cli/overview.py). Exit 0 when
    healthy; 1 when there is a problem (no leader or quorum, a VIP held by no one, a member
    DEAD or SUSPECT, a backend down, the table not applied, a connection sync DOWN) or a
    part could not be seen (Members, Backends, the leader); 3 and 4 as for every command
    (the asked agent unreachable, or refusing).

    The agent view (--agent): the asked agent's role, term, leader, lease, quorum, the VIPs
    it holds, its connection sync and its Raft links. Its --json object has the keys node,
    role, leader, vips, handoff, maintenance, connection_sync, ... (AgentStatus). Exit 0
    when the agent answered.

    --watch redraws every --interval (the screen is cleared on a terminal, a separator line
    is printed otherwise; with --json one JSON object per line). An agent that stops
    answering is shown on screen and asked again at the next interval. Ctrl-C exits 0.

    \b
    Examples:
      hacluster status
      hacluster status --watch --interval 1
      hacluster status --json
      hacluster status --agent --json
      hacluster status --config /etc/hacluster/hacluster.yaml
      hacluster status --admin 10.0.0.12:7101 --ca ca.crt --cert alice.crt --key alice.key --json
      ip netns exec NETNS hacluster status --agent --json --config CONFIG
    """
    import sys

    from hacluster_cli.overview import gather
    from hacluster_cli.overview_screen import render_overview
    from hacluster_cli.overview_screen import watch as watch_loop

    ctx = click.get_current_context()
    if cluster and agent:
        raise click.UsageError("--cluster and --agent exclude each other")
    if not watch and ctx.get_parameter_source("interval") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--interval goes with --watch")
    whole = not agent  # the cluster view, as a table or (--json) as one object

    def draw(target: str, creds: Any) -> tuple[str, int]:
        if whole:
            ov = gather(target, creds, timeout, events=_last_events)
            return (json.dumps(ov.to_dict()) if as_json else render_overview(ov)), ov.exit_code
        st = fetch_status(target, creds, timeout)
        return (json.dumps(status_to_dict(st)) if as_json else render_status(st)), EXIT_OK

    if not watch:
        out, code = _ask(conn, draw)
        click.echo(out)
        ctx.exit(code)
    agent = resolve_agent(conn)
    ctx.exit(watch_loop(lambda: draw(agent.target, agent.creds)[0], interval, click.echo,
                        tty=sys.stdout.isatty(), as_json=as_json))


@cli.group(invoke_without_command=True)
@_agent_options
def members(conn: dict[str, Any],
            as_json: bool, timeout: float) -> None:
    """List the members as the agent's health gossip sees them; change them (add, remove,
    replace, promote, demote: see `hacluster members add --help`).

    One line per member: gossip state (alive, SUSPECT, DEAD, LEFT) and incarnation, its Raft
    role as this agent sees it, how many of its health checks pass, its load, and when this
    agent last heard from it directly. Gossip never decides who holds the VIP: a member
    can be DEAD in gossip and still lead Raft (that is worth investigating).

    \b
    Examples:
      hacluster members --config /etc/hacluster/hacluster.yaml
      hacluster members --admin 10.0.0.12:7101 --ca ca.crt --cert alice.crt --key alice.key --json
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    ms = _ask(conn, lambda t, k: fetch_members(t, k, timeout))
    click.echo(json.dumps(to_dict(ms)) if as_json else render_members(ms))


members_cmd.register(members, _agent_options, _ask)


@cli.command()
@click.argument("node", required=False, metavar="[NODE]")
@_agent_options
def checks(node: str | None, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
    """Show every health check of every member (or of NODE): state, latency, last error.

    STATE is the checking node's verdict after its rise/fall counts (UNKNOWN until enough
    results); COMMITTED is what the leader committed to the replicated state after its
    settle time, the value the balancing table follows. Failing exec checks show their
    output below the table.

    \b
    Examples:
      hacluster checks --config /etc/hacluster/hacluster.yaml
      hacluster checks ward-2 --config /etc/hacluster/hacluster.yaml --json
    """
    cs = _ask(conn, lambda t, k: fetch_checks(t, k, node, timeout))
    click.echo(json.dumps(to_dict(cs)) if as_json else render_checks(cs))


@cli.command()
@click.argument("service", required=False, metavar="[SERVICE]")
@_agent_options
def backends(service: str | None, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
    """Show the balancing table: each service's backends, weight, state and traffic.

    STATE: active (gets new flows), DRAINING (no new flows, established ones go on),
    DISABLED (taken out by an admin), DOWN (its health check is committed down). PACKETS
    and BYTES are this agent's data plane counters. The header says whether the committed
    generation is applied in this agent's data plane (a standby is hot when it is).

    \b
    Examples:
      hacluster backends --config /etc/hacluster/hacluster.yaml
      hacluster backends web --config /etc/hacluster/hacluster.yaml --json
    """
    bs = _ask(conn, lambda t, k: fetch_backends(t, k, service, timeout))
    click.echo(json.dumps(to_dict(bs)) if as_json else render_backends(bs))


def _action_output(detail: str, generation: int, as_json: bool) -> None:
    click.echo(json.dumps({"ok": True, "detail": detail, "generation": generation})
               if as_json else printable(f"{detail} (committed, state generation {generation})"))


@cli.command("drain")
@click.argument("target", metavar="NODE|SERVICE/BACKEND")
@click.option("--disable", is_flag=True,
              help="Backend only: take it out at once instead of letting its flows finish.")
@_agent_options
def drain_cmd(target: str, disable: bool, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
    """Stop sending new flows to a server (every backend on it) or to one backend.

    Established flows continue until they end (or the service's drain_timeout_s). The
    change is committed through Raft before this returns; `hacluster undrain` reverts it
    and leaves nothing behind. A drained leader keeps the VIPs until the services' longest
    drain_timeout_s has passed, then hands them over (the command says so);
    `hacluster failover --to NODE` moves them at once.

    \b
    Examples:
      hacluster drain ward-2 --config /etc/hacluster/hacluster.yaml
      hacluster drain web/ward-2 --config /etc/hacluster/hacluster.yaml
    """
    detail, gen = _ask(conn,
                       lambda t, k: drain(t, k, target, disable=disable, timeout=timeout))
    _action_output(detail, gen, as_json)


@cli.command("undrain")
@click.argument("target", metavar="NODE|SERVICE/BACKEND")
@_agent_options
def undrain_cmd(target: str, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
    """Put a drained or disabled server or backend back in service.

    \b
    Example:
      hacluster undrain ward-2 --config /etc/hacluster/hacluster.yaml
    """
    detail, gen = _ask(conn,
                       lambda t, k: drain(t, k, target, undo=True, timeout=timeout))
    _action_output(detail, gen, as_json)


@cli.command("weight")
@click.argument("backend", metavar="SERVICE/BACKEND")
@click.argument("weight", type=click.IntRange(0, 1000))
@_agent_options
def weight_cmd(backend: str, weight: int, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
    """Set a backend's weight (1-1000); 0 restores the configured weight.

    \b
    Example:
      hacluster weight web/ward-3 5 --config /etc/hacluster/hacluster.yaml
    """
    service, sep, bid = backend.partition("/")
    if not sep or not service or not bid:
        raise click.BadParameter(f"must be SERVICE/BACKEND, got {backend!r}", param_hint="BACKEND")
    detail, gen = _ask(conn,
                       lambda t, k: set_weight(t, k, service, bid, weight, timeout))
    _action_output(detail, gen, as_json)


@cli.group("config")
def config_group() -> None:
    """Check hacluster configuration files.

    \b
    Example:
      hacluster config validate /etc/hacluster/hacluster.yaml
    """


@config_group.command("validate")
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: file, ok, cluster, node_id, members, vips, "
                   "warnings, notes, errors.")
@click.option("--strict", is_flag=True,
              help="Warnings fail too (exit 1): for the server the file is for, where its files "
                   "and interfaces must be in place.")
def config_validate(file: str, as_json: bool, strict: bool) -> None:
    """Check FILE and list every problem with its path; exit 0 if usable, 1 if not.

    Errors are the file's own (a wrong key gets the nearest right one). Warnings are about
    this host, and do not fail the check without --strict: a referenced file (secret,
    certificates and keys, exec check commands) that is missing, a directory or not
    readable by the user running this, a certificate the agent would refuse, a VIP outside
    its interface's subnets. Notes say what could not be checked here (an interface this
    host does not have).

    \b
    Examples:
      hacluster config validate /etc/hacluster/hacluster.yaml --strict
      hacluster config validate new.yaml --json
    """
    try:
        cfg = load_config(file)
    except ConfigError as e:
        if as_json:
            click.echo(json.dumps({"file": file, "ok": False, "errors": e.errors,
                                   "warnings": [], "notes": []}))
        else:
            click.echo(f"{file}: {_plural(len(e.errors), 'error')}", err=True)
            for msg in e.errors:
                click.echo(f"  {msg}", err=True)
        click.get_current_context().exit(EXIT_INVALID)
    host = host_findings(cfg)
    warnings = [*cfg.warnings, *host.warnings]
    failed = strict and bool(warnings)
    if as_json:
        click.echo(json.dumps({"file": file, "ok": not failed, "cluster": cfg.cluster,
                               "node_id": cfg.node_id, "members": len(cfg.members),
                               "vips": len(cfg.vips), "warnings": warnings, "notes": host.notes,
                               "errors": []}))
    else:
        click.echo(f"{file}: {'not ok with --strict' if failed else 'ok'} (cluster {cfg.cluster}, "
                   f"node {cfg.node_id}, {_plural(len(cfg.members), 'member')}, "
                   f"{_plural(len(cfg.vips), 'VIP')})")
        for w in warnings:
            click.echo(f"  warning: {w}")
        for n in host.notes:
            click.echo(f"  note: {n}")
    if failed:
        click.get_current_context().exit(EXIT_INVALID)


@cli.command("failover")
@click.option("--to", "to", metavar="NODE", help="The member to move to (default: the best "
              "eligible member, as the leader sees them).")
@click.option("--dry-run", is_flag=True, help="Check and say what would happen; change nothing.")
@click.option("--wait", "wait_s", type=click.FloatRange(0.1, 30), default=3.0, show_default=True,
              metavar="SECONDS", help="How long the target may take to lead and claim.")
@_agent_options
def failover_cmd(to: str | None, dry_run: bool, wait_s: float, conn: dict[str, Any], as_json: bool,
                 timeout: float) -> None:
    """Move leadership and the VIPs gracefully to another member, and time the switch.

    Any member can be asked: the command finds the leader. The leader checks that the
    target can take over (alive in gossip, Raft link answering, log caught up, not
    draining, no check committed down; and a quorum), releases its VIPs, hands Raft
    leadership over, and the target claims the VIPs without waiting for ARP probes. The
    switch time printed is from the release to the claim. Nothing is left behind: the old
    leader is an ordinary follower afterwards, and leadership never moves back by itself.
    If the target does not take over within --wait, the leader keeps the VIPs (exit 1).
    --to the member that already leads changes nothing and says so (exit 0).

    \b
    Examples:
      hacluster failover --to ward-2 --config /etc/hacluster/hacluster.yaml
      hacluster failover --dry-run --config /etc/hacluster/hacluster.yaml
      hacluster failover --json --admin 10.0.0.12:7101 --ca ca.crt --cert alice.crt --key alice.key
    """
    def progress(msg: str) -> None:
        if not as_json:
            click.echo(printable(msg), err=True)
    out = _ask(conn,
               lambda t, k: failover(t, k, to, dry_run, wait_s, timeout, progress))
    if as_json:
        click.echo(json.dumps(out))
    elif out["dry_run"]:
        click.echo(printable(f"dry run: {out['detail']} (nothing changed)"))
    else:
        switch = "" if out["switch_ms"] is None else f": switch {out['switch_ms']:.0f} ms " \
            "(release to claim)"
        click.echo(printable(f"{out['detail']}{switch}"))


@cli.command("maintenance")
@click.argument("mode", type=click.Choice(["on", "off"]))
@_agent_options
def maintenance_cmd(mode: str, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
    """Freeze the cluster for maintenance work, or unfreeze it.

    While ON: the balancing table stays exactly as it is (health is still checked,
    gossiped and committed, and shown by `hacluster checks`), and a drained leader does not
    hand over by itself. VIPs stay where they are; an explicit `hacluster failover` still
    works, and a leader that dies is still replaced (a dead server cannot serve). `hacluster
    status` says MAINTENANCE loudly until it is OFF again.

    \b
    Examples:
      hacluster maintenance on --config /etc/hacluster/hacluster.yaml
      hacluster maintenance off --config /etc/hacluster/hacluster.yaml
    """
    detail, gen = _ask(conn, lambda t, k: set_maintenance(t, k, mode == "on", timeout))
    _action_output(detail, gen, as_json)


def _last_events(target: str, creds: Any, timeout: float) -> list[Any]:
    from hacluster_cli.overview import LAST_EVENTS, OverviewEvent
    return [OverviewEvent.from_dict(e) for e in fetch_events(target, creds, 0, LAST_EVENTS, timeout)]


def _event_line(e: dict[str, Any]) -> str:
    e = scrub(e)  # node and text come from the agents (safe_text.py)
    at = datetime.fromtimestamp(e["at_unix_ms"] / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{at}  {e['node']:<8} {e['kind']:<8} {e['text']}"


@cli.command("events")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they happen "
              "(Ctrl-C to stop).")
@click.option("--all", "all_members", is_flag=True, help="Every member's events merged by time "
              "(not with --follow).")
@click.option("--last", "last", type=click.IntRange(0, 1000), default=50, show_default=True,
              metavar="N", help="How many past events to show (0: all the agent keeps, up to 1000).")
@_agent_options
def events_cmd(follow: bool, all_members: bool, last: int, conn: dict[str, Any], as_json: bool,
               timeout: float) -> None:
    """Show the event timeline: leader changes, VIP claims and releases (with how long the
    claim took), committed health verdicts and table generations, admin actions and who
    made them.

    Each agent keeps the last 1000 events it saw itself; --all merges every member's.
    With --json, one JSON object per line (seq, at_unix_ms, node, kind, text, fields).

    \b
    Examples:
      hacluster events --config /etc/hacluster/hacluster.yaml
      hacluster events --all --last 200 --config /etc/hacluster/hacluster.yaml
      hacluster events --follow --json --config /etc/hacluster/hacluster.yaml
    """
    if follow and all_members:
        raise click.UsageError("--all merges past events; follow one agent at a time")

    def show(e: dict[str, Any]) -> None:
        click.echo(json.dumps(e) if as_json else _event_line(e))
    if follow:
        def run(t: str, k: Any) -> None:
            for e in follow_events(t, k, 0, last or 1000, timeout):
                show(e)
        try:
            _ask(conn, run)
        except KeyboardInterrupt:
            pass
        return
    if all_members:
        evs, missing = _ask(conn, lambda t, k: fetch_cluster_events(t, k, last, timeout))
        for m in missing:
            click.echo(printable(f"warning: no events from {m}"), err=True)
    else:
        evs = _ask(conn, lambda t, k: fetch_events(t, k, 0, last, timeout))
    for e in evs:
        show(e)
    if not evs and not as_json:
        click.echo("no events")


@cli.command()
def version() -> None:
    """Print the hacluster version.

    \b
    Example:
      hacluster version
    """
    click.echo(f"hacluster {__version__}")


cli.add_command(lab)
cli.add_command(certs)
cli.add_command(audit)
register_reload(cli, _agent_options, _ask)


def main() -> None:
    cli(prog_name="hacluster")


if __name__ == "__main__":
    main()
