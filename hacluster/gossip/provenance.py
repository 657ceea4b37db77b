"""Who may say what about whom in gossip (issue 15, finding 5). Pure: no clock, no I/O.

Every message has an authenticated sender: the member whose node certificate made the call
(grpc_transport.py checks that it names the `sender` field), the member we probed when it
is an ack, the member we push-pulled with (our channel checked that its certificate names
that member's address). A record about member X is X's *own word* when X sent it, and
*hearsay* otherwise. Records carry no signature, so hearsay cannot be told from forgery by
any member holding a valid certificate, and the rules are:

1. Only X states its meta (checks, draining flag, load, version) and its leave. Hearsay
   meta is dropped (and warned about when it differs from what X told us); a hearsay LEFT
   is the sender's claim that X is dead (suspect, in a push-pull), which X refutes if it
   lives and which the leader corroborates with Raft before it takes backends down
   (ha/verdicts.py), whereas LEFT takes them down at once. Likewise we pass on what we
   hold about others without their meta, and their leave as our claim that they are dead
   (`hearsay()`), and we tell every member our own news ourselves (membership.py: `told`;
   one gossip round reaches `gossip_nodes` members, so a change reaches all n members in
   about (n - 1) / gossip_nodes gossip intervals instead of an epidemic's log n).
2. Hearsay may raise X's incarnation at most HEARSAY_MARGIN above X's own latest word to
   us (`heard`; before we heard X itself, above what we hold). X raises its incarnation by
   one per refutation, and a relayed refutation may be a few refutations ahead of what X
   last told us directly; a claim further up is forged: refused and warned about.
3. X climbs at most HEARSAY_MARGIN above its own incarnation to refute a claim about
   itself. Climbing to any claim would let one forged "suspect at 2**61 - 1" drive X to
   INCARNATION_LIMIT, where nobody can suspect it any more. X ignores a claim beyond that
   reach and tells every member its own word instead, which rule 4 makes enough.
4. The reset rule: X's own word (ALIVE or LEFT) replaces what we hold when what we hold
   is not X's word: above it and not from X (hearsay, which rule 2 keeps within the
   margin), or more than HEARSAY_MARGIN above it although X said it (an earlier run of X,
   say one that climbed to the limit under an agent without these rules: after a restart
   X is back at incarnation 0 and its word replaces the old claim). Within one run X's
   incarnation only grows, so X's word below its own latest by at most the margin is a
   message overtaken by a newer one, and is ignored.

Together: nobody but X moves X's incarnation more than HEARSAY_MARGIN past X's own word, X
never climbs out of reach on another's word, and X recovers from any claim about it, one at
the limit included, by speaking for itself.
"""

from __future__ import annotations

import enum

from hacluster.gossip.precedence import ALIVE, DEAD, LEFT, LIVE, SUSPECT, Member
from hacluster.gossip.types import NodeRecord
from hacluster.model import NodeId

# Refutations X may be ahead of what it last told us, in a claim relayed by others; and
# how far X climbs above its own incarnation to refute a claim. An honest gap is the number
# of times X was suspected and refuted between two of its messages to us (within a probe
# pass); a bigger one only costs a later, direct refutation.
HEARSAY_MARGIN = 16


class Word(enum.Enum):
    """What X's own record does to what we hold about X."""

    ORDER = "order"  # SWIM's precedence decides, as for any claim
    RESET = "reset"  # replaces what we hold (rule 4)
    STALE = "stale"  # overtaken by a newer word of X: ignored


def own_word(held: int, heard: int | None, said: int) -> Word:
    """X says `said`; we hold `held` and last heard `heard` from X itself (None: never)."""
    if heard is None or said >= heard:
        return Word.RESET if said < held else Word.ORDER
    return Word.RESET if heard - said > HEARSAY_MARGIN else Word.STALE


def hearsay_too_far(held: int, heard: int | None, claimed: int) -> bool:
    """Rule 2: a claim about X from another than X, above X's own word plus the margin."""
    return claimed > (held if heard is None else heard) + HEARSAY_MARGIN


def out_of_reach(mine: int, claimed: int) -> bool:
    """Rule 3: a claim about us that we will not climb to refute."""
    return claimed > mine + HEARSAY_MARGIN


def newer_own_meta(current: NodeRecord, incoming: NodeRecord) -> bool:
    """X's own record at the alive incarnation we hold brings a meta that precedence() would
    not take: same meta_seq, different meta. X never sends two metas under one meta_seq in
    a run, so what we hold came with a relayed record (taken with meta_seq 0 and the meta of
    X's earlier incarnation, or run): X's word wins."""
    return (incoming.state is ALIVE and current.state in LIVE and incoming.meta is not None
            and incoming.incarnation == current.incarnation
            and incoming.meta_seq == current.meta_seq and incoming.meta != current.meta)


def as_claim(record: NodeRecord, sender: NodeId, full_state: bool) -> NodeRecord:
    """Hearsay as we take it (rule 1): without meta; a LEFT as the sender's claim that the
    member is dead; and in a full state, which may be stale, dead only as suspect (as
    memberlist's mergeState: a live member then gets to refute it)."""
    state, origin = record.state, record.origin
    if state is LEFT:
        state, origin = DEAD, sender
    if full_state and state is DEAD:
        state = SUSPECT
    return NodeRecord(record.node, record.address, record.incarnation, state,
                      "" if state is ALIVE else origin)


def hearsay(member: Member, by: NodeId) -> NodeRecord:
    """What `by` passes on about another member (rule 1): never its meta, meta_seq 0 (so an
    agent without these rules keeps the meta it holds, as for any bare record), and its
    leave as `by`'s claim that it is dead."""
    if member.state is ALIVE:
        return NodeRecord(member.node, member.address, member.incarnation, ALIVE)
    if member.state is LEFT:
        return NodeRecord(member.node, member.address, member.incarnation, DEAD, by)
    return NodeRecord(member.node, member.address, member.incarnation, member.state, member.origin)
