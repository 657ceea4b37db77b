"""The admin audit trail: a hash-chained JSON-lines file on the node that executed each action.

One line per record, canonical JSON (sorted keys, compact, UTF-8) of

    {"v": 1, "seq": 7, "at": "2024-05-01T12:00:00.123Z", "node": "ward-1",
     "who": "admin@10.0.0.5", "action": "drain", "args": {"target": "ward-2"},
     "result": "drained ward-2", "ok": true, "prev": "<hash of seq 6>", "hash": "<sha256>"}

`hash` is the hex SHA-256 of the canonical JSON of the record without "hash"; `prev` is the
previous record's `hash` ("0" * 64 for seq 1); seq counts up from 1 with no gaps. Editing a
field breaks that record's hash, deleting or moving a line breaks the next `prev` and `seq`.
The chain has no key: whoever can write the file can rewrite its whole tail consistently.
`verify()` reports the head hash; copying it off the node now and then is what turns "the
file is consistent" into "the file is the one we saw".

Caller protocol. An action that cannot be audited must not happen silently, so `append`
raises `AuditWriteError` when the record cannot be written and fsynced. Admin handlers call
it twice:

    log.append(who, "drain", args, "started", True)   # raises -> refuse; nothing was done
    try:
        detail = execute()
    except Exception as e:
        log.append(who, "drain", args, f"failed: {e}", False)
        raise
    log.append(who, "drain", args, detail, True)      # raises -> report an error, not success

and reply success only after the last append returned. Content never makes `append` raise:
over-long or non-JSON values are cut or converted, with a marker.

Crash rule. A record is written with one write() and fsynced, so a crash can leave at most
one incomplete line, at the end. Bytes after the last newline are that torn write. The next
writer (this process later, or another one: appends hold flock) never rewrites existing
bytes: it ends the fragment with a newline and appends an "audit.resume" record that names
the fragment's offset, size and SHA-256 and chains from the last complete valid record
(whose seq + 1 it takes: the torn record is lost, and its action was never reported as
done). `verify` reports an unterminated last line as a problem ("truncated last line"), and
a sealed fragment followed by its matching audit.resume record as a note, not a problem.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

VERSION = 1
GENESIS = "0" * 64
RESUME_ACTION = "audit.resume"
RESUME_WHO = "hacluster-audit"
TRUNCATED = "...[truncated]"
MAX_NAME_CHARS = 256        # node, who, action
MAX_RESULT_CHARS = 1024
MAX_ARGS_BYTES = 4096       # canonical JSON of args, UTF-8
# Far above any record this module writes (< 16 KiB), so a longer line is never a record and
# readers never hold more than this much of one line in memory.
MAX_LINE = 64 * 1024
_BLOCK = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"v": int, "seq": int, "at": str, "node": str, "who": str, "action": str, "args": dict,
           "result": str, "ok": bool, "prev": str, "hash": str}

Reader = Callable[[int, int], bytes]  # (offset, size) -> bytes


class AuditError(Exception):
    """Base of the audit module's errors."""


class AuditFileError(AuditError):
    """The audit file is unsafe or unusable (group/world writable, not a regular file)."""


class AuditWriteError(AuditError):
    """A record could not be written and fsynced: the action it describes must not proceed."""


# -- record format -------------------------------------------------------------------------

def canonical(obj: Any) -> str:
    """The one serialization that is hashed and written. json escapes control characters,
    so a record never contains a raw newline: one record is exactly one line."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def format_error(record: Any) -> str | None:
    """Why `record` is not a well-formed v1 record (hash not checked), or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for key, typ in _FIELDS.items():
        if key not in record:
            return f"missing field {key!r}"
        value = record[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            return f"field {key!r} is not a {typ.__name__}"
    extra = sorted(set(record) - set(_FIELDS))
    if extra:
        return f"unexpected field {extra[0]!r}"
    if record["v"] != VERSION:
        return f"version {record['v']}, this hacluster reads version {VERSION}"
    if record["seq"] < 1:
        return f"seq {record['seq']} < 1"
    for key in ("prev", "hash"):
        if not _HEX64.fullmatch(record[key]):
            return f"field {key!r} is not 64 lowercase hex digits"
    return None


def _clean(s: str) -> str:
    # Lone surrogates cannot be encoded as UTF-8; the record must always be writable.
    return s.encode("utf-8", "replace").decode("utf-8")


def _bound(s: str, limit: int) -> str:
    s = _clean(str(s))
    return s if len(s) <= limit else s[: limit - len(TRUNCATED)] + TRUNCATED


def _jsonable(obj: Any, depth: int = 0) -> Any:
    """obj as plain JSON values: str keys, finite floats, anything else as its str()."""
    if depth > 32:
        return TRUNCATED
    if obj is None or isinstance(obj, bool | int):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else str(obj)
    if isinstance(obj, str):
        return _clean(obj)
    if isinstance(obj, dict):
        return {_clean(str(k)): _jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v, depth + 1) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((_jsonable(v, depth + 1) for v in obj), key=repr)
    return _clean(str(obj))


def bound_args(args: Any) -> dict[str, Any]:
    """args as a JSON object of at most MAX_ARGS_BYTES; a larger one is replaced by a marker
    object keeping its size, SHA-256 and a prefix of its canonical JSON."""
    value = _jsonable(args)
    obj = value if isinstance(value, dict) else {"value": value}
    raw = canonical(obj).encode("utf-8")
    if len(raw) <= MAX_ARGS_BYTES:
        return obj
    budget = MAX_ARGS_BYTES - 256
    while True:  # escaping can grow the prefix: shrink until the marker fits
        out = {"_truncated": True, "_bytes": len(raw),
               "_sha256": hashlib.sha256(raw).hexdigest(),
               "_head": raw[:budget].decode("utf-8", "ignore")}
        if len(canonical(out).encode("utf-8")) <= MAX_ARGS_BYTES:
            return out
        budget = budget * 3 // 4


def _utc_ms(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_valid(line: bytes) -> dict[str, Any] | None:
    """The record on `line` if it is well formed and its hash matches, else None."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if format_error(rec) is not None or record_hash(rec) != rec["hash"]:
        return None
    return rec


# -- reading the tail ------------------------------------------------------------------------

def _complete_end(read: Reader, size: int) -> int:
    """Offset just after the last newline (0 if none): where a torn last line would start."""
    pos = size
    while pos > 0:
        n = min(_BLOCK, pos)
        pos -= n
        i = read(pos, n).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _lines_backward(read: Reader, end: int) -> Iterator[tuple[int, bytes | None]]:
    """(offset, line without its newline) of each line in [0, end), last first; `end` is just
    after a newline. None stands for a line longer than MAX_LINE."""
    if end <= 0:
        return
    pos, buf, overlong = end - 1, b"", False  # buf is [pos, end of the current line)
    while True:
        i = buf.rfind(b"\n")
        if i >= 0:
            line = buf[i + 1:]
            yield pos + i + 1, None if overlong or len(line) > MAX_LINE else line
            buf, overlong = buf[:i], False
            continue
        if pos == 0:
            yield 0, None if overlong or len(buf) > MAX_LINE else buf
            return
        if len(buf) > MAX_LINE:
            buf, overlong = b"", True
        n = min(_BLOCK, pos)
        pos -= n
        buf = read(pos, n) + buf


def _tail_records(read: Reader, size: int, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if n <= 0:
        return out
    for _, line in _lines_backward(read, _complete_end(read, size)):
        if line is None:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
            if len(out) >= n:
                break
    return out[::-1]


def _pread(fd: int) -> Reader:
    return lambda offset, size: os.pread(fd, size, offset)


def _sha_range(read: Reader, offset: int, size: int) -> str:
    h = hashlib.sha256()
    for pos in range(offset, offset + size, _BLOCK):
        h.update(read(pos, min(_BLOCK, offset + size - pos)))
    return h.hexdigest()


def tail(path: Path, n: int) -> list[dict[str, Any]]:
    """The last n complete lines of `path` that are JSON objects, oldest first; unchecked."""
    with open(path, "rb") as f:
        fd = f.fileno()
        return _tail_records(_pread(fd), os.fstat(fd).st_size, n)


# -- writing ---------------------------------------------------------------------------------

def _open_for_append(path: Path) -> int:
    existed = path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise AuditFileError(f"{path}: cannot open for appending: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuditFileError(f"{path}: not a regular file")
        if st.st_mode & 0o022:
            raise AuditFileError(
                f"{path}: group/world writable (mode {stat.S_IMODE(st.st_mode):04o}): others "
                "could rewrite the audit trail; chmod 600 it")
        if not existed:  # the new file's directory entry must survive a crash too
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        os.close(fd)
        raise
    return fd


class AuditLog:
    """Appends records to one node's audit file; safe across threads and processes."""

    def __init__(self, path: Path, node: str, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.node = _bound(node, MAX_NAME_CHARS)
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = _open_for_append(self.path)
        # File size right after our last write. Another size means someone else appended
        # (or a write failed half way): re-read the tail before chaining. -1 forces it.
        self._end = -1
        self._seq, self._prev = 0, GENESIS
        try:
            with self._lock, self._flocked():
                self._sync()
        except BaseException:
            self.close()
            raise

    def append(self, who: str, action: str, args: dict[str, Any], result: str,
               ok: bool) -> dict[str, Any]:
        """Write, flush and fsync one record; return it. Raises AuditWriteError if it could
        not be written: the caller must then not report the action as done."""
        with self._lock, self._flocked():
            self._sync()
            return self._write_record(who, action, args, result, ok)

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The last n records (complete lines that are JSON objects), oldest first."""
        fd = self._need_fd()
        return _tail_records(_pread(fd), os.fstat(fd).st_size, n)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _need_fd(self) -> int:
        if self._fd is None:
            raise AuditWriteError(f"{self.path}: audit log is closed")
        return self._fd

    @contextmanager
    def _flocked(self) -> Iterator[None]:
        """Hold flock, so that two processes never interleave lines or fork the chain. Any
        OSError inside (lock, read, write, fsync) becomes AuditWriteError, and as what
        reached the disk is then unknown, the next append re-reads the tail first."""
        fd = self._need_fd()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            self._end = -1
            raise AuditWriteError(f"{self.path}: cannot write the audit record: {e}") from e

    def _sync(self) -> None:
        """Continue the chain from the file's last valid record; seal a torn last line."""
        fd = self._need_fd()
        size = os.fstat(fd).st_size
        if size == self._end:
            return
        read = _pread(fd)
        end = _complete_end(read, size)
        self._seq, self._prev = 0, GENESIS
        for _, line in _lines_backward(read, end):
            rec = parse_valid(line) if line is not None else None
            if rec is not None:
                self._seq, self._prev = rec["seq"], rec["hash"]
                break
        self._end = size
        if size == end:
            return
        frag = read(end, size - end) if size - end <= MAX_LINE else None
        rec = parse_valid(frag) if frag is not None else None
        if rec is not None and rec["seq"] == self._seq + 1 and rec["prev"] == self._prev:
            self._write(b"\n")  # a whole record that only lacks its newline
            self._seq, self._prev = rec["seq"], rec["hash"]
            return
        self._write_record(
            RESUME_WHO, RESUME_ACTION,
            {"torn_offset": end, "torn_bytes": size - end,
             "torn_sha256": _sha_range(read, end, size - end)},
            f"sealed an incomplete last line left by an interrupted write; chained from "
            f"seq {self._seq}", False, lead=b"\n")

    def _write_record(self, who: str, action: str, args: dict[str, Any], result: str, ok: bool,
                      lead: bytes = b"") -> dict[str, Any]:
        rec: dict[str, Any] = {
            "v": VERSION, "seq": self._seq + 1, "at": _utc_ms(self._clock()), "node": self.node,
            "who": _bound(who, MAX_NAME_CHARS), "action": _bound(action, MAX_NAME_CHARS),
            "args": bound_args(args), "result": _bound(result, MAX_RESULT_CHARS),
            "ok": bool(ok), "prev": self._prev}
        rec["hash"] = record_hash(rec)
        self._write(lead + (canonical(rec) + "\n").encode("utf-8"))
        self._seq, self._prev = rec["seq"], rec["hash"]
        return rec

    def _write(self, data: bytes) -> None:
        fd = self._need_fd()
        done = 0
        while done < len(data):  # one write() in practice; O_APPEND + flock keep it contiguous
            n = os.write(fd, data[done:])
            if n <= 0:
                raise OSError("write() wrote nothing")
            done += n
        os.fsync(fd)
        self._end += len(data)


# -- verifying -------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int                     # lines that are well-formed records (even if tampered)
    problems: list[str]              # each names its line; empty when ok
    notes: list[str] = field(default_factory=list)   # sealed torn writes, missing final newline
    last_seq: int = 0
    head: str = GENESIS              # hash of the last record: keep a copy off the node


@dataclass(frozen=True, slots=True)
class _Line:
    no: int
    offset: int
    data: bytes | None               # None: longer than MAX_LINE
    size: int                        # bytes, without the newline
    terminated: bool
    digest: str | None = None        # precomputed SHA-256 of an over-long line

    def sha256(self) -> str:
        return self.digest or hashlib.sha256(self.data or b"").hexdigest()


def _read_lines(f: BinaryIO) -> Iterator[_Line]:
    offset, no = 0, 0
    while chunk := f.readline(MAX_LINE + 1):
        no += 1
        if chunk.endswith(b"\n"):
            yield _Line(no, offset, chunk[:-1], len(chunk) - 1, True)
        elif len(chunk) <= MAX_LINE:
            yield _Line(no, offset, chunk, len(chunk), False)
        else:
            h, size, terminated = hashlib.sha256(chunk), len(chunk), False
            while more := f.readline(_BLOCK):
                terminated = more.endswith(b"\n")
                body = more[:-1] if terminated else more
                h.update(body)
                size += len(body)
                if terminated:
                    break
            yield _Line(no, offset, None, size, terminated, h.hexdigest())
            offset += size + terminated
            continue
        offset += len(chunk)


class _Verifier:
    def __init__(self, max_problems: int):
        self.max_problems = max_problems
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.dropped = 0
        self.records = 0
        self.seq, self.prev = 0, GENESIS
        self.pending: list[tuple[_Line, str]] = []  # bad lines since the last record

    def problem(self, msg: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(msg)
        else:
            self.dropped += 1

    def bad(self, ln: _Line, what: str) -> None:
        if not ln.terminated:
            what = (f"truncated last line ({ln.size} bytes, no newline): a write was "
                    f"interrupted (crash, full disk) or the file was cut; the record after seq "
                    f"{self.seq} is incomplete")
        self.pending.append((ln, f"line {ln.no}: {what}"))

    def line(self, ln: _Line) -> None:
        if ln.data is None:
            return self.bad(ln, f"longer than {MAX_LINE} bytes ({ln.size}): not an audit record")
        try:
            rec = json.loads(ln.data)
        except ValueError as e:
            return self.bad(ln, f"not valid JSON ({getattr(e, 'msg', e)})")
        err = format_error(rec)
        if err is not None:
            return self.bad(ln, f"not an audit record ({err})")
        self.record(ln, rec)

    def record(self, ln: _Line, rec: dict[str, Any]) -> None:
        self.records += 1
        seq, tag = rec["seq"], f"line {ln.no} (seq {rec['seq']})"
        hash_ok = record_hash(rec) == rec["hash"]
        self.settle(ln, rec, hash_ok)
        if not ln.terminated:
            self.notes.append(f"{tag}: no newline after the last record")
        if not hash_ok:
            self.problem(f"{tag}: hash mismatch: the record was changed after it was written")
        if rec["prev"] != self.prev:
            self.problem(f"{tag}: prev is not 0*64: records before it were removed"
                         if self.seq == 0 else
                         f"{tag}: prev does not match the hash of the record before it (seq "
                         f"{self.seq}): a record was deleted, inserted or moved")
        if seq != self.seq + 1:
            why = (f"records {self.seq + 1}..{seq - 1} are missing" if seq > self.seq + 1
                   else "out of order or repeated")
            self.problem(f"{tag}: seq {seq} follows seq {self.seq}: {why}")
        # Chain on the stored hash: an edited record is reported once, not on every later line.
        self.seq, self.prev = seq, rec["hash"]

    def settle(self, ln: _Line, rec: dict[str, Any], hash_ok: bool) -> None:
        """Report the bad lines before `rec`, unless rec is the writer's seal of a torn write."""
        if len(self.pending) == 1 and hash_ok and rec["action"] == RESUME_ACTION:
            torn, _ = self.pending[0]
            a = rec["args"]
            if (a.get("torn_offset"), a.get("torn_bytes"), a.get("torn_sha256")) == (
                    torn.offset, torn.size, torn.sha256()):
                self.notes.append(
                    f"line {torn.no}: incomplete record from an interrupted write ({torn.size} "
                    f"bytes), sealed at line {ln.no} (seq {rec['seq']}); the record is lost")
                self.pending.clear()
        for _, msg in self.pending:
            self.problem(msg)
        self.pending.clear()

    def result(self) -> VerifyResult:
        for _, msg in self.pending:
            self.problem(msg)
        problems = list(self.problems)
        if self.dropped:
            problems.append(f"... and {self.dropped} more problem(s)")
        return VerifyResult(ok=not problems, records=self.records, problems=problems,
                            notes=self.notes, last_seq=self.seq, head=self.prev)


def verify(path: Path, max_problems: int = 1000) -> VerifyResult:
    """Check every line of an audit file, streaming; raises OSError if it cannot be read."""
    v = _Verifier(max_problems)
    with open(path, "rb") as f:
        for ln in _read_lines(f):
            v.line(ln)
    return v.result()
