"""The Raft port's connections and listener, hardened (issue 15, findings 1 and 2; DESIGN.md §4).

pysyncobj 0.3.17's own TcpConnection and TcpServer, and why they are replaced here:

- A frame is a 4-byte length, then its body. pysyncobj buffers a body of any announced length
  (up to 2 GiB) before it has authenticated anything, in a `bytes` buffer that it copies on
  every read, and reads for as long as data arrives. One process streaming a bogus frame at
  the three Raft ports kept every member's single tick thread (elections, heartbeats,
  commits) reading for as long as the stream lasted: 12.9 s without any VIP holder.
- It times an idle connection out only when the socket has an event: a stranger that
  connects and stays silent, or drips a byte now and then, is kept for ever, and each holds
  a file descriptor.
- Its server closes the listening socket at the first accept() error other than EAGAIN
  (EMFILE after 58 idle connections under `ulimit -n 64`) and never binds again: the member
  stays out of the cluster until restarted.

Here instead (`Limits` holds the figures):

- A frame longer than `handshake_frame` before the connection is authenticated, or than
  `frame` after, or of a negative length, is refused as soon as its 4-byte length is in, and
  its connection closed; nothing of its body is buffered.
- Buffers are bytearrays: appending and consuming cost the bytes moved, not the buffer.
- At most `read_per_tick` bytes are read from one connection per tick (two handshake frames
  before authentication). The poller is level-triggered: what is left waits for the next
  tick, so no stream can hold the tick thread.
- A connection must authenticate within `handshake_s` of its accept (or connect), and one
  with nothing read for pysyncobj's connectionTimeout is closed. Both are checked at every
  tick (`Gate.sweep`), not only when the socket has an event.
- At most `unauthenticated` incoming connections may be unauthenticated at once, and
  `unauthenticated_per_source` from one address (loopback too: a process on a member's host
  is as much a stranger as any). One more closes the oldest stranger of its own address (or
  of the address with the most), never the newcomer: strangers that keep every slot taken
  cannot lock out a member, whose handshake takes one round trip. A connection closed before
  it authenticated is reset (SO_LINGER 0): it leaves conntrack's count, on which the Raft
  port guard's connection limit (dataplane/guard.py) relies, at once.
- The listener backs off and retries on EMFILE/ENFILE/ENOBUFS/ENOMEM (the connections wait
  in the kernel's backlog), skips the errors of one connection (ECONNABORTED and those
  accept(2) says to treat like EAGAIN), and after any other error, a poll error or a socket
  found no longer listening (checked every `verify_s`), closes and binds again every
  `rebind_s` until it can. `Listener.up` says whether it listens, for the agent's guard loop
  (daemon.py) and the metric hacluster_raft_listener_up.

"Authenticated": with a cluster secret (pysyncobj's `password`) every frame is a Fernet
token (AES and an HMAC under a key derived from the secret), and each side sends the other
a random key for the connection, which the other puts in every frame it sends after. A
connection counts as authenticated once a frame arrived that decrypted under the secret
*and* carried the key this side chose: the peer knows the secret and is not replaying a
captured frame. That is an incoming connection's second frame and an outgoing one's first.
Without a secret pysyncobj authenticates nothing (the agent refuses to run so); then a
connection we dialled counts as authenticated at once and an incoming one after its first
frame.

The wire format is pysyncobj's, byte for byte: a native-int length, then
zlib(pickle(message)), as a Fernet token stamped with pysyncobj's monotonic clock
(hacluster.clock) when there is a secret; `(key, message)` once the peer's key is known.

`Connection` (connection.py) and `Listener` have the methods pysyncobj's TCPTransport calls on a
TcpConnection and a TcpServer, under pysyncobj's camelCase names, and this module does not
import pysyncobj: pysyncobj_compat (the one seam) builds them with pysyncobj's poller and
pickle and puts them in place of its own. Everything here runs on pysyncobj's tick thread,
except reading `Listener.up` and `Stats`, which any thread may do.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hacluster import clock

if TYPE_CHECKING:
    from hacluster.consensus.connection import Connection

log = logging.getLogger("hacluster.raft.transport")

# pysyncobj's POLL_EVENT_TYPE and CONNECTION_STATE values (tests/unit/test_pysyncobj_compat.py
# checks them against the installed library).
READ, WRITE, ERROR = 1, 2, 4
DISCONNECTED, CONNECTING, CONNECTED = 0, 1, 2

LENGTH = struct.Struct("i")  # pysyncobj's frame length: a native, signed int
# accept(2): errors of one pending connection, to be treated like EAGAIN (try the next one)
_ONE_CONNECTION = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENOPROTOOPT,
                   errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP,
                   errno.ENETUNREACH, errno.ETIMEDOUT}
# out of descriptors or memory: wait for some to come back, keep the socket
_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
REPORT_S = 10.0  # at most one summary of refusals per this many seconds in the log


@dataclass(frozen=True)
class Limits:
    # pysyncobj's handshake frames (a random key; a member's address) are ~200 bytes encrypted
    handshake_frame: int = 4096
    # pysyncobj sends log entries and snapshots in batches of appendEntriesBatchSizeBytes and
    # logCompactionBatchSize (64 KiB by default; bigger entries are split): a frame is one
    # batch, pickled, compressed and base64-encoded. 16 MiB leaves room for tuning.
    frame: int = 16 << 20
    read_per_tick: int = 1 << 20  # bytes from one authenticated connection per tick
    handshake_s: float = 2.0  # pysyncobj's handshake is two round trips on a LAN
    unauthenticated: int = 32  # incoming connections still unauthenticated, in all
    unauthenticated_per_source: int = 4  # ... from one address (members dial each peer once)
    accepts_per_tick: int = 16
    backlog: int = 64  # pysyncobj listens with 5: a burst of strangers would crowd members out
    accept_backoff_s: tuple[float, float] = (0.05, 1.0)  # first pause after EMFILE, longest
    rebind_s: float = 1.0  # between attempts to bind a broken listener again
    verify_s: float = 1.0  # how often the listener checks that its socket still listens


LIMITS = Limits()


class Wire(Protocol):
    """pysyncobj's pickle module (pysyncobj.pickle): its dumps and loads."""

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class Poller(Protocol):
    """pysyncobj's poller: level-triggered; subscribe replaces an fd's callback and mask."""

    def subscribe(self, descr: int, callback: Callable[[int, int], None], eventMask: int) -> None: ...  # noqa: N803

    def unsubscribe(self, descr: int) -> None: ...


@dataclass
class Stats:
    """Counters since the transport started; read from any thread (whole ints)."""

    accepted: int = 0
    refused_frames: int = 0  # a length out of bounds: closed before any body was read
    bad_frames: int = 0  # did not decrypt or decode (wrong secret, replay, garbage)
    over_caps: int = 0  # strangers closed to make room for a newer one
    handshake_timeouts: int = 0
    idle_timeouts: int = 0
    accept_errors: int = 0
    accept_pauses: int = 0  # out of descriptors: the listener paused
    rebinds: int = 0  # the listener bound again after it broke

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Gate:
    """The connections of one transport: the caps on strangers, the deadlines, the counters.

    `strangers` are the incoming connections not yet authenticated, oldest first, with the
    address they came from.
    """

    def __init__(self, limits: Limits = LIMITS, now: Callable[[], float] = clock.now) -> None:
        self.limits = limits
        self.now = now
        self.stats = Stats()
        self._live: dict[Connection, None] = {}  # every open connection (an ordered set)
        self.strangers: dict[Connection, str] = {}
        self._corked: dict[Connection, None] = {}  # with messages queued since the last flush
        self.notifier: Any = None  # pysyncobj's PipeNotifier in the tick's poller (SyncObjSeam.wake)
        self._reported = Stats()
        self._report_at = now() + REPORT_S

    def admit(self, source: str) -> None:
        """Make room for one more stranger from `source`: close the oldest of its address when
        that address is at its cap, and the oldest of the address with the most when all are."""
        lim = self.limits
        mine = [c for c, s in self.strangers.items() if s == source]
        if len(mine) >= lim.unauthenticated_per_source:
            self._evict(mine[0])
        if len(self.strangers) >= lim.unauthenticated:
            counts = collections.Counter(self.strangers.values())
            most = max(counts.values())
            self._evict(next(c for c, s in self.strangers.items() if counts[s] == most))

    def _evict(self, conn: Connection) -> None:
        self.stats.over_caps += 1
        conn.disconnect()

    def opened(self, conn: Connection, source: str | None) -> None:
        """A connection is open; `source` for an incoming one (a stranger until authenticated)."""
        self._live[conn] = None
        if source is not None:
            self.strangers[conn] = source

    def authenticated(self, conn: Connection) -> None:
        self.strangers.pop(conn, None)

    def forget(self, conn: Connection) -> None:
        self._live.pop(conn, None)
        self.strangers.pop(conn, None)
        self._corked.pop(conn, None)

    def cork(self, conn: Connection) -> None:
        """`conn` queued a message: it goes out with the others of this stretch of the tick at
        the next flush()."""
        self._corked[conn] = None

    def flush(self) -> None:
        """Write what every connection queued since the last flush, one send() each. Called
        after our before_tick (the acks held for a journal flush, the replies to the messages of
        the last poll) and after pysyncobj's tick work, before it polls (its append_entries, one
        per command: one segment for a burst, so a follower reads them in one poll and acks them
        after one fdatasync)."""
        corked, self._corked = self._corked, {}
        for conn in corked:
            conn.flush()

    def sweep(self) -> None:
        """Close every connection past its handshake deadline or idle too long; every tick."""
        now = self.now()
        for conn in list(self._live):
            why = conn.expired(now)
            if why == "handshake":
                self.stats.handshake_timeouts += 1
            elif why == "idle":
                self.stats.idle_timeouts += 1
            if why:
                conn.disconnect()
        if now >= self._report_at:
            self._report(now)

    def _report(self, now: float) -> None:
        s, r = self.stats, self._reported
        refused = (s.refused_frames - r.refused_frames, s.bad_frames - r.bad_frames,
                   s.over_caps - r.over_caps, s.handshake_timeouts - r.handshake_timeouts,
                   s.accept_errors - r.accept_errors)
        if any(refused):
            log.warning("raft port, last %.0f s: refused %d frame(s) of a bad length and %d that did "
                        "not authenticate, closed %d connection(s) over the caps and %d at their "
                        "handshake deadline, %d accept() error(s)",
                        REPORT_S + now - self._report_at, *refused)
        self._reported = dataclasses.replace(s)
        self._report_at = now + REPORT_S


class Listener:
    """The Raft port's listening socket, with pysyncobj's TcpServer interface (bind, unbind)
    and `maintain()`, which the transport calls every tick (see the module docstring)."""

    def __init__(self, poller: Poller, host: str, port: int, on_connection: Callable[[Connection], None],
                 make: Callable[[socket.socket, str], Connection], gate: Gate, *,
                 send_buffer: int, recv_buffer: int) -> None:
        self.host, self.port = host, port
        self.up = False  # bound and listening; read from any thread
        self._poller, self._gate, self._limits = poller, gate, gate.limits
        self._on_connection, self._make = on_connection, make
        self._send_buffer, self._recv_buffer = send_buffer, recv_buffer
        self._sock: socket.socket | None = None
        self._fd: int | None = None
        self._paused_until: float | None = None
        self._backoff = self._limits.accept_backoff_s[0]
        self._rebind_at: float | None = None  # when broken: when to try binding again
        self._verify_at = 0.0
        self._pause_logged_at = float("-inf")

    def bind(self) -> None:
        """Bind and listen; OSError when that fails (pysyncobj retries its first bind)."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self.host, self.port))
            sock.listen(self._limits.backlog)
        except OSError:
            sock.close()
            raise
        self._sock, self._fd = sock, sock.fileno()
        self._poller.subscribe(self._fd, self._on_event, READ | ERROR)
        self._rebind_at = None
        self._verify_at = self._gate.now() + self._limits.verify_s
        self.up = True

    def unbind(self) -> None:
        """Close for good (pysyncobj's destroy)."""
        self._close()
        self._rebind_at = None

    def maintain(self) -> None:
        """Every tick: resume after a pause, bind again when broken, check it still listens."""
        now = self._gate.now()
        if self._paused_until is not None and now >= self._paused_until and self._fd is not None:
            self._paused_until = None
            self._poller.subscribe(self._fd, self._on_event, READ | ERROR)
        if self._rebind_at is not None and now >= self._rebind_at:
            try:
                self.bind()
            except OSError as e:
                self._rebind_at = now + self._limits.rebind_s
                log.error("raft listener %s:%d: cannot bind again: %s; retrying every %.0f s",
                          self.host, self.port, e, self._limits.rebind_s)
            else:
                self._gate.stats.rebinds += 1
                log.warning("raft listener %s:%d: listening again", self.host, self.port)
        if self._sock is not None and now >= self._verify_at:
            self._verify_at = now + self._limits.verify_s
            try:
                listening = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            except OSError:
                listening = 0
            if not listening:
                self._broken("the socket no longer listens")

    def _on_event(self, fd: int, event: int) -> None:
        if fd != self._fd:
            return
        if event & READ:
            self._accept()
        if event & ERROR and self._fd is not None:
            self._broken("the poller reported an error on it")

    def _accept(self) -> None:
        stats = self._gate.stats
        for _ in range(self._limits.accepts_per_tick):
            if self._sock is None or self._paused_until is not None:
                return
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                stats.accept_errors += 1
                if e.errno in _ONE_CONNECTION:
                    continue
                if e.errno in _RESOURCES:
                    self._pause(e)
                else:
                    self._broken(f"accept() failed: {e}")
                return
            self._backoff = self._limits.accept_backoff_s[0]
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            source = str(addr[0])
            self._gate.admit(source)
            stats.accepted += 1
            self._on_connection(self._make(sock, source))

    def _pause(self, e: OSError) -> None:
        """Out of descriptors: stop accepting for a while (the kernel keeps the connections in
        its backlog), longer each time in a row, then try again."""
        assert self._fd is not None
        self._gate.stats.accept_pauses += 1
        self._poller.unsubscribe(self._fd)
        now = self._gate.now()
        self._paused_until = now + self._backoff
        if now >= self._pause_logged_at + REPORT_S:  # the gate's report counts the rest
            self._pause_logged_at = now
            log.warning("raft listener %s:%d: accept() failed: %s; accepting again in %.2f s, "
                        "then after longer pauses (at most %.0f s) while it fails", self.host,
                        self.port, e, self._backoff, self._limits.accept_backoff_s[1])
        self._backoff = min(2 * self._backoff, self._limits.accept_backoff_s[1])

    def _broken(self, why: str) -> None:
        log.error("raft listener %s:%d: %s; closing it and binding again in %.0f s", self.host,
                  self.port, why, self._limits.rebind_s)
        self._close()
        self._rebind_at = self._gate.now() + self._limits.rebind_s

    def _close(self) -> None:
        self.up = False
        self._paused_until = None
        if self._fd is not None:
            self._poller.unsubscribe(self._fd)
            self._fd = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
