"""Terminal escapes in remote text never reach the operator's terminal (issue 15, finding 8).

A member, a check script or a peer can put control characters in the names, outputs and
texts an agent reports. The real CLI is run against a real AdminService whose every
string carries ESC [ 2 J (clear the screen), a C1 CSI (U+009B) and an OSC title sequence:
no human rendering may print an ESC, a CSI or any other C0/C1 character except newline,
and JSON output keeps the raw strings (json escapes them)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from hacluster.admin import AdminService, start_admin
from hacluster.events import EventLog
from hacluster.model import CheckReport, ChecksStatus, CheckState, NodeChecks
from hacluster_cli.main import cli
from hacluster_cli.safe_text import json_text, printable, scrub
from tests.unit.pki import PKI
from tests.unit.test_members_checks import CHECKS, EXEC_FAIL, MEMBERS, cli_args
from tests.unit.test_overview import status

EVIL = "\x1b[2J\x9b31m\x1b]0;pwned\x07\u202e"
# Anything a terminal acts on: C0 but newline, DEL, C1, bidi overrides and isolates.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def evil_status():
    st = status("n1")
    return dataclasses.replace(
        st, cluster="ward-a" + EVIL, sentence="leader" + EVIL, leader="n1" + EVIL,
        vips=tuple(dataclasses.replace(v, interface="eth0" + EVIL) for v in st.vips),
        members=tuple(dataclasses.replace(m, id=m.id + EVIL) for m in st.members))


EVIL_MEMBERS = dataclasses.replace(MEMBERS, members=tuple(
    dataclasses.replace(m, id=m.id + EVIL, raft_role="follower" + EVIL) for m in MEMBERS.members))
# Check names and kinds are names (the CLI refuses others, gossip/wire.py); the rest is free text.
EVIL_CHECKS = ChecksStatus("n1", (
    NodeChecks("n2" + EVIL, CHECKS.nodes[1].state, (
        dataclasses.replace(EXEC_FAIL, target="check" + EVIL, error="exit 2" + EVIL,
                            output="disk full" + EVIL + "\nsecond line" + EVIL),
        CheckReport("web", "http", "10.0.0.12:80" + EVIL, CheckState.FAILING, None, "refused" + EVIL),
    )),), (), 17)


@pytest.fixture
def evil_agent() -> Iterator[list[str]]:
    events = EventLog("n1" + EVIL)
    events.add("admin", "drained n2" + EVIL, who="alice" + EVIL)
    service = AdminService(evil_status, PKI.authority(), members_provider=lambda: EVIL_MEMBERS,
                           checks_provider=lambda node: EVIL_CHECKS, events=events)
    server, port = start_admin("127.0.0.1:0", service, PKI.server("n1"))
    yield cli_args(port)
    server.stop(None)


@pytest.mark.parametrize("command", [
    ["status", "--agent"], ["status", "--cluster"], ["members"], ["checks"], ["events"],
])
def test_no_control_character_reaches_the_terminal(evil_agent: list[str], command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, *evil_agent])
    out = result.stdout + result.stderr
    assert result.exit_code in (0, 1), out
    assert "\x1b" not in out and "\x9b" not in out
    assert not CONTROL.search(out), repr(CONTROL.search(out))
    assert "\\x1b[2J" in out and "\\x9b31m" in out  # shown, visibly, not dropped


def test_the_exec_output_keeps_its_lines_but_a_name_cannot_draw_a_row(evil_agent: list[str]) -> None:
    out = CliRunner().invoke(cli, ["checks", *evil_agent]).stdout
    assert "  disk full\\x1b[2J" in out and "\n  second line\\x1b[2J" in out
    forged = scrub(dataclasses.replace(EVIL_MEMBERS.members[0], id="n1\n  n9  alive"))
    assert "\n" not in forged.id and forged.id.startswith("n1\\x0a")


def test_an_agents_error_is_escaped_too() -> None:
    """What the agent says in an error (here: a check name the CLI refuses) reaches stderr."""
    bad = ChecksStatus("n1", (NodeChecks("n2", CHECKS.nodes[1].state, (
        dataclasses.replace(EXEC_FAIL, name="disk" + EVIL),)),), (), 17)
    server, port = start_admin("127.0.0.1:0", AdminService(
        evil_status, PKI.authority(), checks_provider=lambda node: bad), PKI.server("n1"))
    try:
        result = CliRunner().invoke(cli, ["checks", *cli_args(port)])
    finally:
        server.stop(None)
    assert result.exit_code != 0 and "\\x1b[2J" in result.stderr
    assert not CONTROL.search(result.stdout + result.stderr)


def test_json_keeps_the_raw_strings(evil_agent: list[str]) -> None:
    out = CliRunner().invoke(cli, ["members", "--json", *evil_agent]).stdout
    assert "\x1b" not in out and "\x9b" not in out  # json escapes them...
    assert json.loads(out)["members"][0]["id"] == "n1" + EVIL  # ...and they read back raw
    events = CliRunner().invoke(cli, ["events", "--json", *evil_agent]).stdout
    assert json.loads(events.splitlines()[0])["text"] == "drained n2" + EVIL


def test_the_helpers() -> None:
    assert printable("a\x1b[2Jb\x9bc\x7fd\u202ee\tf\ng") == "a\\x1b[2Jb\\x9bc\\x7fd\\u202ee\\x09f\\x0ag"
    assert printable("line\nnext\r", keep_newlines=True) == "line\nnext\\x0d"
    assert printable("ward-2 café ✓") == "ward-2 café ✓"  # printable Unicode stays
    text = json_text({"who": "alice" + EVIL})
    assert json.loads(text) == {"who": "alice" + EVIL} and not CONTROL.search(text)
