"""An in-memory HostOps for unit tests: same methods, no host effects, full call log."""

from __future__ import annotations

from dataclasses import dataclass, field

from hacluster import clock
from hacluster.model import Vip


@dataclass
class FakeHostOps:
    """Records every call; `answering` lists VIPs for which another host answers probes."""

    present: dict[str, float] = field(default_factory=dict)  # address -> lifetime set
    answering: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_claims: bool = False

    def vip_present(self, vip: Vip) -> bool:
        return vip.address in self.present

    def claim_vip(self, vip: Vip, lifetime_s: float, guard=None) -> bool:
        if guard is not None and clock.now() >= guard():
            self.calls.append(("fenced", vip.address))
            return False
        if self.fail_claims:
            from hacluster.hostops.base import HostOpsError

            raise HostOpsError(f"claim {vip}: injected failure")
        self.calls.append(("claim", vip.address))
        self.present[vip.address] = lifetime_s
        return True

    def release_vip(self, vip: Vip) -> None:
        self.calls.append(("release", vip.address))
        self.present.pop(vip.address, None)

    def probe(self, vip: Vip, timeout_s: float) -> bool:
        self.calls.append(("probe", vip.address))
        return vip.address in self.answering

    def announce(self, vip: Vip) -> None:
        self.calls.append(("announce", vip.address))

    def close(self) -> None:
        self.calls.append(("close", ""))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)
