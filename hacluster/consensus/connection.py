"""One connection of the Raft port, hardened: pysyncobj's TcpConnection without its flaws.

What it refuses, when, and what "authenticated" means: transport.py's docstring (issue 15).
Here, in the order pysyncobj's TcpConnection does it, with the same wire format: connect,
send, the poller's events, reads within a budget per tick, and frames checked by their
length before their body is read.
"""

from __future__ import annotations

import base64
import logging
import socket
import struct
import zlib
from collections.abc import Callable
from typing import Any

from hacluster import clock
from hacluster.consensus.transport import (
    CONNECTED,
    CONNECTING,
    DISCONNECTED,
    ERROR,
    LENGTH,
    READ,
    WRITE,
    Gate,
    Poller,
    Wire,
)

log = logging.getLogger("hacluster.raft.transport")

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def _fernet_stamp(token: bytes) -> int:
    """The send time in a Fernet token (base64url of version, 64-bit stamp, ...): what
    Fernet.extract_timestamp returns, without checking the HMAC a second time."""
    return int.from_bytes(base64.urlsafe_b64decode(token[:12])[1:9], "big")


class Connection:
    """One TCP connection of the Raft port, with pysyncobj's TcpConnection interface (see the
    module docstring). Built with `sock` for an accepted connection, without for one that
    connect() dials."""

    def __init__(self, poller: Poller, wire: Wire, gate: Gate, *, sock: socket.socket | None = None,
                 source: str | None = None, timeout: float, send_buffer: int, recv_buffer: int,
                 keepalive: tuple[int, int, int] | None) -> None:
        # pysyncobj's fields, read and written by its TCPTransport
        self.sendRandKey: bytes | None = None  # noqa: N815
        self.recvRandKey: bytes | None = None  # noqa: N815
        self.recvLastTimestamp = 0  # noqa: N815
        self.encryptor: Any = None
        self.authenticated = False
        self.source = source  # an accepted connection's remote IP (seam.source_of)
        self._poller, self._wire, self._gate, self._limits = poller, wire, gate, gate.limits
        self._timeout = timeout
        self._send_buffer, self._recv_buffer, self._keepalive = send_buffer, recv_buffer, keepalive
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._on_message: Callable[[Any], None] | None = None
        self._on_connected: Callable[[], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._sock = sock
        self._fd: int | None = None
        self._state = DISCONNECTED
        self._opened_at = self._last_read = gate.now()
        if sock is not None:
            self._fd = sock.fileno()
            self._state = CONNECTED
            self._set_keepalive(sock)
            gate.opened(self, source or "?")
            poller.subscribe(self._fd, self._on_event, READ | WRITE | ERROR)

    # ------------------------------------------------------------ pysyncobj's interface

    def setOnConnectedCallback(self, callback: Callable[[], None] | None) -> None:  # noqa: N802
        self._on_connected = callback

    def setOnMessageReceivedCallback(self, callback: Callable[[Any], None] | None) -> None:  # noqa: N802
        self._on_message = callback

    def setOnDisconnectedCallback(self, callback: Callable[[], None] | None) -> None:  # noqa: N802
        self._on_disconnected = callback

    @property
    def state(self) -> int:
        return self._state

    def fileno(self) -> int | None:
        return self._fd

    def getSendBufferSize(self) -> int:  # noqa: N802
        return len(self._wbuf)

    def connect(self, host: str | None, port: int) -> bool:
        """Dial a member (non-blocking); False when that failed at once."""
        if host is None:
            return False
        self._state, self._fd = DISCONNECTED, None
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:  # out of descriptors: pysyncobj would abort the whole tick
            log.warning("raft: cannot open a socket to %s:%s: %s", host, port, e)
            return False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._set_keepalive(sock)
            sock.setblocking(False)
            sock.connect((host, port))
        except BlockingIOError:
            pass  # EINPROGRESS: the poller reports the outcome
        except OSError:
            sock.close()
            return False
        self._rbuf, self._wbuf = bytearray(), bytearray()
        self._opened_at = self._last_read = self._gate.now()
        self.authenticated = self.encryptor is None  # no secret: nothing to authenticate with
        self._sock, self._fd, self._state = sock, sock.fileno(), CONNECTING
        self._gate.opened(self, None)
        self._poller.subscribe(self._fd, self._on_event, READ | WRITE | ERROR)
        return True

    def send(self, message: Any) -> None:
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = zlib.compress(self._wire.dumps(message), 3)
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, int(clock.now()))
        self._wbuf += LENGTH.pack(len(data))
        self._wbuf += data
        self._gate.cork(self)  # sent at the gate's next flush, within this tick

    def flush(self) -> None:
        """Send what send() queued (Gate.flush, on the tick thread)."""
        self._flush()
        if self._wbuf and self._fd is not None:  # the rest goes out when the socket is writable
            self._poller.subscribe(self._fd, self._on_event, READ | WRITE | ERROR)

    def disconnect(self) -> None:
        notify = self._on_disconnected is not None and self._state != DISCONNECTED
        self.sendRandKey = self.recvRandKey = None
        self.recvLastTimestamp = 0
        if self._fd is not None:
            self._poller.unsubscribe(self._fd)
            self._fd = None
        if self._sock is not None:
            if not self.authenticated:
                # reset, not FIN: the stranger's connection leaves conntrack's count (the
                # guard's `ct count`) at once, whatever its process does with its end
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                except OSError:
                    pass
            self._sock.close()
            self._sock = None
        self._rbuf, self._wbuf = bytearray(), bytearray()
        self._state = DISCONNECTED
        self.authenticated = False
        self._gate.forget(self)
        if notify and self._on_disconnected is not None:
            self._on_disconnected()

    # ------------------------------------------------------------ ours

    def expired(self, now: float) -> str | None:
        """"handshake" past its deadline unauthenticated, "idle" with nothing read for
        connectionTimeout, else None."""
        if self._state == DISCONNECTED:
            return None
        if not self.authenticated and now - self._opened_at > self._limits.handshake_s:
            return "handshake"
        if now - self._last_read > self._timeout:
            return "idle"
        return None

    def _set_keepalive(self, sock: socket.socket) -> None:
        if self._keepalive is None:
            return
        idle, interval, count = self._keepalive
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)

    def _on_event(self, fd: int, event: int) -> None:
        if fd != self._fd or self._sock is None:
            return  # an event of a socket closed earlier in this poll round
        if event & ERROR:
            self.disconnect()
            return
        now = self._gate.now()
        if now - self._last_read > self._timeout:
            self.disconnect()
            return
        if self._state == CONNECTING and self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.disconnect()  # the connect failed (once connected, an error is ERROR: POLLERR)
            return
        if self._state == CONNECTING:
            if self._on_connected is not None:
                self._on_connected()
            if self._state != DISCONNECTED:
                self._state = CONNECTED
                self._last_read = now
            return
        if event & WRITE:
            self._flush()
            if self._state == DISCONNECTED:
                return
            self._poller.subscribe(fd, self._on_event, READ | ERROR | (WRITE if self._wbuf else 0))
        if event & READ:
            self._read(now)
            self._parse()

    def _flush(self) -> None:
        if self._state == DISCONNECTED or self._sock is None:
            return
        if self._gate.now() - self._last_read > self._timeout:  # as pysyncobj: a dead peer
            self.disconnect()
            return
        while self._wbuf:
            try:
                sent = self._sock.send(self._wbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.disconnect()
                return
            if sent <= 0:
                return
            del self._wbuf[:sent]

    def _read(self, now: float) -> None:
        """Read what the socket holds, up to this tick's budget."""
        lim = self._limits
        budget = lim.read_per_tick if self.authenticated else 2 * (lim.handshake_frame + LENGTH.size)
        got = 0
        while got < budget and self._sock is not None:
            want = min(self._recv_buffer, budget - got)
            try:
                chunk = self._sock.recv(want)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.disconnect()
                return
            if not chunk:
                self.disconnect()
                return
            self._rbuf += chunk
            got += len(chunk)
            if len(chunk) < want:
                break  # drained for now: the (level-triggered) poll reports what comes next
        if got:
            self._last_read = now

    def _parse(self) -> None:
        """Hand every complete frame to pysyncobj; refuse a length out of bounds at once."""
        while self._state != DISCONNECTED and len(self._rbuf) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._rbuf)
            limit = self._limits.frame if self.authenticated else self._limits.handshake_frame
            if not 0 <= length <= limit:
                self._gate.stats.refused_frames += 1
                log.debug("raft: frame of %d bytes announced %s authentication (limit %d): closed",
                          length, "after" if self.authenticated else "before", limit)
                self.disconnect()
                return
            end = LENGTH.size + length
            if len(self._rbuf) < end:
                return
            data = bytes(self._rbuf[LENGTH.size:end])
            del self._rbuf[:end]
            try:
                message = self._decode(data)
            except Exception as e:  # noqa: BLE001 - whatever a stranger's bytes raise
                self._gate.stats.bad_frames += 1
                log.debug("raft: frame refused (%s: %s): closed", type(e).__name__, e)
                self.disconnect()
                return
            if self._on_message is not None:
                self._on_message(message)

    def _decode(self, data: bytes) -> Any:
        if self.encryptor:
            plain = self.encryptor.decrypt(data)  # checks the HMAC (over the stamp too) first
            stamp = _fernet_stamp(data)
            if stamp < self.recvLastTimestamp:
                raise ValueError("frame older than the last one")
            self.recvLastTimestamp = stamp
            data = plain
        message = self._wire.loads(zlib.decompress(data))
        if self.recvRandKey:
            key, message = message
            if key != self.recvRandKey:
                raise ValueError("frame without this connection's key")
            self._authenticate()
        elif self.encryptor is None:
            self._authenticate()
        return message

    def _authenticate(self) -> None:
        if not self.authenticated:
            self.authenticated = True
            self._gate.authenticated(self)
