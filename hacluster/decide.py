"""The pure heart of the tick: given one snapshot of the world, what should this node do?

No I/O and no clock here: `now` is in the snapshot. The agent turns the returned actions
into host operations. The rules, for each VIP:

* A node may hold a VIP only while it is leader, its lease holds (a majority acknowledged a
  heartbeat sent within L), its epoch entry for this term is applied (so it acts on a
  complete state, DESIGN.md §3.7), and no handoff is under way. Otherwise: release.
* Holding: renew the kernel lifetime every tick (this also restores an address that
  someone removed), and send the gratuitous ARP burst after a claim or a partition heal.
* Not yet holding: probe first (ARP, RFC 5227) unless leadership came by graceful transfer,
  whose old holder released before it handed over. The probe-then-claim step itself lives
  in the agent, because it must re-check the lease after the probe's wait.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hacluster.model import Role, Snapshot, Vip

# Gratuitous ARP offsets after a claim (s): the first at once, the repeats cover a lost frame.
ANNOUNCE_OFFSETS = (0.0, 0.05, 0.2, 1.0)


class Act(enum.StrEnum):
    REGISTER_EPOCH = "register_epoch"
    CLAIM = "claim"  # probe (unless skip_probe), then add with lifetime and announce
    RENEW = "renew"
    ANNOUNCE = "announce"
    RELEASE = "release"


@dataclass(frozen=True)
class Action:
    act: Act
    vip: Vip | None = None
    skip_probe: bool = False
    term: int = 0


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    sentence: str


def may_hold(snap: Snapshot) -> tuple[bool, str]:
    """Whether this node may hold VIPs now, and if not, why (for the sentence)."""
    c = snap.consensus
    if snap.handoff:
        return False, "handing off"
    if c.role is not Role.LEADER:
        return False, ""
    if not c.lease_ok:
        return False, "lease lost"
    if not c.epoch_applied:
        return False, "waiting for epoch"
    return True, "lease ok"


def decide(snap: Snapshot, epoch_requested: int, announces_sent: dict[str, int]) -> Decision:
    c = snap.consensus
    ok, why = may_hold(snap)
    actions: list[Action] = []
    if c.role is Role.LEADER and not c.epoch_applied and epoch_requested < c.term:
        actions.append(Action(Act.REGISTER_EPOCH, term=c.term))
    held, claiming, released = [], [], []
    for vs in snap.vips:
        addr = vs.vip.address
        if not ok:
            if vs.present:
                actions.append(Action(Act.RELEASE, vs.vip))
                released.append(addr)
            continue
        claimed_at = snap.claimed_at.get(addr)
        if vs.present or claimed_at is not None:
            # Ours: renew (restores the address if something removed it), announce on schedule.
            actions.append(Action(Act.RENEW, vs.vip))
            held.append(addr)
            sent = announces_sent.get(addr, 0)
            start = claimed_at if claimed_at is not None else snap.now
            if sent < len(ANNOUNCE_OFFSETS) and snap.now >= start + ANNOUNCE_OFFSETS[sent]:
                actions.append(Action(Act.ANNOUNCE, vs.vip))
        else:
            actions.append(Action(Act.CLAIM, vs.vip, skip_probe=c.won_by_transfer))
            claiming.append(addr)
    return Decision(tuple(actions), _sentence(snap, why, held, claiming, released))


def _sentence(snap: Snapshot, why: str, held: list[str], claiming: list[str],
              released: list[str]) -> str:
    c = snap.consensus
    if c.role is Role.LEADER:
        parts = [f"leader, term {c.term}", why]
    elif c.role is Role.FOLLOWER:
        parts = [f"follower of {c.leader}" if c.leader else "follower, no leader",
                 f"term {c.term}"]
        if why:
            parts.append(why)
    else:
        parts = [c.role.value, f"term {c.term}"]
    if held:
        parts.append("holds " + ", ".join(held))
    if claiming:
        parts.append("claiming " + ", ".join(claiming))
    if released:
        parts.append("releasing " + ", ".join(released))
    if not held and not claiming and not released:
        parts.append("holds no VIP")
    if snap.maintenance:
        parts.append("MAINTENANCE")
    return ", ".join(p for p in parts if p)
