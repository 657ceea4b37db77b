"""The admin audit trail: records chain across reopen and threads; verify names every kind of
tampering and a torn write; the `hacluster audit` commands exit 0/1/2."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from hacluster.audit import (
    GENESIS,
    MAX_ARGS_BYTES,
    MAX_NAME_CHARS,
    RESUME_ACTION,
    TRUNCATED,
    AuditFileError,
    AuditLog,
    AuditWriteError,
    canonical,
    record_hash,
    tail,
    verify,
)
from hacluster_cli.audit_cmd import audit
from tests.support.clock import FakeClock


def _write_log(path: Path, n: int, node: str = "ward-1") -> list[dict]:
    # from 2024-05-01T12:00:00Z, 1 ms on at every record
    with AuditLog(path, node, clock=FakeClock(1_714_564_800.0, step=0.001)) as log:
        return [log.append("admin@10.0.0.5", "drain", {"target": f"ward-{i}"}, f"drained {i}", True)
                for i in range(1, n + 1)]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _problems(path: Path) -> list[str]:
    res = verify(path)
    assert res.ok is (not res.problems)
    return res.problems


def test_records_chain_and_are_canonical(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recs = _write_log(path, 3)
    assert [r["seq"] for r in recs] == [1, 2, 3]
    assert recs[0]["prev"] == GENESIS
    assert recs[1]["prev"] == recs[0]["hash"] and recs[2]["prev"] == recs[1]["hash"]
    assert recs[0]["at"] == "2024-05-01T12:00:00.001Z"
    lines = path.read_text(encoding="utf-8").splitlines()
    for line, rec in zip(lines, recs, strict=True):
        assert line == canonical(rec)
        assert rec["hash"] == record_hash(rec)
        assert set(rec) == {"v", "seq", "at", "node", "who", "action", "args", "result", "ok",
                            "prev", "hash"}
    res = verify(path)
    assert (res.ok, res.records, res.last_seq, res.head, res.problems) == (
        True, 3, 3, recs[-1]["hash"], [])


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = _write_log(path, 2)
    with AuditLog(path, "ward-1") as log:
        rec = log.append("admin", "weight", {"backend": "web/ward-3", "weight": 5}, "ok", True)
        assert log.recent(2) == [first[1], rec]
    assert (rec["seq"], rec["prev"]) == (3, first[1]["hash"])
    assert verify(path).ok and verify(path).records == 3


def test_file_mode_is_0600_and_group_writable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o620)
    with pytest.raises(AuditFileError, match="group/world writable"):
        AuditLog(path, "ward-1")
    os.chmod(path, 0o602)
    with pytest.raises(AuditFileError, match="chmod 600"):
        AuditLog(path, "ward-1")
    with pytest.raises(AuditFileError, match="cannot open"):
        AuditLog(tmp_path / "no-such-dir" / "audit.jsonl", "ward-1")


def test_concurrent_appends_keep_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "ward-1")
    other = AuditLog(path, "ward-1")  # a second writer on the same file (flock + tail re-read)

    def work(w: AuditLog, t: int) -> None:
        for i in range(10):
            w.append(f"thread-{t}", "weight", {"i": i}, "ok", True)

    threads = [threading.Thread(target=work, args=(log if t % 2 else other, t)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    other.close()
    res = verify(path)
    assert (res.ok, res.records, res.last_seq) == (True, 60, 60), res.problems


def test_oversize_values_are_cut_with_a_marker(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.jsonl", "ward-1") as log:
        big = {"note": "x" * 10_000, "n": 1}
        rec = log.append("w" * 1000, "a" * 300, big, "r" * 5000, True)
        odd = log.append("admin", "drain", {1: float("nan"), "p": Path("/x"), "s": {"b", "a"}},
                         "ok", True)
    assert len(rec["who"]) == len(rec["action"]) == MAX_NAME_CHARS
    assert rec["who"].endswith(TRUNCATED) and rec["result"].endswith(TRUNCATED)
    assert rec["args"]["_truncated"] is True
    assert rec["args"]["_bytes"] == len(canonical(big).encode())
    assert rec["args"]["_head"].startswith('{"n":1,"note":"xxx')
    assert len(canonical(rec["args"]).encode()) <= MAX_ARGS_BYTES
    assert odd["args"] == {"1": "nan", "p": "/x", "s": ["a", "b"]}
    assert verify(tmp_path / "audit.jsonl").ok


def test_write_failure_raises_and_the_next_append_chains_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "ward-1")
    log.append("admin", "drain", {}, "started", True)
    real_fd = log._fd
    log._fd = os.open(path, os.O_RDONLY)  # writes now fail with EBADF
    with pytest.raises(AuditWriteError, match="cannot write"):
        log.append("admin", "drain", {}, "done", True)
    os.close(log._fd)
    log._fd = real_fd
    assert log.append("admin", "drain", {}, "done", True)["seq"] == 2
    log.close()
    assert verify(path).ok


# -- verify: tampering --------------------------------------------------------------------

def test_edited_field_is_a_hash_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 3)
    path.write_text(path.read_text().replace('"target":"ward-2"', '"target":"ward-9"'))
    assert _problems(path) == [
        "line 2 (seq 2): hash mismatch: the record was changed after it was written"]


def test_edited_field_with_recomputed_hash_breaks_the_next_prev(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recs = _write_log(path, 3)
    forged = dict(recs[1], who="nobody")
    forged["hash"] = record_hash(forged)
    lines = _lines(path)
    lines[1] = (canonical(forged) + "\n").encode()
    path.write_bytes(b"".join(lines))
    (msg,) = _problems(path)
    assert msg.startswith("line 3 (seq 3): prev does not match the hash of the record before it")


def test_deleted_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 4)
    lines = _lines(path)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    problems = _problems(path)
    assert len(problems) == 2
    assert problems[0].startswith("line 2 (seq 3): prev does not match")
    assert problems[1] == "line 2 (seq 3): seq 3 follows seq 1: records 2..2 are missing"


def test_deleted_first_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    path.write_bytes(b"".join(_lines(path)[1:]))
    assert _problems(path)[0] == "line 1 (seq 2): prev is not 0*64: records before it were removed"


def test_swapped_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 4)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    problems = _problems(path)
    assert any(p.startswith("line 2 (seq 3): prev does not match") for p in problems)
    assert "line 3 (seq 2): seq 2 follows seq 3: out of order or repeated" in problems


def test_appended_forged_line_with_wrong_prev(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recs = _write_log(path, 2)
    forged = dict(recs[1], seq=3, result="forged", prev=recs[0]["hash"])
    forged["hash"] = record_hash(forged)
    with open(path, "a") as f:
        f.write(canonical(forged) + "\n")
    (msg,) = _problems(path)
    assert msg.startswith("line 3 (seq 3): prev does not match")


def test_bad_json_and_foreign_objects(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    lines = _lines(path)
    path.write_bytes(lines[0] + b"{not json\n" + b'{"v":1}\n' + lines[1])
    problems = _problems(path)
    assert problems[0].startswith("line 2: not valid JSON")
    assert problems[1] == "line 3: not an audit record (missing field 'seq')"
    assert len(problems) == 2  # line 4 still chains to line 1


# -- verify and the writer: a torn last line ------------------------------------------------

def _tear(path: Path) -> bytes:
    """Cut the last record in half, as a crash during write() would."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: start + 40])
    return data[start: start + 40]


def test_truncated_last_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 3)
    _tear(path)
    res = verify(path)
    assert not res.ok and res.records == 2
    assert res.problems == ["line 3: truncated last line (40 bytes, no newline): a write was "
                            "interrupted (crash, full disk) or the file was cut; the record "
                            "after seq 2 is incomplete"]


def test_writer_seals_a_torn_line_and_chains_from_the_last_valid_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recs = _write_log(path, 3)
    fragment = _tear(path)
    with AuditLog(path, "ward-1") as log:
        nxt = log.append("admin", "undrain", {"target": "ward-3"}, "ok", True)
    lines = _lines(path)
    assert lines[2] == fragment + b"\n"  # kept, never rewritten
    seal = json.loads(lines[3])
    assert seal["action"] == RESUME_ACTION and seal["ok"] is False
    assert (seal["seq"], seal["prev"]) == (3, recs[1]["hash"])
    assert seal["args"]["torn_bytes"] == 40
    assert (nxt["seq"], nxt["prev"]) == (4, seal["hash"])
    res = verify(path)
    assert (res.ok, res.problems, res.last_seq) == (True, [], 4)
    assert res.notes == ["line 3: incomplete record from an interrupted write (40 bytes), "
                         "sealed at line 4 (seq 3); the record is lost"]


def test_a_seal_for_another_fragment_is_not_accepted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 3)
    _tear(path)
    AuditLog(path, "ward-1").close()
    lines = _lines(path)
    lines[2] = b"X" + lines[2][1:]  # the sealed fragment's bytes no longer match the seal
    path.write_bytes(b"".join(lines))
    (msg,) = _problems(path)
    assert msg.startswith("line 3: not valid JSON")


def test_record_missing_only_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    res = verify(path)
    assert res.ok and res.notes == ["line 2 (seq 2): no newline after the last record"]
    with AuditLog(path, "ward-1") as log:
        assert log.append("admin", "drain", {}, "ok", True)["seq"] == 3
    assert verify(path).ok and verify(path).notes == []


def test_tail_skips_fragments_and_is_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recs = _write_log(path, 5)
    _tear(path)
    assert tail(path, 2) == recs[2:4]
    assert tail(path, 100) == recs[:4]
    assert tail(path, 0) == []


# -- CLI -----------------------------------------------------------------------------------

def test_cli_verify_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recs = _write_log(path, 2)
    r = CliRunner().invoke(audit, ["verify", str(path)])
    assert r.exit_code == 0, r.output
    assert f"intact, 2 records, last seq 2, head {recs[-1]['hash']}" in r.output
    r = CliRunner().invoke(audit, ["verify", str(path), "--json"])
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert (out["ok"], out["records"], out["head"], out["problems"]) == (
        True, 2, recs[-1]["hash"], [])


def test_cli_verify_tampered(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 3)
    path.write_text(path.read_text().replace('"ok":true', '"ok":false', 1))
    r = CliRunner().invoke(audit, ["verify", str(path)])
    assert r.exit_code == 1
    assert "1 problem in 3 records" in r.output and "line 1 (seq 1): hash mismatch" in r.output
    r = CliRunner().invoke(audit, ["verify", "--json", str(path)])
    assert r.exit_code == 1
    out = json.loads(r.output)
    assert out["ok"] is False and out["problems"][0].startswith("line 1 (seq 1): hash mismatch")


def test_cli_verify_unreadable_and_usage(tmp_path: Path) -> None:
    r = CliRunner().invoke(audit, ["verify", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 2 and "cannot read" in r.output
    r = CliRunner().invoke(audit, ["verify", str(tmp_path)])  # a directory
    assert r.exit_code == 2
    assert CliRunner().invoke(audit, ["verify"]).exit_code == 2
    r = CliRunner().invoke(audit, ["verify", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output


def test_cli_show(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recs = _write_log(path, 3)
    r = CliRunner().invoke(audit, ["show", str(path), "--last", "2"])
    assert r.exit_code == 0, r.output
    out = r.output.splitlines()
    assert out[0].split()[:4] == ["SEQ", "AT", "WHO", "ACTION"] and len(out) == 3
    assert out[1].startswith("2 ") and "ward-2" in out[1] and "drained 2" in out[1]
    r = CliRunner().invoke(audit, ["show", str(path), "--json"])
    assert json.loads(r.output)["records"] == recs
