"""`hacluster audit verify|show`: check and read a node's admin audit file (hacluster/audit.py).

Local files only: no agent is asked, so it works on a copy of the file on any machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hacluster.audit import tail, verify
from hacluster_cli.safe_text import CliError, json_text, printable, scrub

EXIT_OK, EXIT_TAMPERED, EXIT_USAGE = 0, 1, 2


AuditCliError = CliError  # printed as 'Error: ...' (escaped); exits with `exit_code`


@click.group("audit")
def audit() -> None:
    """Check and read the admin audit trail that every agent keeps.

    Each agent appends one hash-chained JSON line per admin action it executed (drain,
    weight, failover, maintenance...) to its audit file. Editing, deleting, reordering or
    inserting a line breaks the chain, and `verify` names the line.

    \b
    Example:
      hacluster audit verify /var/lib/hacluster/audit.jsonl
    """


@audit.command("verify")
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: file, ok, records, last_seq, head, problems, notes.")
def verify_cmd(file: str, as_json: bool) -> None:
    """Check FILE's hash chain; exit 0 if intact, 1 if tampered or damaged, 2 if unreadable.

    Every problem names its line: not JSON, hash mismatch (the line was edited), prev or seq
    mismatch (a line was deleted, inserted or moved), truncated last line (an interrupted
    write). A torn write that the agent sealed after a crash is a note, not a problem.

    The chain has no key: someone able to write the file can rewrite its tail consistently.
    Keep the printed head hash somewhere else and check later that the file still leads to it.

    \b
    Examples:
      hacluster audit verify /var/lib/hacluster/audit.jsonl
      hacluster audit verify audit-ward-2.jsonl --json
    """
    try:
        res = verify(Path(file))
    except OSError as e:
        raise AuditCliError(f"{file}: cannot read: {e.strerror or e}", EXIT_USAGE) from None
    if as_json:
        click.echo(json.dumps({"file": file, "ok": res.ok, "records": res.records,
                               "last_seq": res.last_seq, "head": res.head,
                               "problems": res.problems, "notes": res.notes}))
    elif res.ok:
        click.echo(f"{file}: intact, {_plural(res.records, 'record')}, last seq {res.last_seq}, "
                   f"head {res.head}")
        for note in res.notes:
            click.echo(printable(f"  note: {note}"))
    else:
        click.echo(f"{file}: TAMPERED or damaged: {_plural(len(res.problems), 'problem')} in "
                   f"{_plural(res.records, 'record')}", err=True)
        for msg in res.problems:  # they may quote a damaged line: escaped
            click.echo(printable(f"  {msg}"), err=True)
        for note in res.notes:
            click.echo(printable(f"  note: {note}"), err=True)
    if not res.ok:
        click.get_current_context().exit(EXIT_TAMPERED)


@audit.command("show")
@click.argument("file", metavar="FILE")
@click.option("--last", "last", type=click.IntRange(min=1), default=20, show_default=True,
              metavar="N", help="Show the last N records.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: file, records (as stored, oldest first).")
def show_cmd(file: str, last: int, as_json: bool) -> None:
    """Print the last records of FILE, oldest first. The chain is not checked here.

    \b
    Examples:
      hacluster audit show /var/lib/hacluster/audit.jsonl
      hacluster audit show /var/lib/hacluster/audit.jsonl --last 200 --json
    """
    try:
        records = tail(Path(file), last)
    except OSError as e:
        raise AuditCliError(f"{file}: cannot read: {e.strerror or e}", EXIT_USAGE) from None
    if as_json:
        click.echo(json_text({"file": file, "records": records}))
        return
    if not records:
        click.echo(f"{file}: no records")
        return
    rows = [("SEQ", "AT", "WHO", "ACTION", "OK", "ARGS", "RESULT")]
    rows += [scrub(_row(r)) for r in records]  # who, args, result: what clients sent
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join([c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]))


def _row(r: dict[str, Any]) -> tuple[str, ...]:
    args = json.dumps(r.get("args", {}), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return (str(r.get("seq", "?")), str(r.get("at", "?")), _cut(str(r.get("who", "?")), 32),
            _cut(str(r.get("action", "?")), 32), "yes" if r.get("ok") is True else "NO",
            _cut(args, 60), _cut(str(r.get("result", "")), 100))


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
