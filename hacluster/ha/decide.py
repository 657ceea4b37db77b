"""The pure heart of the tick: given one snapshot of the world, what should this node do?

No I/O and no clock here: `now` and everything the loop remembers between ticks are in the
snapshot. Every rule about VIP ownership lives in this module, and so does every word of
the tick sentence; the loop (ha/loop.py) executes the actions through HostOps and never
decides anything itself. The rules, for each VIP:

* A node may hold a VIP only while it is leader, its lease holds (a majority acknowledged a
  heartbeat sent within L), its epoch entry for this term is applied (so it acts on a
  complete state, DESIGN.md §3.7), and no handoff is under way. Otherwise: release what the
  kernel has, and forget every claim (a later leadership starts with a probe).
* A new leader first asks for its epoch entry, and asks again when it is not applied after
  EPOCH_RETRY_S: pysyncobj drops a proposal made while leadership changes, and a leader
  whose epoch never applies would lead for ever without claiming.
* Holding: renew the kernel lifetime when a quarter of it has passed (Rules.renew_every_s)
  and at once when the kernel lacks the address (this restores one that someone removed or
  that expired), and send the gratuitous ARP burst (ANNOUNCE_OFFSETS) after a claim, and again
  when a peer that had stopped answering answers again (a healed partition may still map the
  VIP to an old holder's MAC), unless we only just started holding (the claim's burst covers
  it).
* Not yet holding: probe first (ARP, RFC 5227) unless leadership came by graceful transfer,
  whose old holder released before it handed over; but if this node itself released the
  address in this very term (its own failover timed out), whoever it was handed to may have
  claimed it unprobed, so probe after all.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from hacluster.model import ConsensusView, NodeId, Role, Vip

# Gratuitous ARP offsets after a claim (s): the first at once, the repeats cover a lost frame.
ANNOUNCE_OFFSETS = (0.0, 0.05, 0.2, 1.0)
EPOCH_RETRY_S = 0.5  # a leader's epoch entry not applied after this long is proposed again
STALL_SHOWN_S = 1.0  # a loop without a finished tick for this long is flagged in the status


class Act(enum.StrEnum):
    REGISTER_EPOCH = "register_epoch"
    CLAIM = "claim"  # probe (unless skip_probe), then add with lifetime and announce
    RENEW = "renew"
    ANNOUNCE = "announce"  # only for an address held: in the kernel, or secured by this tick's CLAIM/RENEW
    REANNOUNCE = "reannounce"  # restart the announce schedule (bookkeeping, no system call)
    RELEASE = "release"  # remove the address and forget the claim
    FORGET = "forget"  # forget a claim whose address the kernel no longer has (no system call)


@dataclass(frozen=True)
class Action:
    act: Act
    vip: Vip | None = None
    skip_probe: bool = False
    term: int = 0
    why: str = ""  # for the log: what made this action due


@dataclass(frozen=True)
class VipState:
    """What the agent currently knows about one VIP on this host."""

    vip: Vip
    present: bool  # the kernel holds the address on the interface right now


@dataclass(frozen=True)
class TableProgress:
    """The data plane's table generations, for the sentence (None: none applied yet)."""

    applied: int | None
    wanted: int | None


@dataclass(frozen=True)
class Snapshot:
    """Everything decide() may look at: one consistent picture of the world, plus what the
    loop remembers between ticks (claims, announces, releases, the epoch it asked for)."""

    now: float  # seconds on the agent's clock (hacluster.clock)
    node: NodeId
    consensus: ConsensusView
    vips: tuple[VipState, ...]
    handoff: bool  # a graceful handoff or a stop is under way: hold nothing
    maintenance: bool = False
    claimed_at: Mapping[str, float] = field(default_factory=dict)  # vip -> when we claimed it
    announces_sent: Mapping[str, int] = field(default_factory=dict)  # vip -> GARPs of its burst
    released_in_term: Mapping[str, int] = field(default_factory=dict)  # vip -> term we let it go
    epoch_asked: tuple[int, float] = (0, 0.0)  # (term, when) of our last epoch proposal
    peers_back: frozenset[NodeId] = frozenset()  # answering heartbeats again since last tick
    holding_since: float | None = None  # when this leadership started holding VIPs
    renewed_at: Mapping[str, float] = field(default_factory=dict)  # vip -> last claim/renewal
    table: TableProgress | None = None  # None: this node serves no balancing table


@dataclass(frozen=True)
class Rules:
    """The timings decide() applies (from the config)."""

    reannounce_settle_s: float = 0.35  # the election max: peers answering sooner after we
    # started holding are still catching up with our win, not back from a partition
    renew_every_s: float = 0.0  # renew a held VIP this long after the last renewal (0: every tick)


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


def decide(snap: Snapshot, rules: Rules = Rules()) -> Decision:
    ok, why = may_hold(snap)
    actions: list[Action] = list(_epoch(snap))
    held, claiming, released = [], [], []
    reannounce = _reannounce_reason(snap, rules) if ok else ""
    for vs in snap.vips:
        addr = vs.vip.address
        if not ok:
            if vs.present:
                actions.append(Action(Act.RELEASE, vs.vip))
                released.append(addr)
            elif addr in snap.claimed_at or addr in snap.announces_sent:
                actions.append(Action(Act.FORGET, vs.vip))
            continue
        claimed_at = snap.claimed_at.get(addr)
        if vs.present or claimed_at is not None:
            actions += _holding(snap, vs, claimed_at, reannounce, rules)
            held.append(addr)
        else:
            actions.append(Action(Act.CLAIM, vs.vip, skip_probe=_skip_probe(snap, addr)))
            claiming.append(addr)
    return Decision(tuple(actions), _sentence(snap, why, held, claiming, released))


def _epoch(snap: Snapshot) -> tuple[Action, ...]:
    c = snap.consensus
    if c.role is not Role.LEADER or c.epoch_applied:
        return ()
    asked_term, asked_at = snap.epoch_asked
    if asked_term < c.term:
        return (Action(Act.REGISTER_EPOCH, term=c.term),)
    if asked_term == c.term and snap.now - asked_at > EPOCH_RETRY_S:
        return (Action(Act.REGISTER_EPOCH, term=c.term,
                       why=f"leader epoch {c.term} not applied {snap.now - asked_at:.1f} s after "
                           "asking: asking again"),)
    return ()


def _skip_probe(snap: Snapshot, addr: str) -> bool:
    """Claim unprobed only after a graceful transfer, and only if we did not ourselves let
    this address go in this term (then whoever we handed it to may hold it, unprobed)."""
    c = snap.consensus
    return c.won_by_transfer and snap.released_in_term.get(addr) != c.term


def _reannounce_reason(snap: Snapshot, rules: Rules) -> str:
    if not snap.peers_back or snap.holding_since is None \
            or snap.now - snap.holding_since <= rules.reannounce_settle_s:
        return ""
    return f"peer(s) {', '.join(sorted(snap.peers_back))} reconnected"


def _holding(snap: Snapshot, vs: VipState, claimed_at: float | None, reannounce: str,
             rules: Rules) -> list[Action]:
    """Ours: renew when due (at once if the kernel lacks it), announce on schedule."""
    vip, out = vs.vip, []
    sent = snap.announces_sent.get(vip.address, 0)
    start = claimed_at if claimed_at is not None else snap.now
    if reannounce and claimed_at is not None:
        out.append(Action(Act.REANNOUNCE, vip, why=reannounce))
        sent, start = 0, snap.now
    renewed = snap.renewed_at.get(vip.address)
    if not vs.present or renewed is None or snap.now - renewed >= rules.renew_every_s:
        out.append(Action(Act.RENEW, vip))
    if sent < len(ANNOUNCE_OFFSETS) and snap.now >= start + ANNOUNCE_OFFSETS[sent]:
        out.append(Action(Act.ANNOUNCE, vip))
    return out


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
        parts.append("MAINTENANCE: table frozen, no automatic handoff")
    if snap.table is not None:
        parts.append(_table_words(snap.table))
    return ", ".join(p for p in parts if p)


def _table_words(t: TableProgress) -> str:
    words = f"table gen {t.applied if t.applied is not None else 'none'}"
    if t.wanted is not None and t.wanted != t.applied:
        words += f" (applying {t.wanted})"
    return words


def waiting_words(old_holder: NodeId | None, lifetime_s: float) -> str:
    """Why a claim waits: the address still answers ARP, so the old holder's kernel (a
    killed or frozen agent's) still has it, until its kernel lifetime ends (I1). Said in
    the tick sentence and, per VIP, by `hacluster status`. Constant while it lasts, so the
    sentence is logged once."""
    who = f"{old_holder}'s" if old_holder else "the old holder's"
    kernel = f"{old_holder}'s kernel" if old_holder else "its kernel"
    return f"waiting up to {lifetime_s:g} s for {who} address lifetime to end; {kernel} still answers"


def tick_sentence(decision: Decision, notes: list[str], error: str) -> str:
    """The tick's one line: the decision, then what execution ran into (a probe answered,
    the last host error)."""
    sentence = ", ".join([decision.sentence, *notes])
    return f"{sentence}, error: {error}" if error else sentence


def status_sentence(sentence: str, stalled_for_s: float) -> str:
    """The last tick's sentence as `hacluster status` shows it: flagged when the loop has
    not finished a tick for a while (its VIPs are then not renewed)."""
    if stalled_for_s > STALL_SHOWN_S:
        return f"{sentence} (AGENT LOOP STUCK for {stalled_for_s:.1f} s: VIPs are not renewed)"
    return sentence
