"""The screens of `hacluster status` (the cluster at a glance) and its --watch loop.

overview.py gathers the answers and sums them up into an Overview; this module only draws
it: at most WIDTH columns, every remote text made printable (safe_text.py).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Sequence

from hacluster.model import GossipState, SyncState
from hacluster_cli.client import AdminCallError
from hacluster_cli.overview import LAST_EVENTS, Overview
from hacluster_cli.render import sync_detail, sync_word
from hacluster_cli.safe_text import printable, scrub

WIDTH = 100  # the human screen fits this many columns
CLEAR_SCREEN = "\x1b[H\x1b[2J"

# ------------------------------------------------------------------ rendering


def _columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _names(ids: Sequence[str], width: int = 24) -> str:
    return _clip(", ".join(ids), width) if ids else "-"


def _headline(ov: Overview) -> str:
    leader = f"leader {ov.leader} (term {ov.term})" if ov.leader else f"NO LEADER (term {ov.term})"
    quorum = "quorum ok" if ov.quorum else "NO QUORUM"
    if ov.members_alive is None:
        members = f"{len(ov.members)} members (gossip view unknown)"
    else:
        members = f"{ov.members_alive}/{len(ov.members)} members alive"
    return _clip(f"cluster {ov.cluster}: {leader}, {quorum}, {members}", WIDTH)


def _subhead(ov: Overview) -> list[str]:
    if ov.lease_ok is None:
        lease = "lease unknown (the leader was not asked)"
    elif ov.lease_ok:
        lease = f"lease ok, {ov.lease_remaining_ms or 0:.0f} ms left"
    else:
        lease = "lease NOT HELD"
    asked = f"asked {ov.asked} ({ov.asked_role.value})"
    if ov.leader and ov.leader != ov.asked and ov.lease_ok is not None:
        asked += f" and the leader {ov.leader}"
    lines = [f"  {lease}; {asked}"]
    if ov.handoff:
        lines.append("  handoff in progress: the leader is releasing its VIPs")
    if ov.sentence:
        lines.append(_clip(f"  {ov.sentence_by}: {ov.sentence}", WIDTH))
    return lines


def _vip_lines(ov: Overview) -> list[str]:
    if not ov.vips:
        return []
    rows = []
    for v in ov.vips:
        if v.holders:
            held = "held by " + " and ".join(v.holders)
        elif v.waiting:
            held = "not held yet:"  # the leader's words follow on their own lines
        else:
            held = "HELD BY NO ONE" if v.known else "holder unknown (leader not asked)"
        if v.holders and not v.known:
            held += " (leader not asked)"
        rows.append((v.address, _clip(v.interface, 16), held))
    lines = ["", "VIPs"]
    for v, line in zip(ov.vips, _columns(rows), strict=True):
        lines.append(line)
        if v.waiting and not v.holders:
            lines += _wrapped("    ", v.waiting)
    return lines


def _member_lines(ov: Overview) -> list[str]:
    rows: list[tuple[str, ...]] = [("ID", "GOSSIP", "RAFT", "LINK", "CHECKS", "DRAINING")]
    for m in ov.members:
        gossip = "?" if m.gossip is None else (
            "alive" if m.gossip is GossipState.ALIVE else m.gossip.value.upper())
        checks = "-" if m.checks_total is None else f"{m.checks_passing}/{m.checks_total}"
        if m.checks_total is not None and m.gossip in (GossipState.DEAD, GossipState.LEFT):
            checks = f"({checks})"  # its last report before it went away: stale
        draining = "-" if m.draining is None else ("DRAINING" if m.draining else "no")
        rows.append((_clip(m.id, 28) + (" (asked)" if m.is_self else ""), gossip, m.raft_role,
                     "-" if m.raft_link is None else
                     (m.raft_link.upper() if m.raft_link == "down" else m.raft_link),
                     checks, draining))
    return ["", "members", *_columns(rows)]


def _service_lines(ov: Overview) -> list[str]:
    if ov.services is None:
        return []
    t = ov.table
    head = "services"
    if t is not None:
        applied = "none" if t.applied is None else str(t.applied)
        head += f" (table generation {t.committed} committed, {applied} applied on {t.node})"
    if not ov.services:
        return ["", head, "  none (none configured, or no table committed yet)"]
    rows: list[tuple[str, ...]] = [("NAME", "ADDRESS", "HEALTHY", "DOWN", "DRAINING", "DISABLED")]
    for s in ov.services:
        ports = ",".join(str(p) for p in s.ports)
        rows.append((_clip(s.name, 16), _clip(f"{s.vip}:{ports}/{s.protocol}", 30),
                     f"{s.healthy}/{s.total}", _names(s.down, 16), _names(s.draining, 12),
                     _names(s.disabled, 12)))
    return ["", _clip(head, WIDTH), *_columns(rows)]


def _sync_lines(ov: Overview) -> list[str]:
    if not ov.syncs:
        return []
    details = {x.sync.detail for x in ov.syncs}
    if all(x.sync.state is SyncState.OFF for x in ov.syncs) and len(details) == 1:
        said = f" ({details.pop()})" if ov.syncs[0].sync.detail else ""
        return ["", _clip(f"connection sync: off on {', '.join(x.node for x in ov.syncs)}{said}",
                          WIDTH)]
    rows = [(_clip(x.node, 28), sync_word(x.sync), sync_detail(x.sync) or "-") for x in ov.syncs]
    return ["", "connection sync", *(_clip(line, WIDTH) for line in _columns(rows))]


def _event_lines(ov: Overview) -> list[str]:
    if ov.events is None:
        return []
    lines = ["", "last events"]
    if not ov.events:
        return lines + ["  none"]
    for e in ov.events[-LAST_EVENTS:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(e.at_unix_ms / 1000))
        lines.append(_clip(f"  {stamp}  {e.node}  {e.kind}  {e.text}", WIDTH))
    return lines


def _wrapped(prefix: str, text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=prefix, subsequent_indent=" " * len(prefix))


def render_overview(ov: Overview) -> str:
    """The human screen of `hacluster status --cluster`: at most WIDTH columns."""
    ov = scrub(ov)  # agents' and gossip's text, shown to a terminal (safe_text.py)
    lines = [_headline(ov), *_subhead(ov), *_vip_lines(ov), *_member_lines(ov),
             *_sync_lines(ov), *_service_lines(ov), *_event_lines(ov)]
    if ov.missing:
        lines += ["", "not known"]
        for m in ov.missing:
            lines += _wrapped("  - ", m)
    lines.append("")
    if ov.problems:
        lines.append(f"problems ({len(ov.problems)})")
        for p in ov.problems:
            lines += _wrapped("  - ", p)
    else:
        lines.append("no problems" + (" seen (but see: not known)" if ov.missing else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------ --watch


def watch(draw: Callable[[], str], interval: float, echo: Callable[[str], None], tty: bool,
          as_json: bool = False, sleep: Callable[[float], None] | None = None) -> int:
    """Redraw `draw()` every `interval` seconds until Ctrl-C, then return 0.

    A failed draw (AdminCallError: agent unreachable, refused) is shown in place of the
    screen and retried at the next interval: the operator watches an outage, the loop does
    not end with it. Each attempt is bounded by the calls' own timeout, and the loop sleeps
    the whole interval after every draw, so it never spins. On a TTY the screen is cleared
    (ANSI) before each draw; otherwise a separator line with the time is printed. With
    `as_json`, each draw is one JSON line and nothing else is printed (errors as
    {"error": ...}).
    """
    sleep = sleep or time.sleep  # looked up per call: tests patch time.sleep
    try:
        while True:
            try:
                screen = draw()
            except AdminCallError as e:
                screen = json.dumps({"error": str(e), "exit_code": e.exit_code}) if as_json else \
                    f"error: {printable(str(e))}\n(trying again every {interval:g} s)"
            stamp = time.strftime("%H:%M:%S")
            if as_json:
                echo(screen)
            elif tty:
                echo(f"{CLEAR_SCREEN}{stamp}  every {interval:g} s, Ctrl-C to quit\n{screen}")
            else:
                echo(f"---- {stamp} (every {interval:g} s, Ctrl-C to quit) ----\n{screen}")
            sleep(interval)
    except KeyboardInterrupt:
        return 0
