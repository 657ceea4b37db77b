"""A ConnSync for unit tests: records the order of its calls next to the host's."""

from __future__ import annotations

from dataclasses import dataclass, field

from hacluster.model import SyncState, SyncStatus


@dataclass
class FakeCommit:
    log: list[str]
    ok: bool = True
    finished: bool = True

    def done(self) -> bool:
        return self.finished

    def wait(self) -> bool:
        self.log.append("commit-wait")
        self.finished = True
        return self.ok


@dataclass
class FakeSync:
    """calls: "commit-begin", "commit-wait", "claimed", "released" in order. `log` may be
    shared with a FakeHostOps-like list to see the order against netlink calls."""

    calls: list[str] = field(default_factory=list)
    commit_ok: bool = True
    commit_finishes: bool = True
    state: SyncState = SyncState.OK
    commits: list[FakeCommit] = field(default_factory=list)  # every commit begun

    def status(self) -> SyncStatus:
        return SyncStatus(self.state, "fake")

    def begin_commit(self) -> FakeCommit:
        self.calls.append("commit-begin")
        self.commits.append(FakeCommit(self.calls, self.commit_ok, self.commit_finishes))
        return self.commits[-1]

    def claimed(self) -> None:
        self.calls.append("claimed")

    def released(self) -> None:
        self.calls.append("released")

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")
