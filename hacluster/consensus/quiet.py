"""Quiet ticks: a wake-up that only carried an idle heartbeat or its ack skips the tick's
housekeeping (a mixin of RaftNode, issue 17).

pysyncobj's tick thread runs its whole tick on every wake-up: our before_tick (agent
watchdog, journal checks, TCP silence, idle-link pings, the election gate), then pysyncobj's
(election and commit checks, applying entries, new commands, log compaction, reconnects,
the transport's sweeps), then it polls. An idle cluster wakes it once per message: a
follower for each of the leader's 20 heartbeats a second, the leader for its heartbeats
and again for the acks. Profiled (yappi, bench/idle.py lab), the housekeeping was about half
of each wake-up's CPU, and on a plain heartbeat or ack it finds nothing to do.

So after a full tick, the next wake-up is *quiet* (flush the replies the last poll's
messages produced, poll again until the full tick's own deadline) when all of these hold:

* the next thing due without a message has not come (poll_wait: the leader's next
  heartbeat, the election gate, an idle-link ping), nor QUIET_MAX_S since the full tick:
  time-driven work waits for it, as it did before (a follower's full ticks, capped at
  MAX_POLL_S each, used to restart with every heartbeat);
* the log is quiet: every entry committed and applied, and term, role, leader and commit
  index are what the full tick left (the mark taken right before its poll, in after_tick).
  A heartbeat that carries entries or a new commit index, a new leader or term, an ack
  that lets the leader commit: the mark differs, the tick is full;
* nothing stirred: a message other than a heartbeat, an ack or an hc_ping (votes, pre-votes,
  timeout_now, commands forwarded to the leader...), a connection opened or lost, a command
  submitted on another thread (HookedSyncObj.stir), a call_soon;
* the journal has nothing to write or flush and no flush or promise is pending (DiskGuard).

What a quiet wake-up still does is everything the message itself triggers, unchanged: the
hooks' on_message (the lease from the ack's hc_ts, stickiness from the heartbeat) and
pysyncobj's handling of it (the follower's ack, the leader's lastResponseTime). pysyncobj's
election deadline, which each heartbeat re-arms, is taken over by the gate at the next full
tick, before pysyncobj's own check runs (it only runs in full ticks), as before.
"""

from __future__ import annotations

from typing import Any

QUIET_MAX_S = 0.25  # the longest run of quiet wake-ups between two full ticks

# The messages a quiet wake-up may carry; whether they changed anything is the mark's job.
_PLAIN = frozenset({"append_entries", "next_node_idx", "hc_ping"})


class QuietTicks:
    """RaftNode's: _sync, _disk and _tick_calls come from it."""

    _sync: Any
    _disk: Any
    _tick_calls: Any
    _quiet_mark: tuple[Any, ...] | None = None  # the full tick's state before its poll
    _quiet_until = 0.0  # that poll's deadline (poll_wait)
    _stirred = True  # something since the last full tick that needs one
    quiet_ticks = 0  # how many wake-ups were quiet (tests, metrics)

    def stir(self) -> None:
        """The next wake-up runs a full tick (any thread: one attribute store)."""
        self._stirred = True

    def _note_message(self, kind: Any) -> None:
        if kind not in _PLAIN:
            self._stirred = True

    def _quiet_start(self, now: float, wait: float) -> None:
        """A full tick starts; the next thing due without a message is `wait` away."""
        self._quiet_until = now + min(wait, QUIET_MAX_S)
        self._stirred = False

    def after_tick(self) -> None:
        """Hooks.after_tick: the journal's flush starts; then the mark, right before the poll."""
        self._disk.after_tick()
        s = self._sync
        self._quiet_mark = None if s is None or not self._disk.idle() else s.quiet_mark()

    def _quiet_left(self, now: float) -> float | None:
        """Hooks.quiet_wait: how long this wake-up may poll without a full tick, or None."""
        mark = self._quiet_mark
        if mark is None or self._stirred or self._tick_calls:
            return None
        left = self._quiet_until - now
        s = self._sync
        if left <= 0 or s is None or not self._disk.idle() or s.quiet_mark() != mark:
            return None
        self.quiet_ticks += 1
        return left
