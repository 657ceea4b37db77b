"""What the agent may ask of Raft (placeholder until the seam branch lands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hacluster.consensus.state import ReplicatedState, Result
from hacluster.model import ConsensusView


class Consensus(Protocol):
    silent_before_leading: float | None

    @property
    def state(self) -> ReplicatedState: ...

    def view(self) -> ConsensusView: ...

    def register_epoch(self, term: int) -> None: ...

    def submit(self, command: dict[str, Any],
               callback: Callable[[Result | None, int], None] | None = None) -> None: ...

    def transfer_leadership(self, to: str | None, done: Callable[[bool], None]) -> None: ...

    def caught_up(self, member: str) -> bool: ...

    def lease_deadline(self) -> float: ...

    def lease_ok_now(self) -> bool: ...

    def agent_alive(self) -> None: ...
