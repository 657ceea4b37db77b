"""Remote text made safe for the operator's terminal.

Member ids, check names, check output, error details, event texts: what the CLI prints
comes from agents, and what agents report comes partly from gossip, check scripts and
other members. A control character in it reaches the operator's terminal as a command:
ESC [ 2 J clears the screen, OSC sequences set the window title or write the clipboard,
and a C1 CSI (U+009B) does the same in one character on terminals that honour C1. So every
human rendering passes remote text through `printable()`, which shows each C0/C1 control
character, DEL and the bidirectional overrides as a visible escape (`\\x1b`, `\\x9b`,
`\\u202e`) instead. A newline is escaped too, except where a block is meant to have lines
(check output): a name with a newline in it could otherwise draw a forged table row.

JSON output keeps the raw strings: json.dumps escapes every control character itself;
`json_text` also escapes C1 and bidi characters where ensure_ascii=False would print them.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from typing import Any, TypeVar

import click

T = TypeVar("T")

# C0 (tab, newline and carriage return included), DEL, C1; the bidi embeddings, overrides
# and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what follows them ("Trojan
# Source"); the line and paragraph separators, which some terminals break lines on.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NOT_ASCII_SAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# Fields whose text is a block of lines (a check's output): its newlines stay newlines.
MULTILINE_FIELDS = frozenset({"output"})


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with every control character shown as an escape; newlines kept if asked."""
    return (_UNSAFE_KEEP_NL if keep_newlines else _UNSAFE).sub(_escape, text)


def scrub(value: T, multiline: frozenset[str] = MULTILINE_FIELDS) -> T:
    """A copy of a status value (dataclasses, tuples, lists, dicts of them, strings) with
    every string made printable; fields named in `multiline` keep their newlines. Enums
    and numbers are left as they are."""
    return _scrub(value, multiline, keep_newlines=False)  # type: ignore[no-any-return]


def _scrub(value: Any, multiline: frozenset[str], keep_newlines: bool) -> Any:
    if isinstance(value, enum.Enum):
        return value
    if isinstance(value, str):
        return printable(value, keep_newlines)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{
            f.name: _scrub(getattr(value, f.name), multiline, f.name in multiline)
            for f in dataclasses.fields(value) if f.init})
    if isinstance(value, tuple | list):
        return type(value)(_scrub(v, multiline, keep_newlines) for v in value)
    if isinstance(value, dict):
        return {_scrub(k, multiline, False): _scrub(v, multiline, k in multiline)
                for k, v in value.items()}
    return value


def json_text(value: Any) -> str:
    """json.dumps with UTF-8 kept (ensure_ascii=False), but C1, DEL and bidi characters
    escaped as \\uXXXX: the same JSON value, nothing a terminal would act on."""
    return _NOT_ASCII_SAFE.sub(lambda m: f"\\u{ord(m.group()):04x}",
                               json.dumps(value, ensure_ascii=False))


class CliError(click.ClickException):
    """Printed as 'Error: ...' on stderr, control characters escaped (its message often
    carries an agent's error details); the process exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def format_message(self) -> str:
        return printable(self.message, keep_newlines=True)
