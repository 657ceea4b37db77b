"""Tells when this host's nftables ruleset changed, so that what reconciles it looks then.

The data plane's worker compares the kernel's table generation with what it applied, and
the Raft port guard compares its table's digest: each was a `nft list` subprocess every few
seconds (dataplane every 5 s, guard every 10 s), which an idle agent paid for with a few
milliseconds of CPU each time (issue 17). The kernel announces every ruleset change on the
netlink multicast group NFNLGRP_NFTABLES: a table added, deleted or flushed (a firewall
reload's `flush ruleset`), a chain, rule, set or element changed. Listing a ruleset is not
announced, so our own checks do not wake us. The watcher does not read the messages: any
message means "look again", and so does a lost one (ENOBUFS: the socket's buffer
overflowed, some changes are unknown).

Subscribing needs CAP_NET_ADMIN in the agent's network namespace, which it has for
nftables anyway; when it cannot, it says why (`working` is False) and the parts keep
their periodic checks. They keep a slow one even while it works (SAFETY_S), in case a change
escaped notification.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SAFETY_S = 60.0  # how often the parts still look with notifications working
_RECV_BYTES = 65536


def _subscribe() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
    except OSError:
        sock.close()
        raise
    return sock


class NftWatch:
    """Subscribes when built (`working` says whether it could; if not, it said why); from
    start() on, calls every listener (cheap, thread-safe: they set a flag or wake a thread)
    after each burst of nftables changes, from its own thread, which sleeps in between."""

    def __init__(self, subscribe: Callable[[], socket.socket] = _subscribe) -> None:
        self.listeners: list[Callable[[], None]] = []
        self._sock: socket.socket | None = None
        try:
            self._sock = subscribe()
            self._sock.setblocking(False)
        except OSError as e:
            log.info("nftables change notifications unavailable (%s): the data plane and the "
                     "Raft port guard check the kernel on their periods", e)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def working(self) -> bool:
        return self._sock is not None

    def start(self, listeners: Sequence[Callable[[], None]]) -> None:
        """Call `listeners` on every change from now on (nothing when not working)."""
        self.listeners = list(listeners)
        if self._sock is None:
            return
        if not self.listeners:  # nothing uses nftables here: no thread, no subscription
            self._sock.close()
            self._sock = None
            return
        self._thread = threading.Thread(target=self._run, name="nft-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(2.0)
        for s in (self._sock, self._wake_r, self._wake_w):
            if s is not None:
                s.close()

    def _run(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop:
                sel.select()  # no timeout: a change or stop() wakes it
                if self._stop:
                    return
                try:
                    changed = self._drain()
                except OSError as e:
                    log.error("nftables change notifications stopped (%s): the data plane and "
                              "the Raft port guard now check the kernel every %.0f s only", e, SAFETY_S)
                    self._tell()
                    return
                if changed:
                    self._tell()

    def _drain(self) -> bool:
        """Read every pending message; True when there was a change (or a lost one)."""
        assert self._sock is not None
        changed = False
        while True:
            try:
                if not self._sock.recv(_RECV_BYTES):
                    return changed
                changed = True
            except BlockingIOError:
                return changed
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                changed = True  # the buffer overflowed, messages were lost: look again

    def _tell(self) -> None:
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - one part failing must not silence the others
                log.exception("an nftables change listener failed")
