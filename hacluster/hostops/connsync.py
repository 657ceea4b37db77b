"""Connection-state sync: what the VIP executor asks of it around a claim and a release.

A VIP holder that balances with SNAT (docs/snat.md) keeps one conntrack entry per client
flow. If a standby's kernel has the same entries when it claims the VIP, those flows go on
through it; without them the backends answer the new holder with RST. conntrackd
(hostops/conntrackd.py) copies the holder's entries to every standby's *external cache*; the
claim commits that cache into the kernel before the address is added (I1's order: the state
first, then the address that pulls the traffic), and a release hands the flows back.

The executor calls these on the loop thread. The commit is begun before the claim's ARP probe
and waited for after it (the two overlap), at most the configured commit timeout from its
beginning: a claim is never held up longer than that. The rest is queued and done in the
background.
"""

from __future__ import annotations

from typing import Protocol

from hacluster.model import SyncState, SyncStatus


class Commit(Protocol):
    def done(self) -> bool:
        """It finished (or failed): wait() returns at once."""

    def wait(self) -> bool:
        """Wait at most the configured commit timeout, counted from its beginning. False
        when it did not finish in time or failed (the claim goes on: a late VIP is worse
        than flows that reconnect)."""


class ConnSync(Protocol):
    def status(self) -> SyncStatus:
        """What `hacluster status` shows: off / ok / down, and why."""

    def begin_commit(self) -> Commit:
        """Before the first VIP of a claim: start putting the synced flows into the kernel."""

    def claimed(self) -> None:
        """After the claim: start sending our own entries (background)."""

    def released(self) -> None:
        """After the last VIP is released: let the old entries age out and ask the new
        holder for its state (background)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class NoSync:
    """conntrack_sync: off (or auto without conntrackd): nothing to do, said in status."""

    def __init__(self, detail: str = "conntrack_sync: off"):
        self._status = SyncStatus(SyncState.OFF, detail)

    def status(self) -> SyncStatus:
        return self._status

    def begin_commit(self) -> Commit:
        return DONE

    def claimed(self) -> None:
        pass

    def released(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _Finished:
    def __init__(self, ok: bool):
        self._ok = ok

    def done(self) -> bool:
        return True

    def wait(self) -> bool:
        return self._ok


DONE: Commit = _Finished(True)  # nothing to commit
NOT_DONE: Commit = _Finished(False)  # could not even begin
