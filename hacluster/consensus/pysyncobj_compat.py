"""The one seam between hacluster and pysyncobj: its import, its hooks and every private used.

hacluster depends on pysyncobj 0.3.17 with open eyes (DESIGN.md §4): the safety it lacks
(lease, stickiness, pre-vote, graceful transfer; see raft.py) needs a few of its internals.
Every such access is a named method here, and nowhere else: raft.py states its rules in its
own words on top of `SyncObjSeam` and `HookedSyncObj`, and a pysyncobj upgrade is checked in
one place. tests/unit/test_pysyncobj_compat.py builds real SyncObjs on 127.0.0.1, exercises
every method below against the installed library, and checks `PRIVATES` against this file.

The privates, which seam method owns each, and why raft.py needs it (pysyncobj has no
public way to do any of this):

* `election_deadline()`, `set_election_deadline(t)`: SyncObj.__raftElectionDeadline
  (attribute). Pre-vote: pysyncobj has none, so holding its election back until a majority
  pre-voted means moving its timer forward; a passed pre-vote sets it to 0.
* `transfer_in_progress()`: SyncObj.__transferInProgress (attribute). A leader's
  timeout_now (graceful transfer) must start an election without pre-vote.
* `last_log()`: SyncObj.__getCurrentLogIndex and __getCurrentLogTerm (methods). Pre-vote
  requests carry, and answers apply, Raft's "log at least as up to date" check;
  caught_up() compares a peer's match index with our last index.
* `send(node, message)`: SyncObj.__transport (attribute). hc_prevote, hc_prevote_resp,
  hc_ping and hc_higher_term travel on pysyncobj's own authenticated connections.
* `step_down(term)`: SyncObj.__setCurrentTerm, __setState (methods) and __raftLeader
  (attribute). A leader told of a higher term by hc_higher_term becomes a follower, as Raft
  prescribes (pysyncobj never hears of that term: the member's vote requests are refused by
  stickiness, and pysyncobj ignores its lower-term heartbeats).
* `match_index()`: SyncObj.__raftMatchIndex (attribute). caught_up(): pysyncobj grants a
  leadership transfer only to a member with every entry, so the agent asks first.
* `raft_state()`: SyncObj.__raftState (attribute). view() reports the candidate role.
* `is_leader()`, `leader_address()`: SyncObj._isLeader, _getLeader (methods). Every rule
  asks whether we lead; view() names the leader.
* `tcp_silence(node)`: TCPTransport._connections (attribute), then the connection's public
  fileno(). Health verdicts (ha/verdicts.py) tell a dead server from a CPU-starved one by
  whether its kernel still acknowledges our Raft traffic (TCP_INFO), and pysyncobj keeps
  its sockets to itself.
* `source_of(node)`: TCPTransport._connections too, then our Connection's `source`. pysyncobj
  names a read-only node by a counter; the leader finds which non-voting member it is by the
  IP it connects from, to judge its silence as it judges a voter's (ha/leader.py).
* The hardened transport (transport.py, issue 15): `_HookedTransport` puts its Connection
  and Listener in place of pysyncobj's TcpConnection and TcpServer, which buffer frames of any
  length before authentication and close the listener for good on one failed accept().
  TCPTransport._createServer is overridden to build the Listener (reading conf, _selfNode and
  SyncObj._poller, and setting _server, which pysyncobj binds and unbinds);
  TCPTransport.addNode, public, is extended to replace the TcpConnection it made for a peer
  we dial, wired as pysyncobj wires its own (_onOutgoingConnected, _onMessageReceived,
  _onDisconnected into _connections); TCPTransport._onTick is extended to sweep handshake
  deadlines and idle connections and to keep the listener bound; the Listener hands accepted
  connections to TCPTransport._onNewIncomingConnection. `listener_up()` and
  `transport_stats()` read them back through SyncObj.__transport.
* `HookedSyncObj`: overrides SyncObj._onTick (Hooks.before_tick runs the pre-vote gate
  right before pysyncobj checks its election deadline) and TCPTransport._onMessageReceived
  and send, reading TCPTransport._syncObj (Hooks.on_message / on_send: stickiness, pre-vote
  messages, heartbeat send times for the lease).
* `HookedSyncObj(journal=...)`: pysyncobj.syncobj.createJournal (a module function, not a
  private; swapped for the duration of SyncObj.__init__, under a lock), so that SyncObj
  keeps its log in journal.DurableJournal instead of its sparse, never-flushed mmap; and
  `Hooks.after_tick`, registered with the public addOnTickCallback: the leader flushes the
  entries it just sent while its followers flush theirs.
* `resign()`: SyncObj.__setState (method) and __raftLeader (attribute). A leader whose disk
  fails becomes a follower in the same term, its vote kept (see step_down for the other).
* `hold_compaction(held)`: no private, SyncObj.conf's logCompaction* settings (read at every
  tick). On a full disk pysyncobj's dump cannot be written and it would retry every tick.
* `HookedSyncObj(replicated_attrs=...)`: SyncObj.__properies (attribute), the names
  pysyncobj leaves out of its full dump: every attribute that exists when its __init__ ends.
  The replicated state must exist before that (the tick thread starts inside __init__ and
  replays the journal into the replicated methods), so its names are taken off that list
  at the first tick: without it, a log compaction would drop the state from disk (I2).

The import repair: pysyncobj 0.3.17 (tcp_connection -> win_inet_pton) replaces
socket.inet_ntop with a Windows-only ctypes version on every OS; pyroute2 then fails to
decode any address in the same process. The real function is put back at once: pysyncobj
never needs the replacement on Linux. This module is therefore hacluster's only import of
pysyncobj.

Threading: pysyncobj runs the hooks, its callbacks and replicated methods on its own tick
thread. SyncObjSeam's readers (is_leader, term, raft_state, last_log, ...) read one field
each and may be called from any thread; match_index() copies a dict the tick thread owns
and may raise RuntimeError from another thread (caught_up() takes that as "not yet"). The
writers (set_election_deadline, step_down, send) belong to the tick thread: raft.py calls
them from the hooks or through call_soon.
"""

from __future__ import annotations

import functools
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

_inet_ntop = socket.inet_ntop

from pysyncobj import SyncObj, SyncObjConf, replicated  # noqa: E402
from pysyncobj import pickle as wire_pickle  # noqa: E402
from pysyncobj import syncobj as _syncobj_module  # noqa: E402
from pysyncobj.journal import Journal  # noqa: E402
from pysyncobj.node import Node  # noqa: E402
from pysyncobj.pipe_notifier import PipeNotifier  # noqa: E402
from pysyncobj.transport import TCPTransport  # noqa: E402

socket.inet_ntop = _inet_ntop

log = logging.getLogger("hacluster.raft")

from hacluster.consensus.connection import Connection  # noqa: E402
from hacluster.consensus.transport import LIMITS, Gate, Limits, Listener  # noqa: E402

__all__ = ["CANDIDATE", "FOLLOWER", "LEADER", "PRIVATES", "SUPPORTED_VERSION", "HookedSyncObj",
           "Hooks", "Journal", "Limits", "Node", "SyncObjConf", "SyncObjSeam", "replicated"]

# The version this seam was written and tested against; pyproject.toml pins the same.
SUPPORTED_VERSION = "0.3.17"

# pysyncobj's _RAFT_STATE values, as onStateChanged and raft_state() report them.
FOLLOWER, CANDIDATE, LEADER = 0, 1, 2

# Every private name this module relies on: (class, name, "attribute" | "method").
# The compat test checks each against the installed pysyncobj, and that this list names
# exactly the privates this file uses.
PRIVATES: tuple[tuple[str, str, str], ...] = (
    ("SyncObj", "_SyncObj__raftElectionDeadline", "attribute"),
    ("SyncObj", "_SyncObj__transferInProgress", "attribute"),
    ("SyncObj", "_SyncObj__getCurrentLogIndex", "method"),
    ("SyncObj", "_SyncObj__getCurrentLogTerm", "method"),
    ("SyncObj", "_SyncObj__transport", "attribute"),
    ("SyncObj", "_SyncObj__setCurrentTerm", "method"),
    ("SyncObj", "_SyncObj__raftLeader", "attribute"),
    ("SyncObj", "_SyncObj__setState", "method"),
    ("SyncObj", "_SyncObj__raftMatchIndex", "attribute"),
    ("SyncObj", "_SyncObj__raftState", "attribute"),
    ("SyncObj", "_isLeader", "method"),
    ("SyncObj", "_getLeader", "method"),
    ("SyncObj", "_onTick", "method"),
    ("SyncObj", "_SyncObj__properies", "attribute"),
    ("TCPTransport", "_onMessageReceived", "method"),
    ("TCPTransport", "_syncObj", "attribute"),
    ("TCPTransport", "_connections", "attribute"),
    ("TCPTransport", "_createServer", "method"),
    ("TCPTransport", "_server", "attribute"),
    ("TCPTransport", "_selfNode", "attribute"),
    ("TCPTransport", "_onNewIncomingConnection", "method"),
    ("TCPTransport", "_onOutgoingConnected", "method"),
    ("TCPTransport", "_onDisconnected", "method"),
    ("TCPTransport", "_onIncomingMessageReceived", "method"),
    ("SyncObj", "_applyCommand", "method"),
    ("TCPTransport", "_onTick", "method"),
    ("SyncObj", "_poller", "attribute"),
    ("SyncObj", "_SyncObj__newAppendEntriesTime", "attribute"),
    ("SyncObj", "_SyncObj__raftLog", "attribute"),
)

# struct tcp_info (linux/tcp.h): 8 one-byte fields, then 32-bit ones; tcpi_unacked is the
# 5th of those, tcpi_last_ack_recv (ms since the last ACK came in) the 13th.
_TCP_INFO = struct.Struct("=8B13I")
_UNACKED, _LAST_ACK_RECV = 8 + 4, 8 + 12


class Hooks(Protocol):
    """What HookedSyncObj calls, on pysyncobj's tick thread (raft.RaftNode implements it)."""

    def before_tick(self) -> None:
        """At the start of every tick, before pysyncobj checks its election deadline."""

    def on_message(self, node: Node, message: dict[str, Any], deliver: Callable[[], None]) -> None:
        """A Raft message arrived from node; call deliver() to let pysyncobj handle it.

        Replies pysyncobj sends while handling it go through on_send before deliver returns.
        """

    def on_send(self, message: dict[str, Any], node: Node | None = None) -> dict[str, Any] | None:
        """The message to send to `node` instead of `message`, or None to drop it."""

    def after_tick(self) -> None:
        """Optional: after pysyncobj handled new commands and sent them, before it waits."""

    def poll_wait(self, default: float) -> float:
        """Optional: how long this tick may wait for the network (pysyncobj: autoTickPeriod)."""

    def quiet_wait(self) -> float | None:
        """Optional: this wake-up only polls again, for this long (None: a full tick). quiet.py."""

    def stir(self) -> None:
        """Optional, any thread: the next wake-up must be a full tick."""


def _nothing() -> None:
    pass


class _HookedTransport(TCPTransport):
    """TCPTransport that shows every dict message (pysyncobj's Raft traffic) to the hooks, on
    the hardened connections and listener of transport.py."""

    def __init__(self, syncObj: SyncObj, selfNode: Node | None, otherNodes: Any) -> None:  # noqa: N803
        # Before TCPTransport.__init__: it creates the connections to peers and the server.
        self._hc_gate = Gate(getattr(syncObj, "_hc_limits", LIMITS))
        syncObj._hc_gate = self._hc_gate  # type: ignore[attr-defined]  # HookedSyncObj flushes it
        self._hc_listener: Listener | None = None
        super().__init__(syncObj, selfNode, otherNodes)

    def make_connection(self, sock: socket.socket | None = None, source: str | None = None) -> Connection:
        conf = self._syncObj.conf
        return Connection(self._syncObj._poller, wire_pickle, self._hc_gate, sock=sock, source=source,
                          timeout=conf.connectionTimeout, send_buffer=conf.sendBufferSize,
                          recv_buffer=conf.recvBufferSize, keepalive=conf.tcp_keepalive)

    def _createServer(self) -> None:  # noqa: N802 (pysyncobj API)
        """pysyncobj's choice of address (bindAddress, else the wildcard of our own), our Listener."""
        conf = self._syncObj.conf
        host, port = (conf.bindAddress or self._selfNode.address).rsplit(":", 1)
        if conf.bindAddress is None:
            host = "::" if ":" in host else "0.0.0.0"
        self._hc_listener = Listener(self._syncObj._poller, host.strip("[]"), int(port),
                                     self._onNewIncomingConnection, self.make_connection, self._hc_gate,
                                     send_buffer=conf.sendBufferSize, recv_buffer=conf.recvBufferSize)
        self._server = self._hc_listener

    def addNode(self, node: Node) -> None:  # noqa: N802 (pysyncobj API)
        """pysyncobj's, then our Connection in place of the TcpConnection it made for a peer we
        dial (a fresh, never connected one), wired as pysyncobj wires its own."""
        super().addNode(node)
        plain = self._connections.get(node)
        if plain is None or isinstance(plain, Connection):
            return
        conn = self.make_connection()
        conn.encryptor = self._syncObj.encryptor
        conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
        self._connections[node] = conn

    def stir(self) -> None:
        getattr(self._syncObj, "_hc_stir", _nothing)()

    # A connection opened, identified or lost: the next wake-up is a full tick (quiet.py).
    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802 (pysyncobj API)
        self.stir()
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:  # noqa: N802 (pysyncobj API)
        self.stir()
        super()._onIncomingMessageReceived(conn, message)

    def _onOutgoingConnected(self, conn: Any) -> None:  # noqa: N802 (pysyncobj API)
        self.stir()
        super()._onOutgoingConnected(conn)

    def _onDisconnected(self, conn: Any) -> None:  # noqa: N802 (pysyncobj API)
        self.stir()
        super()._onDisconnected(conn)

    def _onTick(self) -> None:  # noqa: N802 (pysyncobj API)
        super()._onTick()
        self._hc_gate.sweep()
        if self._hc_listener is not None:
            self._hc_listener.maintain()

    def _onMessageReceived(self, node: Node, message: Any) -> None:  # noqa: N802 (pysyncobj API)
        if not isinstance(message, dict):
            self.stir()
            super()._onMessageReceived(node, message)
            return
        hooks: Hooks | None = getattr(self._syncObj, "_hc", None)
        if hooks is None:  # not wired yet: nothing may reach Raft unchecked
            return
        handle = super()._onMessageReceived
        hooks.on_message(node, message, lambda: handle(node, message))

    def send(self, node: Node, message: Any) -> bool:
        hooks: Hooks | None = getattr(self._syncObj, "_hc", None)
        if hooks is not None and isinstance(message, dict):
            changed = hooks.on_send(message, node)
            if changed is None:
                return False
            message = changed
        return super().send(node, message)


class HookedSyncObj(SyncObj):
    """A SyncObj whose tick and transport call `hooks`, and whose replicated state is dumped.

    It declares no replicated method: pysyncobj numbers commands by the sorted names of the
    replicated methods of the final class, which its subclass alone defines.

    `replicated_attrs` names the subclass's attributes that hold the replicated state. The
    subclass sets them before calling this __init__: pysyncobj's tick thread starts inside
    SyncObj.__init__ and may at once replay the journal into the replicated methods (set
    after it, as pysyncobj's examples do, a replay could find no state, and a late
    assignment could overwrite the state a first tick loaded from the dump). Yet pysyncobj
    writes to its full dump (log compaction, install snapshot) only the attributes created
    after its __init__, so these names are taken off its list of own properties at the
    first tick: on the tick thread, before pysyncobj can write any dump (right after
    __init__ returns, the tick thread is already running). A dump then carries them,
    pickled, and loading one sets them, replacing the objects.
    """

    def __init__(self, hooks: Hooks, self_addr: str | None, others: list[str], conf: SyncObjConf,
                 replicated_attrs: tuple[str, ...] = (), limits: Limits = LIMITS,
                 journal: Journal | None = None):
        missing = [name for name in replicated_attrs if name not in vars(self)]
        if missing:
            raise ValueError(f"replicated state {missing} must be set before HookedSyncObj.__init__")
        # Set before SyncObj.__init__: its transport and tick thread start inside it, and
        # pysyncobj leaves attributes that exist by then out of its full dumps (the hooks
        # must stay out: they are no replicated state and do not pickle).
        self._hc = hooks
        # the optional hooks, looked up once (the tick calls them on every wake-up)
        self._hc_quiet_wait: Callable[[], float | None] | None = getattr(hooks, "quiet_wait", None)
        self._hc_poll_wait: Callable[[float], float] | None = getattr(hooks, "poll_wait", None)
        self._hc_stir: Callable[[], None] = getattr(hooks, "stir", None) or _nothing
        self._hc_replicated_attrs = replicated_attrs
        self._hc_limits = limits  # the transport's (transport.Limits)
        if journal is None:
            super().__init__(self_addr, others, conf, transportClass=_HookedTransport)
        else:  # SyncObj.__init__ creates its log through the module's createJournal
            with _JOURNAL_SWAP:
                _syncobj_module.createJournal = lambda _path: journal
                try:
                    super().__init__(self_addr, others, conf, transportClass=_HookedTransport)
                finally:
                    _syncobj_module.createJournal = _create_journal
        # The sends of pysyncobj's tick go out together before the journal flush (the
        # followers write while the leader flushes), then the hooks' after_tick.
        self.addOnTickCallback(self._hc_gate.flush)
        # SyncObjSeam.wake ends the tick's poll through this pipe. Made here, once: a tick
        # that made it could meet a process out of descriptors, and fail every tick after
        # (pysyncobj's poller takes a registration while it polls: epoll_ctl is thread-safe).
        try:
            self._hc_gate.notifier = PipeNotifier(self._poller)
        except OSError as e:  # without it the tick still polls, at most Hooks.poll_wait
            log.warning("raft: no wake-up pipe (%s): the tick thread polls at its cap", e)
        after = getattr(hooks, "after_tick", None)
        if after is not None:
            self.addOnTickCallback(after)

    def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802,N803 (pysyncobj API)
        if self._hc_replicated_attrs:  # the first tick: no dump loaded or written yet
            self._SyncObj__properies.difference_update(self._hc_replicated_attrs)  # type: ignore[attr-defined]
            self._hc_replicated_attrs = ()
        wait = None if self._hc_quiet_wait is None else self._hc_quiet_wait()
        if wait is not None:  # a quiet wake-up (quiet.py): the replies, then poll again
            self._hc_gate.flush()
            self._poller.poll(wait)
            return
        self._hc.before_tick()
        self._hc_gate.flush()  # the replies to the last poll's messages and the held acks
        poll_wait = self._hc_poll_wait
        super()._onTick(timeToWait if poll_wait is None else poll_wait(timeToWait))

    def _applyCommand(self, command: Any, callback: Any, commandType: Any = None) -> None:  # noqa: N802,N803
        """pysyncobj's (any thread): the tick that takes the command must be a full one."""
        self._hc_stir()
        super()._applyCommand(command, callback, commandType)


_create_journal = _syncobj_module.createJournal
_JOURNAL_SWAP = threading.Lock()  # two SyncObjs built at once must each get their own journal

S = TypeVar("S", bound=SyncObj)


class SyncObjSeam(Generic[S]):
    """Everything hacluster asks of a running SyncObj, by name: public calls and privates.

    `obj` is the SyncObj itself, for the replicated methods and attributes its subclass
    declares (pysyncobj's own are reached only through the methods below).
    """

    def __init__(self, obj: S) -> None:
        self.obj = obj

    # ------------------------------------------------------------ public pysyncobj API

    @property
    def term(self) -> int:
        return self.obj.raftCurrentTerm

    @property
    def commit_index(self) -> int:
        return self.obj.raftCommitIndex

    @property
    def last_applied(self) -> int:
        return self.obj.raftLastApplied

    def other_nodes(self) -> set[Node]:
        """The voting peers (a copy)."""
        return self.obj.otherNodes

    def is_connected(self, node: Node) -> bool:
        return self.obj.isNodeConnected(node)

    def readonly_count(self) -> int:
        """How many non-voting (read-only) members are connected to us (public readonlyNodes)."""
        return len(self.obj.readonlyNodes)

    def readonly_nodes(self) -> set[Node]:
        """The non-voting members connected to us (a copy). pysyncobj names each by a counter
        ("0", "1", ...), not by address: source_of() tells where one connects from."""
        return self.obj.readonlyNodes

    def source_of(self, node: Node) -> str | None:
        """The remote IP of the connection `node` reached us on (a read-only node dials us),
        None for one we dialled or without a connection."""
        conn = self.obj._SyncObj__transport._connections.get(node)  # type: ignore[attr-defined]
        return getattr(conn, "source", None)

    def add_voter(self, address: str, callback: Callable[[Any, int], None]) -> None:
        """Leader: append the Raft membership entry that adds `address` as a voter (public
        addNodeToCluster; pysyncobj takes one change at a time and applies it when appended,
        Raft's single-server change). callback(_, err) on the tick thread, err 0 = committed."""
        self.obj.addNodeToCluster(address, callback=callback)

    def remove_voter(self, address: str, callback: Callable[[Any, int], None]) -> None:
        """Leader: the membership entry that removes voter `address` (removeNodeFromCluster)."""
        self.obj.removeNodeFromCluster(address, callback=callback)

    def transfer_leadership(self, address: str | None, callback: Callable[[Any, int], None]) -> None:
        """Leader only: send timeout_now to `address` (or the best follower); callback(_, err)."""
        self.obj.transferLeadership(address, callback=callback)

    def destroy(self) -> None:
        self.obj.destroy()

    def hold_compaction(self, held: bool) -> None:
        """While held, pysyncobj starts no log compaction (through its public conf, read at
        every tick). On a full disk its full dump cannot be written, and it would try again
        at every tick (logging a WARNING each time: 50 a second) once one is due."""
        conf = self.obj.conf
        if held and not hasattr(self, "_hc_compaction"):
            self._hc_compaction = (conf.logCompactionMinEntries, conf.logCompactionMinTime)
            conf.logCompactionMinEntries, conf.logCompactionMinTime = 2**62, float("inf")
        elif not held and hasattr(self, "_hc_compaction"):
            conf.logCompactionMinEntries, conf.logCompactionMinTime = self._hc_compaction
            del self._hc_compaction

    def tcp_silence(self, node: Node) -> float | None:
        """Seconds that data we sent `node` on our Raft connection has waited for an ACK from
        its kernel (TCP_INFO: since the last ACK, while bytes are in flight; 0.0 with none
        in flight), or None without a connected socket. The peer's kernel acks even while its
        processes get no CPU; a powered-off or cut-off server's does not. Tick thread only:
        pysyncobj's thread closes its sockets, so no other may borrow their descriptors."""
        conn = self.obj._SyncObj__transport._connections.get(node)  # type: ignore[attr-defined]
        fd = conn.fileno() if conn is not None else None
        if fd is None or fd < 0:
            return None
        try:
            sock = socket.socket(fileno=fd)  # borrowed, never closed here: detached below
        except OSError:
            return None
        try:
            info = _TCP_INFO.unpack_from(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                                        _TCP_INFO.size))
        except (OSError, struct.error):
            return None
        finally:
            sock.detach()
        return info[_LAST_ACK_RECV] / 1000 if info[_UNACKED] else 0.0

    def listener_up(self) -> bool:
        """Whether our Raft port is bound and listening (any thread: one field)."""
        listener = self.obj._SyncObj__transport._hc_listener  # type: ignore[attr-defined]
        return listener is not None and listener.up

    def transport_stats(self) -> dict[str, int]:
        """The transport's counters (transport.Stats): refusals, timeouts, accept errors."""
        return self.obj._SyncObj__transport._hc_gate.stats.as_dict()  # type: ignore[attr-defined]

    # ------------------------------------------------------------ readers of privates

    def is_leader(self) -> bool:
        return self.obj._isLeader()

    def leader_address(self) -> str | None:
        """The address ("host:port") of the last leader heard of, None if none."""
        return getattr(self.obj._getLeader(), "address", None)

    def raft_state(self) -> int:
        """FOLLOWER, CANDIDATE or LEADER."""
        return self.obj._SyncObj__raftState  # type: ignore[attr-defined]

    def election_deadline(self) -> float:
        """When pysyncobj starts an election if no leader is heard (on hacluster.clock.now)."""
        return self.obj._SyncObj__raftElectionDeadline  # type: ignore[attr-defined]

    def transfer_in_progress(self) -> bool:
        """A leader's timeout_now reached us: the next election is a leadership transfer."""
        return self.obj._SyncObj__transferInProgress  # type: ignore[attr-defined]

    def quiet_mark(self) -> tuple[Any, ...] | None:
        """(term, role, leader, commit index) when every entry of our log is committed and
        applied, else None: what a quiet wake-up must find unchanged (quiet.py)."""
        o = self.obj
        commit = o.raftCommitIndex
        log_ = o._SyncObj__raftLog  # type: ignore[attr-defined]
        if commit != o.raftLastApplied or not len(log_) or commit != log_[-1][1]:
            return None
        return (o.raftCurrentTerm, o._SyncObj__raftState, o._SyncObj__raftLeader, commit)  # type: ignore[attr-defined]

    def last_log(self) -> tuple[int, int]:
        """(index, term) of the last entry of our log."""
        return (self.obj._SyncObj__getCurrentLogIndex(),  # type: ignore[attr-defined]
                self.obj._SyncObj__getCurrentLogTerm())  # type: ignore[attr-defined]

    def skip_held_entries(self, message: dict[str, Any]) -> int:
        """Follower, tick thread: drop from an append_entries the leading entries our log
        already holds with the same term, and move prevLogIdx/prevLogTerm to the last one
        dropped, when our log ends within the sent ones. Returns how many were dropped.

        pysyncobj truncates everything after prevLogIdx and appends what came: a batch sent
        again while our ack was on its way (the leader resends from its nextIndex every
        heartbeat) was deleted and written again, fsynced again, and logged CRITICAL
        "truncating already-applied log entries ... may have diverged" once applied (seen at
        every size by bench/scale.py). Raft deletes only from a conflict. When our log goes
        beyond the sent entries, pysyncobj's way stays (those extra entries may conflict)."""
        entries = message.get("entries")
        if not entries or "transmission" in message:
            return 0
        last = self.obj._SyncObj__getCurrentLogIndex()  # type: ignore[attr-defined]
        if last > entries[-1][1]:
            return 0
        held = self.obj._SyncObj__raftLog  # type: ignore[attr-defined]
        if not len(held):
            return 0
        first = held[0][1]
        n = 0
        for _command, index, term in entries:
            if not first <= index <= last or held[index - first][2] != term:
                break
            n += 1
        if n:
            message["prevLogIdx"], message["prevLogTerm"] = entries[n - 1][1], entries[n - 1][2]
            message["entries"] = entries[n:]
        return n

    def match_index(self) -> dict[str, int]:
        """Leader: the highest log index known replicated on each peer, by address.

        Tick thread's data: from another thread this may raise RuntimeError when pysyncobj
        changes it meanwhile.
        """
        match = self.obj._SyncObj__raftMatchIndex  # type: ignore[attr-defined]
        return {getattr(node, "address", None): index for node, index in dict(match).items()}

    # ------------------------------------------------------------ writers (tick thread)

    def next_heartbeat_at(self) -> float:
        """Leader: when pysyncobj sends its next append_entries (on hacluster.clock.now)."""
        return self.obj._SyncObj__newAppendEntriesTime  # type: ignore[attr-defined]

    def wake(self) -> None:
        """End the tick thread's poll now (any thread), through our pipe in its poller."""
        notifier = self.obj._hc_gate.notifier  # type: ignore[attr-defined]
        if notifier is not None:
            try:
                notifier.notify()
            except BlockingIOError:  # the pipe is full: the poll ends anyway
                pass

    def set_election_deadline(self, deadline: float) -> None:
        """Move the election timer: later holds an election back, 0 lets it start at once."""
        self.obj._SyncObj__raftElectionDeadline = deadline  # type: ignore[attr-defined]

    def send(self, node: Node, message: dict[str, Any]) -> None:
        """Send one of our own messages to a peer over pysyncobj's (authenticated) transport."""
        self.obj._SyncObj__transport.send(node, message)  # type: ignore[attr-defined]

    def resign(self) -> None:
        """Become a follower in the same term, keeping the vote cast in it (a second vote in
        the term could elect a second leader), as pysyncobj's own leaderFallbackTimeout does;
        onStateChanged fires. The next leader is elected in a later term."""
        self.obj._SyncObj__raftLeader = None  # type: ignore[attr-defined]
        self.obj._SyncObj__setState(FOLLOWER)  # type: ignore[attr-defined]

    def step_down(self, term: int) -> None:
        """Become a follower at `term`, with no vote cast and no leader known, as Raft
        prescribes for a leader that learns of a higher term; onStateChanged fires."""
        self.obj._SyncObj__setCurrentTerm(term, None)  # type: ignore[attr-defined]
        self.obj._SyncObj__raftLeader = None  # type: ignore[attr-defined]
        self.obj._SyncObj__setState(FOLLOWER)  # type: ignore[attr-defined]
