"""Logging set-up: the human format by default, one JSON object per line on request.

The format comes from the config (`log_format: human|json`); the environment variable
HACLUSTER_LOG_FORMAT overrides it, so that a systemd drop-in can switch a server to JSON
for a log shipper without touching the replicated-by-hand config file.

Invariants:
- Libraries (pyroute2, grpc) stay at WARNING whatever the level: their debug output at
  100 ticks/s would cost more CPU than the agent itself. Only `hacluster.*` follows it.
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


def setup_logging(level: str, fmt: str = "human", *, stream: TextIO | None = None,
                  environ: Mapping[str, str] | None = None) -> str:
    """Configure the root logger with one handler on `stream` (stderr: journald takes it)
    and return the format in effect. Calling it again replaces the handler it installed
    (and leaves others alone, such as pytest's). level: debug|info|warning|error;
    fmt: human|json, overridden by a valid HACLUSTER_LOG_FORMAT."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    env = os.environ if environ is None else environ
    override = env.get(ENV_VAR, "").strip().lower()
    bad_override = bool(override) and override not in FORMATS
    if override in FORMATS:
        fmt = override
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(HUMAN_FORMAT))
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
