"""What the agent may ask of Raft: the `Consensus` protocol, with its threading contract.

raft.RaftNode implements it on pysyncobj; the agent's unit tests use a fake with the same
methods. The agent never reaches past it (no pysyncobj object, no seam).

Two threads meet here. The *agent's thread* runs the tick loop and the admin calls and may
call every method below. *pysyncobj's tick thread* runs Raft: the replicated state machine,
and every callback handed over here (`submit`'s callback, `transfer_leadership`'s done).
Callbacks therefore must not block, must not wait for Raft, and should hand real work back
to the agent's loop. Readers return values written by the tick thread one field at a time:
each is current when read, but two reads (or the fields of one view) may straddle a change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hacluster.consensus.state import ReplicatedState, Result
from hacluster.model import ConsensusView


class Consensus(Protocol):
    """Leadership, lease and the replicated state, as the agent loop sees them."""

    silent_before_leading: float | None
    """Seconds no leader had been heard when this node last won (the outage seen here);
    None until it first leads. Written on the tick thread."""

    def start(self) -> None:
        """Start Raft (and pysyncobj's tick thread). Once, from the agent's start-up."""

    def stop(self) -> None:
        """Stop Raft: pysyncobj's tick thread ends and its port closes shortly after."""

    @property
    def state(self) -> ReplicatedState:
        """The replicated state as applied here. Read-only for the agent: only committed
        commands change it, on the tick thread, so it may change between two reads."""

    def view(self) -> ConsensusView:
        """This node's role, term, leader, lease and peer links, now. Any thread; cheap.

        Its fields are read one by one: a view taken while the node is being deposed can say
        "leader" with the next term. Decisions that must not act on such a tear re-check on
        the tick thread (register_epoch) or right before acting (lease_ok_now)."""

    def register_epoch(self, term: int) -> None:
        """As the new leader of `term`, propose our leader epoch. Any thread; returns at once.

        The proposal is made on the tick thread, and only if this node still leads in `term`
        there. view().epoch_applied turns True once it is applied (every earlier entry is
        then applied too: the table the leader acts on is complete). Unless leadership came
        by a graceful transfer, the entry is marked `by_election`: applying it takes the
        previous epoch owner's backends out of the table (state.py, "suspect by election")."""

    def submit(self, command: dict[str, Any],
               callback: Callable[[Result | None, int], None] | None = None) -> None:
        """Propose a command (state.py's format). Any thread; never blocks.

        callback(result, fail_reason) runs on the tick thread: result is the state machine's
        answer once committed and applied, or None with pysyncobj's fail reason. A command
        reported as failed (e.g. a timeout) may still be applied later: commands must be
        idempotent or compare-and-set on the generation."""

    def transfer_leadership(self, to: str | None, done: Callable[[bool], None]) -> None:
        """Leader: hand leadership to member `to` (or the best follower). Any thread.

        done(ok) runs on the tick thread; True means the target was told to stand now, not
        that it won: watch view().role. Release the VIPs before calling (the target claims
        without waiting)."""

    def caught_up(self, member: str, index: int | None = None) -> bool:
        """Leader: `member` holds every entry of our log (only such a target can win a
        transfer), or every entry up to `index`. Any thread; False when not leader or when
        the answer is in flux."""

    def lease_deadline(self) -> float:
        """Until when this node may act as VIP holder, on hacluster.clock.now; -inf when it
        does not lead. Any thread; hostops compares it at the last moment before a claim."""

    def lease_ok_now(self) -> bool:
        """Leader with a live lease, now. Any thread; cheap enough to call before each
        syscall that adds or renews a VIP."""

    def agent_alive(self) -> None:
        """The agent's loop finished a tick (call it from the agent's thread, every tick).

        The watchdog: a leader whose loop stops calling this for raft.AGENT_STUCK_S stops
        sending heartbeats, so that the cluster elects a leader whose loop runs."""
