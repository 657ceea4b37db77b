"""systemd's sd_notify protocol, spoken directly (no libsystemd, no python-systemd).

A unit with `Type=notify` passes NOTIFY_SOCKET (a path, or `@name` for the abstract
namespace) to the service, which sends newline-separated `KEY=VALUE` datagrams to it:
READY=1 once it serves, STATUS=... for `systemctl status`, WATCHDOG=1 at least every
WATCHDOG_USEC (half of it, as sd_watchdog_enabled(3) advises), STOPPING=1 when it begins
to stop. See sd_notify(3).

Invariants:
- Nothing here raises into the caller and nothing blocks: the tick loop sends WATCHDOG=1,
  and a full or vanished socket must cost it a log line, not a tick. A failure is logged
  once per failure streak, then quietly retried on every later send.
- Without NOTIFY_SOCKET every call is a no-op (the agent run by hand, in the lab, in tests).
- The watchdog is pinged only from the agent loop (WatchdogPinger.tick), never from a
  helper thread: a stuck loop must stop the pings, so that systemd restarts the agent.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping

log = logging.getLogger("hacluster.sdnotify")

STATUS_EVERY_S = 1.0  # at most one STATUS= per second: the sentence may change every tick
_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify messages to one socket address (None: a no-op notifier)."""

    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None,
                 watchdog_pid: int | None = None):
        """socket_path: NOTIFY_SOCKET as systemd gives it, `/path` or `@abstract`; anything
        else (None, "", vsock:...) leaves the notifier disabled."""
        self.socket_path = socket_path or None
        self.watchdog_usec = watchdog_usec
        self.watchdog_pid = watchdog_pid
        self._address = _address(self.socket_path)
        self._failing = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None,
                 unset_environment: bool = False) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. unset_environment removes
        them afterwards so that child processes (exec checks, nft) do not inherit them:
        call it before any thread starts (putenv is not thread-safe)."""
        env = os.environ if environ is None else environ
        notifier = cls(env.get("NOTIFY_SOCKET"), _positive_int(env, "WATCHDOG_USEC"),
                       _positive_int(env, "WATCHDOG_PID"))
        if unset_environment:
            for key in _ENV:
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WATCHDOG_USEC, or None when systemd
        asked for no watchdog, the watchdog is meant for another process (WATCHDOG_PID),
        or there is no socket to ping."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != os.getpid():
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def describe(self) -> str:
        """One sentence for the start-up log."""
        if self.socket_path is None:
            return "systemd notify: off (no NOTIFY_SOCKET)"
        if not self.enabled:
            return f"systemd notify: off (unsupported NOTIFY_SOCKET {self.socket_path!r})"
        interval = self.watchdog_interval()
        dog = f"watchdog ping every {interval:.3g} s" if interval else "no watchdog"
        return f"systemd notify: {self.socket_path}, {dog}"

    # ------------------------------------------------------------- messages

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status_field(text))

    def watchdog(self, status: str | None = None) -> bool:
        return self.notify("WATCHDOG=1", *_status_field(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status_field(status))

    def notify(self, *fields: str) -> bool:
        """Send `fields` (each `KEY=VALUE`, no newline) as one datagram. True when sent;
        False when disabled or when sending failed (logged once per failure streak)."""
        if self._address is None or not fields:
            return False
        try:
            data = "\n".join(fields).encode("utf-8", "replace")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # non-blocking: a full queue (PID 1 busy) must not stall the tick loop
                sock.setblocking(False)
                sock.sendto(data, self._address)
        except Exception as e:  # noqa: BLE001 - the caller is the tick loop or a signal handler
            if not self._failing:
                self._failing = True
                log.warning("systemd notify: cannot send %s to %s: %s (further failures are "
                            "not logged until a send succeeds)",
                            _keys(fields), self.socket_path, e)
            return False
        if self._failing:
            self._failing = False
            log.info("systemd notify: sending to %s works again", self.socket_path)
        return True


class WatchdogPinger:
    """Rate limiter for the tick loop: tick() is called every tick (10 ms) and sends
    WATCHDOG=1 only when the interval is due, and STATUS= only when the text changed and
    at most every `status_every` s (the latest text is sent once the window passes, so
    systemctl status ends on the current sentence). A loop that stops calling tick()
    stops the pings: that is the point."""

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic,
                 status_every: float = STATUS_EVERY_S):
        self.notifier = notifier
        self.clock = clock
        self.interval = notifier.watchdog_interval()
        self.status_every = status_every
        self._ping_due = float("-inf")  # the first tick pings
        self._status_due = float("-inf")
        self._sent_status: str | None = None

    def tick(self, status: str | None = None) -> None:
        if not self.notifier.enabled:
            return
        now = self.clock()
        fields = []
        if self.interval is not None and now >= self._ping_due:
            fields.append("WATCHDOG=1")
            # from now, not from the due time: after a late tick, the next ping still
            # comes a full interval later rather than in a burst
            self._ping_due = now + self.interval
        if status is not None and status != self._sent_status and now >= self._status_due:
            fields += _status_field(status)
            self._sent_status = status
            self._status_due = now + self.status_every
        if fields:
            self.notifier.notify(*fields)


def _address(path: str | None) -> str | bytes | None:
    if not path:
        return None
    if path.startswith("@"):
        return b"\0" + path[1:].encode("utf-8", "surrogateescape")
    if path.startswith("/"):
        return path
    return None  # vsock:CID:PORT (systemd >= 253) and relative paths: not supported


def _positive_int(env: Mapping[str, str], key: str) -> int | None:
    raw = env.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        log.warning("systemd notify: ignoring %s=%r (not an integer)", key, raw)
        return None
    return value if value > 0 else None


def _status_field(text: str | None) -> list[str]:
    # the protocol separates fields with newlines: one inside STATUS would start a new field
    return [] if text is None else ["STATUS=" + " ".join(text.splitlines())]


def _keys(fields: tuple[str, ...]) -> str:
    return ",".join(f.split("=", 1)[0] for f in fields)
