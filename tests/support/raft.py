"""A fake Raft behind the interface the agent is built on (DESIGN.md §1, STYLE.md §3), and
the consensus views it reports."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hacluster.consensus.state import ReplicatedState
from hacluster.model import ConsensusView, PeerLink, Role


def view(role=Role.FOLLOWER, term=1, lease_ok=False, epoch_applied=False, leader=None,
         won_by_transfer=False, peers=("n2", "n3"), connected=True, ack_age=0.02):
    return ConsensusView(
        role=role, term=term, leader=leader if leader else ("n1" if role is Role.LEADER else None),
        lease_ok=lease_ok, lease_remaining_s=0.2 if lease_ok else 0.0,
        epoch_applied=epoch_applied, won_by_transfer=won_by_transfer, has_quorum=lease_ok,
        commit_index=5, last_applied=5,
        peers=tuple(PeerLink(p, f"10.0.0.x:{p}", connected,
                             ack_age if role is Role.LEADER and connected else None)
                    for p in peers))


def leader_view(term=2, **kw):
    return view(role=Role.LEADER, term=term, lease_ok=True, epoch_applied=True, **kw)


@dataclass
class FakeRaft:
    current: ConsensusView = field(default_factory=view)
    state: ReplicatedState = field(default_factory=ReplicatedState)
    epochs: list[int] = field(default_factory=list)
    transfers: list[str | None] = field(default_factory=list)
    step_down_on_transfer: bool = True
    silent_before_leading: float | None = None
    caught_up_members: set[str] | None = None  # None: every member is caught up

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def clock_now(self) -> float:
        return 0.0

    def retire(self) -> None:
        self.retired = True

    def acked_since(self, member: str, since: float) -> bool:
        return self.caught_up_members is None or member in self.caught_up_members

    def caught_up(self, member: str, index: int | None = None) -> bool:
        return self.caught_up_members is None or member in self.caught_up_members

    def view(self) -> ConsensusView:
        return self.current

    def lease_ok_now(self) -> bool:
        v = self.view()
        return v.role is Role.LEADER and v.lease_ok

    def agent_alive(self) -> None:
        self.beats = getattr(self, "beats", 0) + 1

    def lease_deadline(self) -> float:
        return float("inf") if self.lease_ok_now() else float("-inf")

    def register_epoch(self, term: int) -> None:
        self.epochs.append(term)

    def submit(self, command, callback=None) -> None:
        """Commit at once through the real state machine, as a healthy Raft would."""
        from hacluster.consensus.state import encode
        self.submitted = getattr(self, "submitted", []) + [command]
        result = self.state.apply(encode(command))
        if callback is not None:
            callback(result, 0)

    def transfer_leadership(self, to, done) -> None:
        self.transfers.append(to)
        done(True)
        if self.step_down_on_transfer:
            self.current = replace(self.current, role=Role.FOLLOWER, lease_ok=False)
