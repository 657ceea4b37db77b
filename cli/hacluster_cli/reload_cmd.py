"""`hacluster reload`: ask an agent to re-read its config file and apply what may change live
(Admin.Reload; the agent's hacluster/reload.py decides). Exit 0 when applied (or a clean dry
run), 1 when refused or the file is invalid: nothing changed then."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from hacluster.api import admin_pb2
from hacluster_cli.client import ACTION_TIMEOUT_S, _call
from hacluster_cli.safe_text import CliError, printable

EXIT_REFUSED = 1


def reload_to_dict(r: admin_pb2.ReloadReply) -> dict[str, Any]:
    return {"applied": r.applied, "dry_run": r.dry_run, "detail": r.detail, "source": r.source,
            "changes": list(r.changes),
            "restart_keys": [{"key": k.key, "reason": k.reason} for k in r.restart_keys],
            "ignored": list(r.ignored), "errors": list(r.errors), "warnings": list(r.warnings)}


def render_reload(d: dict[str, Any]) -> str:
    lines = [f"{d['source']}: {d['detail']}"]
    for title, items in (("changes", d["changes"]), ("errors", d["errors"]),
                         ("ignored", d["ignored"]), ("warnings", d["warnings"])):
        if items:
            lines.append(f"{title}:" if title != "changes" or d["applied"] else
                         "changes (NOT applied):")
            lines += [f"  {x}" for x in items]
    if d["restart_keys"]:
        lines.append("need a restart (refused):")
        lines += [f"  {k['key']}: {k['reason']}" for k in d["restart_keys"]]
    return printable("\n".join(lines))


def register(cli: click.Group, agent_options: Callable[[Any], Any],
             ask: Callable[[dict[str, Any], Callable[[str, Any], Any]], Any]) -> None:
    """Add the command to `cli` (main.py passes its shared options and agent resolution)."""

    @cli.command("reload")
    @click.option("--dry-run", is_flag=True, help="Validate and say what would change; apply nothing.")
    @agent_options
    def reload_cmd(dry_run: bool, conn: dict[str, Any], as_json: bool, timeout: float) -> None:
        """Re-read the agent's config file and apply what can change without a restart.

        Live: services, backends, weights, algorithms, checks, log level and format, the
        metrics listener, health timings. All or nothing: an invalid file (every error
        listed) or a changed key that needs a restart (this server's ports, node_id,
        cluster, vips, timing, tls, data_dir, ...; each with the reason) changes nothing
        and exits 1. Other members in the file are ignored (use `hacluster members`). The balancing table
        follows the leader's file: reload every member (`systemctl reload hacluster`
        sends the same request as SIGHUP).

        \b
        Examples:
          hacluster reload --config /etc/hacluster/hacluster.yaml
          hacluster reload --dry-run --json --config /etc/hacluster/hacluster.yaml
        """
        reply = ask(conn, lambda t, k: _call(t, k, max(timeout, ACTION_TIMEOUT_S), "Reload",
                                             admin_pb2.ReloadRequest(dry_run=dry_run)))
        d = reload_to_dict(reply)
        click.echo(json.dumps(d) if as_json else render_reload(d))
        refused = bool(d["restart_keys"] or d["errors"]) or not (d["applied"] or d["dry_run"])
        if refused and as_json:
            raise click.exceptions.Exit(EXIT_REFUSED)
        if refused:
            raise CliError("reload refused: nothing changed", EXIT_REFUSED)
