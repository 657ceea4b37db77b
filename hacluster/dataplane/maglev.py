"""Maglev lookup-table population with weights (Eisenbud et al., NSDI'16, §3.4), pure.

Every node must compute the same table from the same backends, or a flow that moves to
another node (VIP failover, conntrack lost) lands on another backend. So:

- each backend's permutation (offset, skip) comes from SHA-256 of its id, never from
  Python's per-process salted `hash()`;
- backends take their turns in the order of their sorted ids, whatever order the caller
  passes them in: the slot -> backend *id* mapping depends only on the set of
  (id, weight) pairs and the size. The returned indices refer to the caller's order.

Weights: in every round each backend earns `weight` credits and claims one slot per
`max(weights)` credits it holds (the heaviest backend claims in every round, one of half
the weight every other round). Each claim is one slot, so after the table fills, each
backend holds its weight's share of the slots to within one slot.

Changing the backend set moves few slots (the paper's "minimal disruption"): removing one
of N backends reassigns its ~1/N of the slots and only a few percent of the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

DEFAULT_SIZE = 4093
# A protocol constant: every node (and every version of hacluster that may be mixed in a
# rolling upgrade) must derive the same permutations, so never change it.
_HASH_DOMAIN = b"hacluster-maglev-v1\0"


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def permutation(backend_id: str, size: int) -> tuple[int, int]:
    """(offset, skip) of a backend: its preference list is offset + j*skip (mod size).
    skip is in 1..size-1, and size is prime, so the list visits every slot once."""
    digest = hashlib.sha256(_HASH_DOMAIN + backend_id.encode()).digest()
    offset = int.from_bytes(digest[:8], "big") % size
    skip = int.from_bytes(digest[8:16], "big") % (size - 1) + 1
    return offset, skip


def maglev_table(backend_ids: Sequence[str], weights: Sequence[int], size: int = DEFAULT_SIZE) -> list[int]:
    """Slot -> index into `backend_ids` for every one of `size` slots (all filled).

    `size` must be prime and at least the number of backends; ids must be unique and
    weights positive. The result is independent of the input order up to the indexing
    (see the module docstring)."""
    n = len(backend_ids)
    if n == 0:
        raise ValueError("maglev_table needs at least one backend")
    if len(weights) != n:
        raise ValueError(f"{n} backend ids but {len(weights)} weights")
    if len(set(backend_ids)) != n:
        raise ValueError("backend ids must be unique")
    if any(w <= 0 for w in weights):
        raise ValueError(f"weights must be positive, got {list(weights)}")
    if not is_prime(size):
        raise ValueError(f"size must be prime, got {size}")
    if size < n:
        raise ValueError(f"size {size} is smaller than the number of backends ({n})")

    order = sorted(range(n), key=lambda i: backend_ids[i])
    perms = [permutation(backend_ids[i], size) for i in range(n)]
    top = max(weights)
    credit = [0] * n
    nxt = [0] * n  # how far along its preference list each backend is
    table = [-1] * size
    filled = 0
    while True:
        for i in order:
            credit[i] += weights[i]
            if credit[i] < top:
                continue  # not this backend's turn in this round
            credit[i] -= top
            offset, skip = perms[i]
            slot = (offset + nxt[i] * skip) % size
            while table[slot] >= 0:
                nxt[i] += 1
                slot = (offset + nxt[i] * skip) % size
            table[slot] = i
            nxt[i] += 1
            filled += 1
            if filled == size:
                return table
