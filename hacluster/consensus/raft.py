"""pysyncobj behind one small class, with the safety pysyncobj lacks (DESIGN.md §3, §4).

pysyncobj alone can have two leaders at once and lets a cut-off leader act for 30 s. This
module adds, without patching the library, and in its own words: every pysyncobj call and
private it needs is a named method of pysyncobj_compat (SyncObjSeam, HookedSyncObj), which
says why each private is needed and is tested against the installed library.

* **Leader lease from heartbeat send times.** Every append_entries carries `hc_ts`, the
  leader's monotonic send time; the follower echoes it in its next_node_idx answer. The
  lease is valid until (the send time acknowledged by a majority) + L. A reply therefore
  only ever extends the lease from the moment its heartbeat *left* the leader.
* **Leader stickiness** (Raft thesis §4.2.3): a follower that accepted an append_entries
  within the minimum election timeout drops RequestVote messages unheard (no term bump,
  no vote). With L < minimum election timeout, no new leader can be elected while a lease
  is live, so a new leader may claim the VIP at once.
* **Pre-vote** (thesis §9.6): before pysyncobj may start an election, a majority must say
  it would vote: a cut-off node never inflates its term and rejoins without deposing the
  healthy leader (without it, stickiness would strand such a node at a higher term).
* **Graceful transfer**: a `timeout_now` from the leader (sent after it released its VIPs)
  skips pre-vote and marks the vote requests `hc_transfer`, honoured despite stickiness.
* **Idle links kept open**: `hc_ping` on the links heartbeats leave idle, so the first election
  round after a crash is not lost to a link pysyncobj's connectionTimeout closed while idle;
  a non-voter's heartbeats paced (links.py).
* **Acknowledged means on disk** (diskguard.py, journal.py); a leader whose disk fills steps down.
  An ack held for its flush does not hold the lease: at receipt the follower answers a
  next_node_idx that promises nothing (success False, no reset: pysyncobj's leader only
  notes the answer) carrying the heartbeat's send time; stickiness rests on that receipt.

Threading: callbacks and hooks (before_tick, on_message, on_send) run on pysyncobj's tick
thread; the agent reads `view()` (single floats/ints/bools, atomic under the GIL) from its
own. What must run on the tick thread goes through `call_soon()` (protocol.Consensus).
Time: every deadline here is on the lease clock (hacluster.clock.now), read through `_now`.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from hacluster import clock
from hacluster.config import Config
from hacluster.consensus.acklag import AckLag, read_tcp_silence
from hacluster.consensus.diskguard import Disk, DiskGuard, DurableJournal
from hacluster.consensus.links import Links
from hacluster.consensus.members import MemberView, change_voters
from hacluster.consensus.pysyncobj_compat import (
    HookedSyncObj,
    Node,
    SyncObjConf,
    SyncObjSeam,
    replicated,
)
from hacluster.consensus.quiet import QUIET_MAX_S, QuietTicks
from hacluster.consensus.raftview import consensus_view, role_of
from hacluster.consensus.state import ReplicatedState, Result, encode
from hacluster.model import ConsensusView, Role

log = logging.getLogger("hacluster.raft")

_CONNECTION_TIMEOUT = 2.0
# pysyncobj's election deadline while the pre-vote gate holds elections back: never reached
HELD = 1e18
# A leader whose agent loop has not finished a tick for this long goes silent: its VIP is no
# longer renewed, so the cluster must elect another leader (which will probe before claiming).
AGENT_STUCK_S = 1.0  # s without a finished agent tick before the leader mutes its heartbeats
MAX_POLL_S = 0.1  # the longest a tick waits for messages (RaftNode.poll_wait)
STALE_TERM_S = 1.0  # hearing only lower-term leaders this long: tell the leader our term


# The lease clock (hacluster.clock.now, pysyncobj's own CLOCK_MONOTONIC_RAW), never
# time.monotonic(): election deadlines are stored on it and compared here. Every read in this
# module goes through the name `_now`, looked up at call time, so that a test can drive time
# by hand with monkeypatch.setattr(raft, "_now", fake_clock).
_now = clock.now


class _Syncer(HookedSyncObj):
    """The pysyncobj object: exactly one replicated method, `apply(payload)`.

    Its hooks are the RaftNode: before_tick, on_message and on_send run the safety rules.
    `_state` is its replicated state: written to pysyncobj's full dump, and replaced by the
    one in a dump that pysyncobj loads (at its first tick, or from a leader's snapshot).
    """

    def __init__(self, hooks: RaftNode, self_addr: str | None, others: list[str], conf: SyncObjConf,
                 journal: DurableJournal | None = None):
        # Before SyncObj.__init__: its tick thread may replay the journal into apply() at once.
        # Declared as replicated state, or a log compaction would lose it (invariant I2).
        self._state = ReplicatedState()
        super().__init__(hooks, self_addr, others, conf, replicated_attrs=("_state",), journal=journal)

    @replicated
    def apply(self, payload: bytes) -> Result:
        result = self._state.apply(payload)
        self._hc.changed()
        return result


class RaftNode(MemberView, Links, QuietTicks):
    """One member's Raft: election, lease, replicated state. Start with start().

    Implements protocol.Consensus (what the agent may ask, and from which thread) and
    pysyncobj_compat.Hooks (what pysyncobj's tick thread calls)."""

    def __init__(self, config: Config, secret: str,
                 on_role_change: Callable[[Role, int], None] | None = None, disk: Disk | None = None):
        if not secret:
            raise ValueError("a cluster secret is required (pysyncobj without a password "
                             "unpickles whatever reaches its port)")
        self.config = config
        self._secret = secret
        self._on_role_change = on_role_change
        self._watchers: list[Callable[[], None]] = []  # on_change()
        t = config.timing
        self.lease_s = t.lease
        self.election_min = t.election_min
        self._addr_of: tuple[Any, dict[str, str]] = ((), {})  # _by_addr's cache
        # written on the tick thread, read anywhere
        self.echo_ts: float | None = None
        self._held_ack: dict[str, Any] | None = None  # an ack held for the flush (on_message)
        self.lease_expiry = 0.0
        self.lease_seen_ok = False  # view() saw the lease valid (it logs the loss once)
        self.leader_since = 0.0
        self.won_by_transfer = False
        self._acks: dict[str, float] = {}
        self._answered: dict[str, float] = {}  # peer -> send time of the newest message it answered
        self._tcp_silence: dict[str, float | None] = {}  # leader: peer -> TCP_INFO silence
        self._paced_at = {}  # Links: when each non-voter last had a heartbeat from us
        # how long followers stay silent (for the health verdicts' corroboration window)
        self._ack_lag = AckLag(3 * t.heartbeat, config.health_corroborate)
        self._last_leader_contact = 0.0
        self._retired = False  # demoted or removed: never stands again (retire())
        self._silence_until = 0.0  # heartbeats muted until then (see register_epoch)
        self.silent_before_leading: float | None = None
        self._prevote_round = 0
        self._prevote_grants: set[str] = set()
        self._prevote_passed = False
        self._prevote_term = 0  # the term the current pre-vote round asks for
        self._election_due = 0.0  # when pysyncobj would elect; its own timer is HELD (gate)
        self._stale_leader_since: float | None = None  # hearing only lower-term leaders since
        self._stale_reply_at = 0.0
        self._transfer_pending = False
        self._last_ping = 0.0
        self._tick_calls: collections.deque[Callable[[], None]] = collections.deque()
        self.agent_beat = _now()  # last tick the agent loop finished (agent_alive())
        self.mute_heartbeats = False
        self._epoch_term_applied = 0
        self._sync: SyncObjSeam[_Syncer] | None = None
        self._disk = DiskGuard(disk)  # the data disk's rules; disk: its syscalls (tests fake them)
        self._started = threading.Event()

    # membership (issue 16): MemberView's _by_addr, readonly, _n, _voter; and
    change_voters = change_voters  # (add, member, address, done): consensus/members.py

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        t = self.config.timing
        data = self.config.data_dir
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = SyncObjConf(
            password=self._secret,
            appendEntriesPeriod=t.heartbeat,
            raftMinTimeout=t.election_min,
            raftMaxTimeout=t.election_max,
            leaderFallbackTimeout=t.leader_fallback,
            connectionRetryTime=t.connection_retry,
            connectionTimeout=max(_CONNECTION_TIMEOUT, t.election_max),
            autoTickPeriod=min(0.01, t.tick),
            appendEntriesUseBatch=False,  # wake the tick thread at once for new commands
            journalFile=str(data / "raft.journal"),
            fullDumpFile=str(data / "raft.dump"),
            useFork=False,  # forking beside gRPC threads is unsafe
            dynamicMembershipChange=True,  # members add/remove (issue 16)
            onStateChanged=self._on_state_changed,
            bindAddress=f"{self.config.me.address}:{self.config.me.raft_port}",
        )
        # Count our own start as contact with a leader: a node that just started has not had
        # the chance to hear the current one, and must not hand out (pre-)votes against it.
        self._last_leader_contact = _now()
        self.agent_beat = _now()
        journal = self._disk.open(data, t.election_max)
        self._built_readonly = self.readonly
        me = None if self._built_readonly else self.config.me.raft_endpoint  # None: read-only node
        self._sync = SyncObjSeam(_Syncer(self, me, [m.raft_endpoint for m in self.config.peers if m.voter],
                                         conf, journal))
        self._started.set()

    def stop(self) -> None:
        if self._sync is not None:
            self._sync.destroy()

    # ------------------------------------------------------------ tick-thread hooks

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run fn on pysyncobj's tick thread (its internals are not thread-safe), at once."""
        self._tick_calls.append(fn)
        if self._sync is not None:
            self._sync.wake()

    def poll_wait(self, default: float) -> float:
        """This tick's wait for messages: until the next thing due without one (a leader's
        heartbeat, the election timer, an hc_ping), at most MAX_POLL_S (a non-voter's: QUIET_MAX_S),
        not pysyncobj's 10 ms. Commands and call_soon end it at once (pysyncobj's notifier)."""
        s, cap = self._sync, MAX_POLL_S
        if s is None or self._tick_calls:
            return 0.0
        now = _now()
        if s.is_leader():
            due = s.next_heartbeat_at()
            if due <= now:  # sent in this tick
                due = now + self.config.timing.heartbeat
        else:  # a non-voter (or a retired voter) has no election timer: it ticked at 100 Hz, then 10
            due = now + (cap := QUIET_MAX_S) if self.readonly or self._retired else self._election_due
        due = min(due, self._last_ping + self._ping_period())
        self._quiet_start(now, due - now)
        return min(cap, max(default, due - now))

    def quiet_wait(self) -> float | None:
        return self._quiet_left(_now())

    def before_tick(self) -> None:
        while self._tick_calls:
            try:
                self._tick_calls.popleft()()
            except Exception:  # a failed admin call must not kill Raft
                log.exception("tick-thread call failed")
        now = _now()
        self._check_agent(now)
        self._disk.before_tick(self._sync, now, self._n // 2)
        self._tcp_silence = read_tcp_silence(self, now)
        if now - self._last_ping >= self._ping_period():
            self._last_ping = now
            self._ping_idle_links()
        self._gate_election(now)

    def agent_alive(self) -> None:
        """Called by the agent loop after every tick: the watchdog's heartbeat."""
        self.agent_beat = _now()

    def _check_agent(self, now: float) -> None:
        stuck = now - self.agent_beat > AGENT_STUCK_S or now < self._silence_until
        if stuck != self.mute_heartbeats:
            if stuck:
                log.error("agent loop stuck for %.1f s: leader goes silent so that another "
                          "node takes the VIP over", now - self.agent_beat)
            else:
                log.warning("agent loop running again")
            self.mute_heartbeats = stuck

    def _gate_election(self, now: float) -> None:
        """Hold pysyncobj's election back until a pre-vote round passed (or a transfer).

        The gate owns the election timer: whatever deadline pysyncobj set since the last
        tick (a heartbeat, a vote, a timeout_now) is taken over as `_election_due`, and
        pysyncobj's own is parked at HELD, so that its check, which runs a little after this
        hook, can never fire by itself. Comparing its deadline with a margin was not enough:
        a CPU-starved process is descheduled for tens of milliseconds between the two, and
        every election that slipped through ungated bumped the term and deposed a healthy
        leader (bench/starvation.py at 8 % of a CPU: several per minute). Only a permitted
        election sets pysyncobj's deadline to 0.
        """
        s = self._sync
        if s is None or s.is_leader() or self.readonly:
            return
        if self._retired:
            s.set_election_deadline(HELD)
            return
        deadline = s.election_deadline()
        if deadline != HELD:  # pysyncobj (re)armed its timer since the last tick
            self._election_due = deadline + self._disk.holdback()
            s.set_election_deadline(HELD)
        if self._election_due > now:
            return
        if s.transfer_in_progress():
            if not self._transfer_pending:
                log.debug("leadership transfer to us: election without pre-vote")
            self._transfer_pending = True
            s.set_election_deadline(0)
            return
        if self._prevote_passed:
            self._prevote_passed = False
            # A pass is good only for the term it was asked for: if a vote request or a new
            # leader moved our term meanwhile, electing now would run for a term nobody
            # pre-voted, above the new leader's, and strand us (the leader's heartbeats at
            # a lower term are ignored, and our vote requests are refused as sticky).
            if s.term + 1 == self._prevote_term:
                log.debug("pre-vote passed: election for term %d", self._prevote_term)
                s.set_election_deadline(0)  # let pysyncobj run this election
                return
            log.debug("pre-vote for term %d is stale (term is now %d): asking again",
                      self._prevote_term, s.term)
        if self._n == 1:
            s.set_election_deadline(0)
            return
        # Not yet: push the deadline forward and ask for pre-votes instead.
        self._election_due = now + self._disk.holdback() + random.uniform(
            self.election_min, self.config.timing.election_max)
        self._prevote_round += 1
        self._prevote_grants = set()
        self._prevote_term = s.term + 1
        log.debug("election timer expired: pre-vote round %d for term %d",
                  self._prevote_round, s.term + 1)
        last_index, last_term = s.last_log()
        self._broadcast({"type": "hc_prevote", "round": self._prevote_round,
                         "term": s.term + 1,
                         "last_log_index": last_index, "last_log_term": last_term})

    def on_message(self, node: Node, message: dict[str, Any], deliver: Callable[[], None]) -> None:
        """Hooks.on_message: apply our rules, then let pysyncobj handle what they let through.

        While pysyncobj handles a heartbeat, its send time is at hand (echo_ts) so that the
        answer pysyncobj sends at once carries it back: the leader's lease runs from it.
        """
        self._note_message(message.get("type"))
        if self.intercept(node, message):
            return
        self.echo_ts = None
        if message.get("type") == "append_entries":
            self.echo_ts = message.get("hc_ts")
            if self._sync is not None and "prevLogIdx" in message:
                self._sync.skip_held_entries(message)  # a resent batch is not written twice
        self._disk.peer = node  # pysyncobj's answers go to it: an ack may wait for the flush
        try:
            deliver()
        finally:
            held, self._held_ack = self._held_ack, None
            self.echo_ts = self._disk.peer = None
        if held is not None and self._sync is not None:
            # Its ack waits for the journal's flush; the lease need not: this member stays
            # sticky from receipt (intercept), whatever its disk does meanwhile.
            self._sync.send(node, {**held, "success": False, "reset": False, "hc_receipt": True})

    def on_send(self, message: dict[str, Any], node: Node | None = None) -> dict[str, Any] | None:
        """Hooks.on_send: stamp outgoing Raft messages; None drops one: a heartbeat of a
        leader whose agent loop is stuck (others must take over), one a non-voter does not
        need yet (links.py)."""
        if (self.mute_heartbeats and message.get("type") == "append_entries") \
                or self._paced(node, message, _now()):
            return None
        message = self.stamp(message)
        # a promise (ack, vote) waits for its flush, or is dropped if the disk fails
        if self._disk.may_send(message):
            return message
        if message.get("type") == "next_node_idx" and self.echo_ts is not None:
            self._held_ack = message  # on_message acks the receipt for the lease at once
        return None

    def stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        """Outgoing: add send times to heartbeats, echo them in replies, flag transfers."""
        kind = message.get("type")
        if kind == "append_entries":
            return {**message, "hc_ts": _now()}
        if kind == "next_node_idx" and self.echo_ts is not None:
            return {**message, "hc_ts": self.echo_ts}
        if kind == "request_vote" and self._transfer_pending:
            return {**message, "hc_transfer": True}
        return message

    def intercept(self, node: Node, message: dict[str, Any]) -> bool:
        """Incoming: True when the message is consumed here and pysyncobj must not see it."""
        kind = message.get("type")
        s = self._sync
        if s is None:
            return True
        now = _now()
        peer = self._peer_of(node)
        if kind == "hc_ping":
            return True
        if kind == "append_entries":
            if message.get("term", -1) >= s.term:
                self._last_leader_contact = now
                self._stale_leader_since = None
                if self._prevote_passed:  # a leader is alive after all: the pass is void
                    self._prevote_passed = False
                    self._prevote_round += 1
            elif not self._retired:
                self._tell_stale_leader(node, now)
            return False
        if kind == "hc_higher_term":
            self._step_down_for(peer, message.get("term"))
            return True
        if kind == "next_node_idx":  # an ack, or a receipt (on_message): both carry hc_ts
            ts = message.get("hc_ts")
            if isinstance(ts, float) and ts > self._answered.get(peer, 0.0):
                self._answered[peer] = ts  # any member's, voter or not (acked_since)
            # only a voter's ack counts for the lease (a read-only node's is no vote)
            if isinstance(ts, float) and s.is_leader() and ts >= self.leader_since and self._voter(peer):
                if ts > self._acks.get(peer, 0.0):
                    self._ack_lag.ack(peer, now - self._acks.get(peer, self.leader_since), now)
                    self._acks[peer] = ts
                    self._recompute_lease()
            return False
        if kind == "request_vote":
            # Stickiness: a follower that hears a live leader does not even bump its term, and
            # a leader with a live lease ignores challengers (else it would step down and even
            # vote for one while its lease still lets it hold the VIP).
            if message.get("hc_transfer"):
                return False
            if s.is_leader():
                return now < self.lease_expiry
            return now - self._last_leader_contact < self.election_min
        if kind == "hc_prevote":
            self._answer_prevote(node, message, now)
            return True
        if kind == "hc_prevote_resp":
            if message.get("round") == self._prevote_round and message.get("granted") \
                    and self._voter(peer):
                self._prevote_grants.add(peer)
                if len(self._prevote_grants) + 1 > self._n // 2:
                    self._prevote_passed = True
                    self._prevote_round += 1  # retire the round: late grants must not re-arm it
                    s.set_election_deadline(0)  # the gate lets pysyncobj elect at its next tick
            return True
        return False

    def _tell_stale_leader(self, node: Node, now: float) -> None:
        """Safety net for a term above the leader's: tell it, so that it steps down.

        pysyncobj ignores heartbeats from a lower term without answering, and our stickiness
        refuses our vote requests while that leader lives: without this message a member
        whose term ran ahead would stay out of the cluster for good. Pre-vote makes it rare
        (a pass is bound to its term), so this only fires after STALE_TERM_S of it.
        """
        if self._stale_leader_since is None:
            self._stale_leader_since = now
        if now - self._stale_leader_since < STALE_TERM_S or now - self._stale_reply_at < 0.5:
            return
        self._stale_reply_at = now
        s = self._sync
        assert s is not None
        log.warning("hearing only a leader of a lower term for %.1f s: telling it our term %d",
                    now - self._stale_leader_since, s.term)
        s.send(node, {"type": "hc_higher_term", "term": s.term})

    def _step_down_for(self, peer: str, term: Any) -> None:
        """As Raft prescribes when a leader learns of a higher term: become a follower.

        The agent sees the role change at its next tick and releases the VIP at once; the
        next leader is elected with pre-vote and probes before claiming, as after a crash.
        """
        s = self._sync
        assert s is not None
        if not isinstance(term, int) or term <= s.term or not s.is_leader():
            return
        log.error("member %s is at term %d, above ours (%d): stepping down so that the "
                  "cluster can elect a leader it can follow", peer, term, s.term)
        s.step_down(term)

    def _answer_prevote(self, node: Node, message: dict[str, Any], now: float) -> None:
        s = self._sync
        assert s is not None
        my_idx, my_term = s.last_log()
        their = (message.get("last_log_term", -1), message.get("last_log_index", -1))
        granted = (
            not s.is_leader()
            and now - self._last_leader_contact >= self.election_min
            and message.get("term", -1) > s.term
            and their >= (my_term, my_idx)
        )
        log.debug("pre-vote from %s for term %s: %s (last contact %.0f ms ago)",
                  getattr(node, "address", node), message.get("term"),
                  "granted" if granted else "denied", (now - self._last_leader_contact) * 1000)
        s.send(node, {"type": "hc_prevote_resp", "round": message.get("round"), "granted": granted})

    def _recompute_lease(self) -> None:
        need = self._n // 2  # acks from others needed besides our own
        acks = sorted(self._acks.values(), reverse=True)
        if need == 0:
            self.lease_expiry = float("inf")
        elif len(acks) >= need:
            self.lease_expiry = acks[need - 1] + self.lease_s

    def _on_state_changed(self, old: int, new: int) -> None:
        s = self._sync
        role = role_of(new)
        self._acks.clear()
        self._ack_lag.reset(_now())
        self._prevote_passed = False  # a pass is good for the one election it was asked for
        self.lease_expiry = 0.0
        if role is Role.LEADER:
            self.leader_since = _now()
            # how long no leader had been heard when this node won: the outage as seen here
            self.silent_before_leading = self.leader_since - self._last_leader_contact
            self.won_by_transfer = self._transfer_pending
            if self._n == 1:
                self.lease_expiry = float("inf")
        else:
            self.won_by_transfer = False
        if role_of(old) is Role.LEADER and role is not Role.LEADER:  # its timer was parked
            # at a deadline long past: a resigned leader waits (+ hold-back) as a follower does
            self._election_due = _now() + self._disk.holdback() + random.uniform(
                self.election_min, self.config.timing.election_max)
        if role is not Role.CANDIDATE:
            self._transfer_pending = False
        term = s.term if s is not None else 0
        log.info("raft role %s -> %s (term %d)", role_of(old).value, role.value, term)
        if self._on_role_change is not None:
            self._on_role_change(role, term)
        self.changed()

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` (cheap, thread-safe: it runs on the tick thread) after every role
        change and every applied command: the agent loop's wake-up (ha/loop.py)."""
        self._watchers.append(callback)

    def changed(self) -> None:
        for callback in self._watchers:
            callback()

    # ------------------------------------------------------------ agent-facing API

    def submit(self, command: dict[str, Any],
               callback: Callable[[Result | None, int], None] | None = None) -> None:
        """Propose a command (non-blocking). callback(result, fail_reason) on the tick thread."""
        assert self._sync is not None
        self._sync.obj.apply(encode(command), callback=callback or (lambda r, e: None))

    def register_epoch(self, term: int) -> None:
        """As new leader, commit our epoch: once applied, every earlier entry is applied too.

        Proposed from pysyncobj's own thread, and only if this node still leads in `term`
        there: the agent's view is read from another thread, and a view taken while the node
        was being deposed (leader, yet already the next term) would register the successor's
        term in our name; pysyncobj forwards a follower's command to the leader, so that
        entry would be committed and the real leader of the term refused for ever (it would
        lead without ever claiming the VIPs). Should that happen anyway, the leader goes
        silent for a moment so that a new election, in a new term, ends it."""
        def done(result: Result | None, err: int) -> None:
            if result is not None and result.ok:
                self._epoch_term_applied = max(self._epoch_term_applied, term)
                log.info("leader_epoch %d applied: %s", term, result.detail)
            elif result is not None:
                log.warning("leader_epoch %d refused: %s", term, result.detail)
                s = self._sync
                if "already belongs" in result.detail and s is not None and s.is_leader() \
                        and s.term == term:
                    log.error("term %d is recorded for another node: going silent so that a new "
                              "election replaces this leadership", term)
                    self._silence_until = _now() + 2 * self.config.timing.election_max
            else:
                log.warning("leader_epoch %d not committed (pysyncobj reason %s)", term, err)

        def propose() -> None:
            s = self._sync
            if s is None or not s.is_leader() or s.term != term:
                log.info("leader_epoch %d not proposed: no longer the leader of that term", term)
                return
            # Won because the previous leader went silent (not handed over): the state
            # machine takes that server's backends out in this very entry (state.py).
            self.submit({"type": "leader_epoch", "term": term, "node": self.config.node_id,
                         "by_election": not self.won_by_transfer}, done)
        self.call_soon(propose)

    def transfer_leadership(self, to: str | None, done: Callable[[bool], None]) -> None:
        """Ask pysyncobj to hand leadership to `to` (member id) or the best follower."""
        target = self.config.member(to).raft_endpoint if to else None

        def run() -> None:
            assert self._sync is not None
            self._sync.transfer_leadership(target, lambda r, err: done(err == 0))
        self.call_soon(run)

    def retire(self) -> None:
        """The committed membership demoted or removed us: until this node stops, it never
        stands for election nor tells a leader about its term. The leader stopped sending to
        it once it left Raft's configuration, and a timer firing then would bump its term and
        depose the leader (CI: a demoted voter's election made the leader step down)."""
        self._retired = True

    def listener_up(self) -> bool | None:
        """Whether our Raft port listens (the transport binds it again when it breaks: issue
        15); None before start() and on a non-voter (a read-only node dials out and never
        listens: the guard loop said "NOT LISTENING" about it every 30 s). Any thread."""
        s = self._sync
        return None if s is None or self.readonly else s.listener_up()

    def lease_deadline(self) -> float:
        """The lease's end on the lease clock (hacluster.clock.now); -inf if none."""
        s = self._sync
        return self.lease_expiry if s is not None and s.is_leader() else float("-inf")

    def lease_ok_now(self) -> bool:
        """Cheap, current answer to "may this node hold VIPs": called right before syscalls."""
        s = self._sync
        return s is not None and s.is_leader() and _now() < self.lease_expiry

    @property
    def state(self) -> ReplicatedState:
        assert self._sync is not None
        return self._sync.obj._state

    def view(self) -> ConsensusView:
        return consensus_view(self)

