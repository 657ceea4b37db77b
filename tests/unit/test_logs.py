"""setup_logging: the human format as before, and one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hacluster.logs import JsonFormatter, is_journal, setup_logging

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


# ------------------------------------------------------------------ under systemd's journal

JOURNAL_LINE = re.compile(r"^<(\d)>")


def _journal_env(f) -> dict[str, str]:
    """JOURNAL_STREAM as systemd sets it for a unit whose stderr is the journal: the
    device:inode of that descriptor (here a plain file standing in for the socket)."""
    st = os.fstat(f.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_journal_lines_carry_the_priority_and_no_timestamp(restore_logging):
    out = io.StringIO()
    setup_logging("debug", "human", stream=out, environ={}, journal=True)
    log = logging.getLogger("hacluster.agent")
    log.debug("tick")
    log.info("leader, lease ok, holds %s", "10.0.0.100")
    log.warning("peer n2 suspect")
    log.error("nft apply failed")
    log.critical("two holders")
    log.log(logging.INFO + 5, "between info and warning")  # a level of its own: the lower one's
    assert out.getvalue().splitlines() == [
        "<7>DEBUG hacluster.agent: tick",
        "<6>INFO hacluster.agent: leader, lease ok, holds 10.0.0.100",
        "<4>WARNING hacluster.agent: peer n2 suspect",
        "<3>ERROR hacluster.agent: nft apply failed",
        "<2>CRITICAL hacluster.agent: two holders",
        "<6>Level 25 hacluster.agent: between info and warning",
    ]


def test_journal_every_line_of_a_traceback_keeps_the_priority(restore_logging):
    out = io.StringIO()
    setup_logging("info", "human", stream=out, environ={}, journal=True)
    try:
        raise ValueError("nft said no\nline two of the error")
    except ValueError:
        logging.getLogger("hacluster.dataplane").exception("apply failed")
    lines = out.getvalue().splitlines()
    assert len(lines) > 4 and lines[0] == "<3>ERROR hacluster.dataplane: apply failed"
    assert all(line.startswith("<3>") for line in lines), lines
    assert "<3>Traceback (most recent call last):" in lines
    assert "<3>ValueError: nft said no" in lines and "<3>line two of the error" in lines


def test_journal_a_message_cannot_choose_its_own_priority(restore_logging):
    out = io.StringIO()
    setup_logging("info", "human", stream=out, environ={}, journal=True)
    logging.getLogger("hacluster.gossip").info("member %s joined", "evil\n<0>EMERG: fake")
    assert out.getvalue().splitlines() == ["<6>INFO hacluster.gossip: member evil",
                                           "<6><0>EMERG: fake joined"]


def test_journal_json_is_prefixed_and_otherwise_the_same(restore_logging):
    out = io.StringIO()
    setup_logging("info", "json", stream=out, environ={}, journal=True)
    logging.getLogger("hacluster.raft").warning("term %d", 7)
    (line,) = out.getvalue().splitlines()
    assert line.startswith("<4>{")
    doc = json.loads(line[3:])  # what journald keeps as MESSAGE
    assert doc["level"] == "WARNING" and doc["msg"] == "term 7" and TS.match(doc["ts"])


def test_the_journal_is_recognised_by_device_and_inode(restore_logging, tmp_path):
    with open(tmp_path / "stderr", "w") as f, open(tmp_path / "other", "w") as other:
        assert is_journal(f, _journal_env(f))
        assert not is_journal(f, _journal_env(other))  # inherited, but not this descriptor
        assert not is_journal(f, {})
        assert not is_journal(f, {"JOURNAL_STREAM": "garbage"})
        assert not is_journal(io.StringIO(), _journal_env(f))  # no descriptor at all
        # INVOCATION_ID alone (StandardError=file:...) is not the journal: today's format
        assert not is_journal(f, {"INVOCATION_ID": "0123456789abcdef"})
        setup_logging("info", "human", stream=f, environ=_journal_env(f))
        logging.getLogger("hacluster.agent").warning("auto")
        setup_logging("info", "human", stream=f, environ=_journal_env(other))
        logging.getLogger("hacluster.agent").warning("not the journal")
    first, second = (tmp_path / "stderr").read_text().splitlines()
    assert first == "<4>WARNING hacluster.agent: auto"
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING hacluster.agent: not the journal$",
                    second)


def _run_with_journal_stderr(tmp_path, code: list[str]) -> tuple[int, list[str]]:
    """Run a Python process whose stderr is a file that JOURNAL_STREAM names, as systemd does."""
    root = Path(__file__).resolve().parents[2]
    with open(tmp_path / "journal", "w") as err:
        env = {**os.environ, **_journal_env(err),
               "PYTHONPATH": os.pathsep.join([str(root), str(root / "cli")])}
        env.pop("HACLUSTER_LOG_FORMAT", None)
        proc = subprocess.run([sys.executable, *code], stderr=err, stdout=subprocess.DEVNULL, env=env,
                              cwd=tmp_path, timeout=60, check=False)
    return proc.returncode, (tmp_path / "journal").read_text().splitlines()


def test_a_process_started_like_a_unit_logs_with_priorities(tmp_path):
    code, lines = _run_with_journal_stderr(tmp_path, ["-c", (
        "import logging\n"
        "from hacluster.logs import setup_logging\n"
        "setup_logging('info', 'human')\n"
        "log = logging.getLogger('hacluster.agent')\n"
        "log.info('started')\n"
        "log.warning('lease lost')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('tick failed')\n")])
    assert code == 0
    assert lines[:3] == ["<6>INFO hacluster.agent: started", "<4>WARNING hacluster.agent: lease lost",
                         "<3>ERROR hacluster.agent: tick failed"]
    assert all(JOURNAL_LINE.match(line) for line in lines), lines
    assert lines[-1] == "<3>ZeroDivisionError: division by zero"


def test_an_agent_refusing_to_start_says_why_at_priority_error(tmp_path):
    code, lines = _run_with_journal_stderr(tmp_path, ["-m", "hacluster.daemon", "--config",
                                                      str(tmp_path / "missing.yaml")])
    assert code == 2
    assert lines and all(line.startswith("<3>") for line in lines), lines
    assert lines[0].startswith("<3>hacluster-agent: refusing to start:")
    assert any("cannot read" in line for line in lines)
