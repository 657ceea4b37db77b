"""The pysyncobj seam against the *installed* pysyncobj.

Fails when a name the seam relies on disappears or changes kind (attribute vs method), when
the installed version is not the pinned one, or when a seam method no longer does what
raft.py expects of it. Real SyncObjs on 127.0.0.1 with a password, ticked by hand
(autoTick=False) so that every read below happens between two ticks of pysyncobj's own
code; every wait is for a condition, with a deadline; every SyncObj is destroyed.
"""

from __future__ import annotations

import ast
import gzip
import importlib.metadata
import inspect
import pickle
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hacluster import clock
from hacluster.consensus import pysyncobj_compat as compat
from hacluster.consensus.pysyncobj_compat import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    HookedSyncObj,
    Journal,
    Node,
    SyncObjConf,
    SyncObjSeam,
    replicated,
)
from tests.support.net import LO, free_tcp_ports

ROOT = Path(__file__).resolve().parents[2]
SECRET = "compat-test-secret"
MAX_TIMEOUT = 0.3  # raftMaxTimeout of the SyncObjs built here


def _mangled(name: str) -> str:
    """pysyncobj's private `__name` as Python stores it (spelt here, not written out)."""
    return f"_{compat.SyncObj.__name__}__{name}"


class Recorder:
    """Hooks that record what passes; our own `hc_*` messages are consumed, as raft.py does."""

    def __init__(self) -> None:
        self.ticks = 0
        self.received: list[dict[str, Any]] = []
        self.sent_types: list[str] = []
        self.sent_to: list[tuple[Any, Any]] = []  # (type, node) of each message
        self.events: list[str] = []  # sends (type, "+" with entries) and after_tick, in order
        self.drop: set[str] = set()

    def before_tick(self) -> None:
        self.ticks += 1

    def on_message(self, node, message: dict[str, Any], deliver: Callable[[], None]) -> None:
        self.received.append(message)
        if not str(message.get("type")).startswith("hc_"):
            deliver()

    def on_send(self, message: dict[str, Any], node: Any = None) -> dict[str, Any] | None:
        self.sent_types.append(message.get("type"))
        self.sent_to.append((message.get("type"), node))
        self.events.append(f"{message.get('type')}{'+' if message.get('entries') else ''}")
        if message.get("type") in self.drop:
            return None
        return {**message, "hc_seen": True}

    def after_tick(self) -> None:
        self.events.append("after_tick")


class Counter(HookedSyncObj):
    def __init__(self, hooks: Recorder, addr: str, others: list[str], conf: SyncObjConf,
                 journal: Journal | None = None) -> None:
        self.total = 0
        super().__init__(hooks, addr, others, conf, replicated_attrs=("total",), journal=journal)

    @replicated
    def add(self, n: int) -> int:
        self.total += n
        return self.total


class Member:
    """A Counter on `addr`; with `data`, its journal and full dump are files in that dir."""

    def __init__(self, addr: str, others: list[str], data: Path | None = None,
                 journal: Journal | None = None) -> None:
        self.addr = addr
        self.others = others
        self.data = data
        self.journal = journal
        self.hooks = Recorder()
        self.states: list[tuple[int, int]] = []
        self.created_at = clock.now()
        self.seam: SyncObjSeam[Counter] = self._start()

    def _start(self) -> SyncObjSeam[Counter]:
        files = {} if self.data is None else {"journalFile": str(self.data / "journal"),
                                              "fullDumpFile": str(self.data / "dump")}
        conf = SyncObjConf(password=SECRET, autoTick=False, appendEntriesPeriod=0.02,
                           raftMinTimeout=0.15, raftMaxTimeout=MAX_TIMEOUT,
                           connectionRetryTime=0.05, dynamicMembershipChange=False,
                           onStateChanged=lambda old, new: self.states.append((old, new)),
                           **files)
        return SyncObjSeam(Counter(self.hooks, self.addr, self.others, conf, self.journal))

    def restart(self) -> None:
        """As a process restart would: a new SyncObj on the same address and files."""
        self.seam.destroy()  # without autoTick, closes the port and the files before returning
        self.seam = self._start()


def tick_until(members: list[Member], cond: Callable[[], bool], what: str,
               timeout: float = 30.0) -> None:
    """Tick each member in turn until cond() holds after some tick; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            m.seam.obj.doTick(0.002)
            if cond():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def members() -> Iterator[Callable[..., list[Member]]]:
    made: list[Member] = []

    def build(n: int, data: Path | None = None, journal: type[Journal] | None = None) -> list[Member]:
        addrs = [f"{LO}:{p}" for p in free_tcp_ports(n)]
        for i, addr in enumerate(addrs):
            files = None
            if data is not None:
                files = data / f"m{i}"
                files.mkdir()
            made.append(Member(addr, [a for a in addrs if a != addr], files,
                               journal() if journal else None))
        return made[-n:]

    yield build
    for m in made:
        m.seam.destroy()


# ---------------------------------------------------------------- the library itself

def test_the_installed_pysyncobj_is_the_pinned_one():
    pins = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            if d.startswith("pysyncobj")]
    assert pins == [f"pysyncobj=={compat.SUPPORTED_VERSION}"]
    assert importlib.metadata.version("pysyncobj") == compat.SUPPORTED_VERSION
    from pysyncobj.version import VERSION
    assert VERSION == compat.SUPPORTED_VERSION


def test_pysyncobj_keeps_its_timers_on_the_lease_clock():
    from pysyncobj import syncobj
    before = clock.now()
    theirs = syncobj.monotonicTime()
    after = clock.now()
    assert before <= theirs <= after


def test_every_private_the_seam_relies_on_exists_with_its_kind(members):
    (m,) = members(1)
    obj = m.seam.obj
    owners = {"SyncObj": obj, "TCPTransport": getattr(obj, _mangled("transport"))}
    classes = {"SyncObj": compat.SyncObj, "TCPTransport": compat.TCPTransport}
    for cls, name, kind in compat.PRIVATES:
        owner = owners[cls]
        assert isinstance(owner, classes[cls])
        if kind == "method":
            assert inspect.isfunction(getattr(classes[cls], name, None)), f"{cls}.{name} is no method"
        else:
            assert name in vars(owner), f"{cls}.{name} is no instance attribute"
            assert not callable(vars(owner)[name]), f"{cls}.{name} became callable"


def test_privates_names_exactly_what_the_seam_module_touches():
    tree = ast.parse(Path(compat.__file__).read_text())
    touched = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
               and n.attr.startswith("_") and not n.attr.endswith("__")
               and not n.attr.startswith("_hc")}  # our own attributes on pysyncobj's objects
    overridden = {f.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                  for f in c.body if isinstance(f, ast.FunctionDef) and f.name.startswith("_")
                  and not f.name.endswith("__")}
    assert touched | overridden == {name for _, name, _ in compat.PRIVATES}


def test_no_other_module_reaches_pysyncobj_privates():
    prefix = _mangled("")
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "*.py"], capture_output=True,
                             text=True, check=True).stdout.split()  # not build/ nor .venv/
    found = sorted(p for p in tracked if prefix in (ROOT / p).read_text(errors="replace"))
    assert found == ["hacluster/consensus/pysyncobj_compat.py"]


# ---------------------------------------------------------------- one member

def test_election_deadline_holds_elections_back_and_zero_lets_one_start(members):
    (m,) = members(1)
    s = m.seam
    assert s.raft_state() == FOLLOWER and not s.is_leader() and s.leader_address() is None
    assert s.other_nodes() == set()
    # pysyncobj set it on the lease clock, one election timeout ahead
    assert m.created_at <= s.election_deadline() <= clock.now() + MAX_TIMEOUT
    s.set_election_deadline(clock.now() + 3600)
    held_until = clock.now() + 2 * MAX_TIMEOUT  # two election timeouts: no election
    while clock.now() < held_until:
        s.obj.doTick(0.01)
    assert s.raft_state() == FOLLOWER and s.term == 0 and m.hooks.ticks > 0
    s.set_election_deadline(0)
    tick_until([m], s.is_leader, "an election once the deadline is 0")
    assert s.raft_state() == LEADER and s.term == 1 and s.leader_address() == m.addr
    assert m.states == [(FOLLOWER, CANDIDATE), (CANDIDATE, LEADER)]


def test_last_log_follows_the_log_and_step_down_makes_a_follower(members):
    (m,) = members(1)
    s = m.seam
    assert s.last_log() == (1, 0)  # pysyncobj's initial no-op
    s.set_election_deadline(0)
    tick_until([m], s.is_leader, "leadership")
    assert s.last_log() == (2, 1)  # the new term's no-op
    results: list[tuple[Any, int]] = []
    s.obj.add(5, callback=lambda r, err: results.append((r, err)))
    tick_until([m], lambda: bool(results), "the command applied")
    assert results == [(5, 0)] and s.last_log() == (3, 1)
    assert s.commit_index == 3 and s.last_applied == 3

    s.step_down(4)
    assert not s.is_leader() and s.raft_state() == FOLLOWER
    assert s.term == 4 and s.leader_address() is None
    assert m.states[-1] == (LEADER, FOLLOWER)  # onStateChanged fired
    s.set_election_deadline(0)  # no vote was cast at term 4: it can elect itself again
    tick_until([m], s.is_leader, "re-election after stepping down")
    assert s.term == 5


def test_replicated_attrs_go_into_the_dump_and_come_back_from_it(members, tmp_path):
    (m,) = members(1, tmp_path)
    s = m.seam
    s.set_election_deadline(0)
    tick_until([m], s.is_leader, "leadership")
    results: list[int] = []
    s.obj.add(5, callback=lambda r, err: results.append(err))
    tick_until([m], lambda: bool(results), "the command applied")
    assert results == [0] and s.last_applied == 3
    s.obj.forceLogCompaction()
    tick_until([m], lambda: s.obj.getStatus()["log_len"] == 2, "the log compacted into a dump")
    # pysyncobj's dump: (its attributes to restore, the last two entries, the cluster). Ours
    # are there, and none of those set before SyncObj.__init__ (the hooks do not pickle).
    with gzip.open(m.data / "dump") as f:
        attributes = pickle.load(f)[0]
    assert attributes == {"total": 5, _mangled("enabledCodeVersion"): 0}

    m.restart()
    assert m.seam.obj.total == 0  # pysyncobj loads its dump at the first tick, not in __init__
    tick_until([m], lambda: m.seam.last_applied == 3, "the dump loaded")
    assert m.seam.obj.total == 5


def test_resign_makes_a_follower_in_the_same_term_with_its_vote_kept(members):
    (m,) = members(1)
    s = m.seam
    s.set_election_deadline(0)
    tick_until([m], s.is_leader, "leadership")
    term = s.term
    s.resign()
    assert not s.is_leader() and s.raft_state() == FOLLOWER and s.leader_address() is None
    assert m.states[-1] == (LEADER, FOLLOWER)  # onStateChanged fired
    # the same term, and the vote cast in it (for itself) kept: no second vote in this term
    assert s.term == term and getattr(s.obj, _mangled("votedForNodeId")) == m.addr


def test_hold_compaction_keeps_pysyncobj_from_writing_a_dump_until_released(members, tmp_path):
    (m,) = members(1, tmp_path)
    s = m.seam
    s.obj.conf.logCompactionMinEntries = 2  # compact as soon as there are entries to
    s.set_election_deadline(0)
    tick_until([m], s.is_leader, "leadership")
    s.hold_compaction(True)
    done: list[int] = []
    for i in range(5):
        s.obj.add(i, callback=lambda r, err: done.append(err))
    tick_until([m], lambda: len(done) == 5, "the commands applied")
    for _ in range(50):
        s.obj.doTick(0.002)
    assert not (m.data / "dump").exists() and s.obj.getStatus()["log_len"] > 2
    s.hold_compaction(False)
    assert s.obj.conf.logCompactionMinEntries == 2  # as it was
    tick_until([m], lambda: (m.data / "dump").exists(), "the dump written once released")


class ListJournal(Journal):
    """A journal in a list that remembers which indexes pysyncobj added."""

    def __init__(self) -> None:
        from pysyncobj.journal import MemoryJournal
        self.inner = MemoryJournal()
        self.added: list[int] = []

    def add(self, command, idx, term):
        self.added.append(idx)
        self.inner.add(command, idx, term)

    def __getattribute__(self, name: str) -> Any:  # everything else: the memory journal's
        if name in ("inner", "added", "add"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    def __getitem__(self, item):
        return self.inner[item]

    def __len__(self) -> int:
        return len(self.inner)


def test_a_journal_handed_over_is_the_one_pysyncobj_keeps_its_log_in(members):
    from pysyncobj import syncobj
    stock = syncobj.createJournal
    (m,) = members(1, journal=ListJournal)
    assert isinstance(m.journal, ListJournal) and m.journal.added == [1]  # pysyncobj's first no-op
    assert syncobj.createJournal is stock  # swapped for SyncObj.__init__ only
    m.seam.set_election_deadline(0)
    tick_until([m], m.seam.is_leader, "leadership")
    done: list[int] = []
    m.seam.obj.add(2, callback=lambda r, err: done.append(err))
    tick_until([m], lambda: bool(done), "the command applied")
    assert m.journal.added == [1, 2, 3]  # the term's no-op, then the command


def test_after_tick_runs_once_new_commands_went_out_before_the_wait(members):
    """The leader's flush runs there: while its followers write the same entries."""
    a, b = members(2)
    _elect_first(a, b)
    a.seam.obj.add(1)
    for _ in range(100):  # this conf batches appends: they go out at a tick soon after
        a.hooks.events.clear()
        a.seam.obj.doTick(0.005)
        if "append_entries+" in a.hooks.events:
            break
    events = a.hooks.events
    assert "append_entries+" in events, events
    assert events.index("append_entries+") < events.index("after_tick")  # in the same tick


def test_replicated_attrs_must_exist_before_pysyncobj_starts():
    class Forgetful(HookedSyncObj):
        def __init__(self, conf: SyncObjConf) -> None:
            super().__init__(Recorder(), f"{LO}:{free_tcp_ports(1)[0]}", [], conf,
                             replicated_attrs=("total",))
            self.total = 0  # too late: the tick thread may already have replayed the journal

    with pytest.raises(ValueError, match="'total'.*must be set before"):
        Forgetful(SyncObjConf(password=SECRET, autoTick=False))


# ---------------------------------------------------------------- two members

def _elect_first(a: Member, b: Member) -> None:
    b.seam.set_election_deadline(clock.now() + 3600)
    a.seam.set_election_deadline(0)
    tick_until([a, b], lambda: a.seam.is_leader() and b.seam.leader_address() == a.addr,
               "a leads and b follows it")


def test_hooks_see_raft_traffic_and_send_reaches_the_peer(members):
    a, b = members(2)
    _elect_first(a, b)
    (node_b,) = a.seam.other_nodes()
    assert node_b.address == b.addr and a.seam.is_connected(node_b)
    assert {"request_vote", "append_entries"} <= set(a.hooks.sent_types)
    # what on_send returned is what went out, and b's pysyncobj was handed it
    heartbeats = [msg for msg in b.hooks.received if msg.get("type") == "append_entries"]
    assert heartbeats and all(msg.get("hc_seen") for msg in heartbeats)

    a.seam.send(node_b, {"type": "hc_hello", "n": 7})
    tick_until([a, b], lambda: any(msg.get("type") == "hc_hello" for msg in b.hooks.received),
               "our own message at the peer")
    assert [msg["n"] for msg in b.hooks.received if msg.get("type") == "hc_hello"] == [7]

    transport = getattr(a.seam.obj, _mangled("transport"))
    assert transport.send(node_b, {"type": "hc_hello", "n": 8}) is True
    a.hooks.drop = {"append_entries"}  # on_send's None: not sent at all
    assert transport.send(node_b, {"type": "append_entries", "term": a.seam.term}) is False
    assert a.hooks.sent_types[-1] == "append_entries"


def test_match_index_and_a_transfer_through_timeout_now(members):
    a, b = members(2)
    _elect_first(a, b)
    results: list[int] = []
    a.seam.obj.add(2, callback=lambda r, err: results.append(err))
    tick_until([a, b], lambda: b.seam.obj.total == 2 and
               a.seam.match_index().get(b.addr) == a.seam.last_log()[0], "b caught up")
    assert results == [0] and b.seam.last_log() == a.seam.last_log()

    done: list[int] = []
    a.seam.transfer_leadership(b.addr, lambda _, err: done.append(err))
    assert done == [0]  # timeout_now sent
    tick_until([a, b], b.seam.transfer_in_progress, "b hears timeout_now")
    tick_until([a, b], lambda: b.seam.raft_state() == CANDIDATE, "b stands for election")
    tick_until([a, b], lambda: b.seam.is_leader() and a.seam.leader_address() == b.addr,
               "b leads, a follows")
    assert not a.seam.is_leader() and not b.seam.transfer_in_progress()
    assert b.seam.term == a.seam.term == 2


def test_a_resent_batch_is_not_deleted_and_written_again(members, caplog):
    # pysyncobj deletes everything after prevLogIdx and appends what came; a batch resent
    # while the follower's ack was on its way was rewritten and, once applied, logged as
    # CRITICAL "truncating already-applied log entries" (bench/scale.py, at every size)
    a, b = members(2)
    _elect_first(a, b)
    results: list[int] = []
    for n in (1, 2, 3):
        a.seam.obj.add(n, callback=lambda r, err: results.append(err))
    tick_until([a, b], lambda: b.seam.obj.total == 6 and b.seam.last_applied == a.seam.last_log()[0],
               "b applied the three commands")
    held = getattr(b.seam.obj, _mangled("raftLog"))
    last, term = b.seam.last_log()
    batch = [tuple(e) for e in held[len(held) - 3:]]
    resent = {"type": "append_entries", "term": term, "commit_index": last, "entries": list(batch),
              "prevLogIdx": batch[0][1] - 1, "prevLogTerm": held[len(held) - 4][2]}
    assert b.seam.skip_held_entries(resent) == 3
    assert resent["entries"] == [] and (resent["prevLogIdx"], resent["prevLogTerm"]) == (last, term)
    (node_a,) = b.seam.other_nodes()
    with caplog.at_level("CRITICAL", logger="pysyncobj"):
        getattr(b.seam.obj, _mangled("onMessageReceived"))(node_a, resent)  # pysyncobj's handling
    assert not [r for r in caplog.records if "truncating" in r.getMessage()]
    assert b.seam.last_log() == (last, term) and b.seam.obj.total == 6
    # a conflicting entry (another term) and a follower whose log goes beyond: as before
    conflict = {**resent, "entries": [batch[0], (batch[1][0], batch[1][1], term + 1), batch[2]],
                "prevLogIdx": batch[0][1] - 1}
    assert b.seam.skip_held_entries(conflict) == 1 and conflict["entries"][0][2] == term + 1
    shorter = {**resent, "entries": batch[:2], "prevLogIdx": batch[0][1] - 1}
    assert b.seam.skip_held_entries(shorter) == 0 and shorter["entries"] == batch[:2]


def test_tcp_silence_reads_the_kernel_acks_of_a_peer_connection(members):
    a, b = members(2)
    _elect_first(a, b)
    (node_b,) = a.seam.other_nodes()
    tick_until([a, b], lambda: a.seam.tcp_silence(node_b) is not None, "a connected socket")
    for _ in range(20):  # both alive: whatever is in flight is acked within milliseconds
        for m in (a, b):
            m.seam.obj.doTick(0.005)
        assert a.seam.tcp_silence(node_b) < 0.5
    b.seam.destroy()  # its port closes: no connection, nothing to read
    tick_until([a], lambda: a.seam.tcp_silence(node_b) is None, "the connection gone")
    assert a.seam.tcp_silence(Node("127.0.0.1:1")) is None  # never a member


def test_a_read_only_node_is_told_by_the_ip_it_connects_from(members):
    a, b = members(2)
    _elect_first(a, b)
    ro = Member(None, [a.addr, b.addr])  # type: ignore[arg-type]  # None: pysyncobj's read-only node
    try:
        tick_until([a, b, ro], lambda: len(a.seam.readonly_nodes()) == 1, "the read-only node connected")
        (node,) = a.seam.readonly_nodes()
        assert getattr(node, "address", None) is None  # pysyncobj numbers it: "0"
        assert a.seam.source_of(node) == LO
        assert a.seam.source_of(Node(b.addr)) in (None, LO)  # a voter: by its address instead
        # on_send is told to whom: the leader's heartbeats to the read-only node name it
        tick_until([a, b, ro], lambda: any(t == "append_entries" and n == node for t, n in a.hooks.sent_to),
                   "a heartbeat to the read-only node, through on_send")
    finally:
        ro.seam.destroy()


# ---------------------------------------------------------------- the hardened transport

def test_the_transport_speaks_pysyncobjs_constants_and_replaces_its_classes(members):
    from pysyncobj.poller import POLL_EVENT_TYPE
    from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection

    from hacluster.consensus import transport
    from hacluster.consensus.connection import Connection

    assert (transport.READ, transport.WRITE, transport.ERROR) == \
        (POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE, POLL_EVENT_TYPE.ERROR)
    assert (transport.DISCONNECTED, transport.CONNECTING, transport.CONNECTED) == \
        (CONNECTION_STATE.DISCONNECTED, CONNECTION_STATE.CONNECTING, CONNECTION_STATE.CONNECTED)
    # what TCPTransport calls on a TcpConnection, Connection has
    wanted = {n for n in vars(TcpConnection) if not n.startswith("_")} - {"setSockoptKeepalive"}
    assert wanted <= set(dir(Connection))
    a, b = members(2)
    _elect_first(a, b)
    for m in (a, b):
        t = getattr(m.seam.obj, _mangled("transport"))
        assert isinstance(t._server, transport.Listener)
        assert t._connections and all(isinstance(c, Connection) for c in t._connections.values())
        assert m.seam.listener_up()
        stats = m.seam.transport_stats()
        assert stats["refused_frames"] == stats["bad_frames"] == stats["over_caps"] == 0


class Plain(compat.SyncObj):
    """pysyncobj as it comes: its own TCPTransport, TcpConnection and TcpServer."""

    def __init__(self, addr: str, others: list[str], conf: SyncObjConf) -> None:
        super().__init__(addr, others, conf)
        self.total = 0

    @replicated
    def add(self, n: int) -> int:
        self.total += n
        return self.total


@pytest.mark.parametrize("plain_dials", [True, False])
def test_the_hardened_transport_talks_with_pysyncobjs_own(plain_dials):
    """The wire format is pysyncobj's, byte for byte: a member still on pysyncobj's transport
    (a rolling upgrade) and one on ours elect, replicate and commit, whichever side dials
    (pysyncobj: the greater address)."""
    lo_addr, hi_addr = (f"{LO}:{p}" for p in sorted(free_tcp_ports(2)))
    plain_addr, ours_addr = (hi_addr, lo_addr) if plain_dials else (lo_addr, hi_addr)
    conf = dict(password=SECRET, autoTick=False, appendEntriesPeriod=0.02, raftMinTimeout=0.15,
                raftMaxTimeout=MAX_TIMEOUT, connectionRetryTime=0.05, dynamicMembershipChange=False)
    plain = Plain(plain_addr, [ours_addr], SyncObjConf(**conf))
    ours = Counter(Recorder(), ours_addr, [plain_addr], SyncObjConf(**conf))
    try:
        done: list[int] = []

        def tick_both(cond: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + 30
            while not cond():
                assert time.monotonic() < deadline, f"not within 30 s: {what}"
                plain.doTick(0.002)
                ours.doTick(0.002)

        tick_both(lambda: plain._getLeader() is not None and ours._getLeader() is not None, "a leader")
        plain.add(2, callback=lambda r, err: done.append(err))
        ours.add(3, callback=lambda r, err: done.append(err))
        tick_both(lambda: len(done) == 2 and plain.total == ours.total == 5, "both commands on both")
        assert done == [0, 0]
    finally:
        plain.destroy()
        ours.destroy()
