"""setup_logging: the human format as before, and one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from hacluster.logs import JsonFormatter, setup_logging

# The format _setup_logging in agent.py has always used: the human format must not change.
OLD_HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    hac = logging.getLogger("hacluster")
    saved = (list(root.handlers), root.level, hac.level)
    yield
    for h in root.handlers:
        if h not in saved[0]:
            root.removeHandler(h)
    root.setLevel(saved[1])
    hac.setLevel(saved[2])


def _setup(level: str = "info", fmt: str = "json", environ: dict | None = None) -> io.StringIO:
    out = io.StringIO()
    setup_logging(level, fmt, stream=out, environ={} if environ is None else environ)
    return out


def _lines(out: io.StringIO) -> list[dict]:
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_have_the_fields(restore_logging):
    out = _setup()
    logging.getLogger("hacluster.agent").info("leader, lease ok, holds %s", "10.0.0.100")
    logging.getLogger("hacluster.raft").warning("term %d", 7)
    first, second = _lines(out)
    assert set(first) == {"ts", "level", "logger", "msg"}
    assert TS.match(first["ts"])
    assert first["level"] == "INFO" and first["logger"] == "hacluster.agent"
    assert first["msg"] == "leader, lease ok, holds 10.0.0.100"
    assert second["level"] == "WARNING" and second["msg"] == "term 7"


def test_json_exception(restore_logging):
    out = _setup()
    try:
        raise ValueError("nft said no")
    except ValueError:
        logging.getLogger("hacluster.dataplane").exception("apply failed")
    (line,) = _lines(out)
    assert line["msg"] == "apply failed" and line["level"] == "ERROR"
    assert line["exc"].startswith("Traceback") and "ValueError: nft said no" in line["exc"]


def test_json_extra_fields(restore_logging):
    out = _setup()

    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    logging.getLogger("hacluster.agent").info("claimed", extra={
        "vip": "10.0.0.100", "term": 42, "took_ms": 31.5, "ok": True, "none": None,
        "holders": {"n1": ["10.0.0.100"]}, "obj": Opaque(), "nan": float("nan"),
        "tuple_keys": {(1, 2): "x"}, "level": "mine", "ts": 0, "hostile": Hostile()})
    (line,) = _lines(out)
    assert line["level"] == "INFO" and TS.match(line["ts"])
    assert line["vip"] == "10.0.0.100" and line["term"] == 42 and line["took_ms"] == 31.5
    assert line["ok"] is True and line["none"] is None
    assert line["holders"] == {"n1": ["10.0.0.100"]}
    assert line["obj"] == "opaque!" and line["nan"] == "nan"
    assert line["tuple_keys"] == "{(1, 2): 'x'}"
    assert line["extra_level"] == "mine" and line["extra_ts"] == 0
    assert line["hostile"] == "<unprintable Hostile>"


def test_json_unicode_and_newlines_stay_one_line(restore_logging):
    out = _setup()
    log = logging.getLogger("hacluster.health")
    log.info("Hôpital Saint-Éloi, ward ✓ 病院\nsecond line", extra={"ward": "Réa ②"})
    log.info("undecodable file name %s", b"caf\xe9".decode("utf-8", "surrogateescape"))
    first, second = _lines(out)
    assert first["msg"] == "Hôpital Saint-Éloi, ward ✓ 病院\nsecond line"
    assert first["ward"] == "Réa ②"
    assert "Hôpital" in out.getvalue()  # readable UTF-8, not \u escapes
    assert second["msg"] == "undecodable file name caf\udce9"
    out.getvalue().encode("utf-8")  # the whole output is writable as UTF-8


def test_json_bad_arguments_never_raise():
    # formatted directly: pytest's own capture handler would raise on this record first
    record = logging.LogRecord("hacluster.agent", logging.INFO, __file__, 1, "%d VIPs", ("two",), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "INFO" and "%d VIPs" in line["msg"] and "two" in line["msg"]


def test_formatter_survives_a_broken_record():
    record = logging.LogRecord("hacluster.x", logging.INFO, __file__, 1, "m", (), None)
    record.created = "not a time"  # type: ignore[assignment]
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"].startswith("cannot format a log record")


def test_levels_libraries_stay_at_warning(restore_logging):
    out = _setup(level="debug")
    logging.getLogger("grpc").info("chatty")
    logging.getLogger("pyroute2").warning("worth seeing")
    logging.getLogger("hacluster.agent").debug("tick detail")
    assert [(x["logger"], x["msg"]) for x in _lines(out)] == [
        ("pyroute2", "worth seeing"), ("hacluster.agent", "tick detail")]
    out = _setup(level="warning")
    logging.getLogger("hacluster.agent").info("quiet")
    assert out.getvalue() == ""


def test_human_format_unchanged(restore_logging):
    out = _setup(fmt="human")
    log = logging.getLogger("hacluster.agent")
    log.info("leader, lease ok", extra={"vip": "10.0.0.100"})
    record = logging.LogRecord("hacluster.agent", logging.INFO, __file__, 1, "leader, lease ok",
                               (), None)
    line = out.getvalue()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO hacluster.agent: leader, lease ok\n",
                        line)
    expected = logging.Formatter(OLD_HUMAN_FORMAT).format(record)
    assert line.split(" ", 2)[2] == expected.split(" ", 2)[2] + "\n"


def test_env_overrides_the_config(restore_logging):
    out = io.StringIO()
    assert setup_logging("info", "human", stream=out,
                         environ={"HACLUSTER_LOG_FORMAT": "JSON"}) == "json"
    logging.getLogger("hacluster.agent").info("x")
    assert json.loads(out.getvalue())["msg"] == "x"


def test_a_bad_env_value_falls_back_to_the_config_loudly(restore_logging):
    out = io.StringIO()
    assert setup_logging("info", "json", stream=out,
                         environ={"HACLUSTER_LOG_FORMAT": "xml"}) == "json"
    (line,) = _lines(out)
    assert line["level"] == "WARNING" and "HACLUSTER_LOG_FORMAT='xml'" in line["msg"]


def test_a_bad_format_argument_is_refused():
    with pytest.raises(ValueError):
        setup_logging("info", "xml", environ={})


def test_setting_up_again_replaces_our_handler_only(restore_logging):
    root = logging.getLogger()
    before = len(root.handlers)
    first = _setup(fmt="human")
    second = _setup(fmt="json")
    assert len(root.handlers) == before + 1
    logging.getLogger("hacluster.agent").info("once")
    assert first.getvalue() == ""
    assert _lines(second)[0]["msg"] == "once"
