"""Logging set-up: the human format by default, one JSON object per line on request.

The format comes from the config (`log_format: human|json`); the environment variable
HACLUSTER_LOG_FORMAT overrides it, so that a systemd drop-in can switch a server to JSON
for a log shipper without touching the replicated-by-hand config file.

Under systemd, when stderr is the journal (JOURNAL_STREAM names its device:inode, as
systemd.exec(5) says to check), every line starts with its sd-daemon(3) priority (`<3>`
ERROR, `<4>` WARNING, `<6>` INFO, `<7>` DEBUG, `<2>` CRITICAL): journald strips it and files
the line at that priority (SyslogLevelPrefix=yes, the default), so `journalctl -p warning`
shows warnings and errors only. The human format then carries no timestamp (journald
stamps each line itself; two would be noise). A JSON line keeps its `ts` field (a shipper
reads it) and gets the prefix too: journald strips it, so MESSAGE is the same JSON.
INVOCATION_ID alone is not enough: a unit may send stderr to a file or a tty
(StandardError=file:...), where a `<4>` would be printed as such.

Invariants:
- Libraries (pyroute2, grpc) stay at WARNING whatever the level: their debug output at
  100 ticks/s would cost more CPU than the agent itself. Only `hacluster.*` follows it.
- Under the journal every line of a record carries its priority, a traceback's too: journald
  reads each line on its own, and a line without a prefix is filed at the unit's default
  (info), where `journalctl -p err` would lose it. It also keeps a message that starts with
  `<0>` (a peer's name, a path) from choosing its own priority.
- A JSON line is always one line of valid JSON, whatever the message, its arguments or
  its extra fields hold: formatting never raises, and a value JSON cannot carry is
  written as its str().
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("human", "json")
ENV_VAR = "HACLUSTER_LOG_FORMAT"
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald adds the time
JOURNAL_ENV = "JOURNAL_STREAM"
# logging level -> syslog priority (sd-daemon(3)); a level between two takes the lower one's
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

# Attributes every LogRecord has; anything else on a record came from `extra={...}`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}
_OWN_KEYS = ("ts", "level", "logger", "msg", "exc", "stack")


class JsonFormatter(logging.Formatter):
    """ts (ISO-8601 UTC, ms), level, logger, msg; exc and stack when present; then the
    record's extra fields (a key that clashes with ours gets an `extra_` prefix)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return _dumps(self._fields(record))
        except Exception as e:  # noqa: BLE001 - a log line must never take the caller down
            return _dumps({"ts": _ts(time.time()), "level": "ERROR",
                           "logger": "hacluster.logs",
                           "msg": f"cannot format a log record: {_safe_str(e)}",
                           "record": _safe_str(getattr(record, "msg", None))})

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": _ts(record.created), "level": record.levelname,
                               "logger": record.name, "msg": _message(record)}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key.startswith("_"):
                continue
            out["extra_" + key if key in _OWN_KEYS else key] = _jsonable(value)
        return out


def priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    return next((prio for threshold, prio in _PRIORITIES if levelno >= threshold), 7)


def with_priority(text: str, prio: int) -> str:
    """Every line of text prefixed with `<prio>`: journald reads each line on its own."""
    return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))


class JournalFormatter(logging.Formatter):
    """Another formatter's output with the record's priority on each of its lines."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return with_priority(self.inner.format(record), priority(record.levelno))


def is_journal(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is systemd's journal stream: JOURNAL_STREAM (set by systemd for a
    unit whose stdout or stderr goes to the journal) names the device and inode of this very
    file descriptor. A child that inherited the variable but writes elsewhere gets False."""
    env = os.environ if environ is None else environ
    try:
        dev, ino = (int(part) for part in env.get(JOURNAL_ENV, "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError, TypeError):  # unset, malformed, no descriptor
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def print_error(text: str, *, stream: TextIO | None = None,
                environ: Mapping[str, str] | None = None) -> None:
    """Write text (a refusal to start, before logging is set up) to stderr, at priority
    error under the journal: `journalctl -p err` shows why the agent did not start."""
    out = sys.stderr if stream is None else stream
    out.write((with_priority(text, 3) if is_journal(out, environ) else text) + "\n")
    out.flush()


def setup_logging(level: str, fmt: str = "human", *, stream: TextIO | None = None,
                  environ: Mapping[str, str] | None = None, journal: bool | None = None) -> str:
    """Configure the root logger with one handler on `stream` (stderr: journald takes it)
    and return the format in effect. Calling it again replaces the handler it installed
    (and leaves others alone, such as pytest's). level: debug|info|warning|error;
    fmt: human|json, overridden by a valid HACLUSTER_LOG_FORMAT. journal: priority prefixes
    and no timestamp (module doc); None: when `stream` is the journal's (is_journal)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    env = os.environ if environ is None else environ
    override = env.get(ENV_VAR, "").strip().lower()
    bad_override = bool(override) and override not in FORMATS
    if override in FORMATS:
        fmt = override
    out = sys.stderr if stream is None else stream
    if journal is None:
        journal = is_journal(out, env)
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter = (JsonFormatter() if fmt == "json" else
                                    logging.Formatter(JOURNAL_FORMAT if journal else HUMAN_FORMAT))
    handler.setFormatter(JournalFormatter(formatter) if journal else formatter)
    handler._hacluster = True  # type: ignore[attr-defined]  # ours: replaced on the next call
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_hacluster", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("hacluster").setLevel(getattr(logging, level.upper()))
    if bad_override:
        logging.getLogger("hacluster.logs").warning(
            "%s=%r is not one of %s: using %s", ENV_VAR, env.get(ENV_VAR), "|".join(FORMATS), fmt)
    return fmt


def _ts(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - wrong %-arguments: keep what we have, visibly
        return f"{_safe_str(record.msg)} (unformattable arguments: {_safe_str(record.args)})"


def _jsonable(value: Any) -> Any:
    """value itself when JSON carries it as is (finite numbers only), else str(value)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:
        json.dumps(value, allow_nan=False)
        return value
    except Exception:  # noqa: BLE001 - TypeError, ValueError, RecursionError, a bad __str__ ...
        return _safe_str(value)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001
        return f"<unprintable {type(value).__name__}>"


def _dumps(obj: dict[str, Any]) -> str:
    # Readable UTF-8 (accents in ward names) unless a lone surrogate (an undecodable file
    # name) would make the line unwritable: then escape everything.
    line = json.dumps(obj, ensure_ascii=False, allow_nan=False, default=_safe_str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj, ensure_ascii=True, allow_nan=False, default=_safe_str)
    return line
