"""Maglev table population (hacluster/dataplane/maglev.py): pure, no kernel."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hacluster.dataplane.maglev import DEFAULT_SIZE, is_prime, maglev_table, permutation

ROOT = Path(__file__).resolve().parents[2]


def ids_of(table: list[int], ids: list[str]) -> list[str]:
    return [ids[i] for i in table]


def changed(a: list[str], b: list[str]) -> float:
    return sum(x != y for x, y in zip(a, b, strict=True)) / len(a)


def test_deterministic_and_every_slot_filled():
    ids = ["n1", "n2", "n3", "10.0.0.50:8080"]
    t1 = maglev_table(ids, [1, 2, 3, 4])
    t2 = maglev_table(ids, [1, 2, 3, 4])
    assert t1 == t2
    assert len(t1) == DEFAULT_SIZE
    assert set(t1) == {0, 1, 2, 3}
    assert all(0 <= i < len(ids) for i in t1)


def test_same_table_in_another_process_with_another_hash_seed():
    # Every node computes the table on its own: Python's salted hash() must play no part.
    code = ("import hashlib, json; from hacluster.dataplane.maglev import maglev_table; "
            "print(hashlib.sha256(json.dumps(maglev_table(['n1','n2','n3'], [1,2,3], 1021))"
            ".encode()).hexdigest())")
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.strip())
    assert len(outs) == 1


def test_pinned_permutation_and_table():
    # The permutations are a protocol constant: nodes of two versions in a rolling upgrade
    # must map flows alike. If this fails, you changed the hash; don't.
    assert permutation("n1", 251) == (139, 36)
    assert permutation("10.0.0.50:8080", 4093) == (3895, 3970)
    table = maglev_table(["n1", "n2", "n3"], [1, 1, 1], 251)
    digest = hashlib.sha256(bytes(table)).hexdigest()
    assert digest == PINNED_251


PINNED_251 = "41d85511c72131b02a2d8145eb5b1ff2e6c7fbd32a576827c9aa23e8278e3aab"


@pytest.mark.parametrize("weights", [[1, 1, 1], [1, 2, 3], [5, 1], [10, 20, 30, 40], [1] * 7,
                                     [1000, 1, 500], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3]])
def test_shares_follow_weights_within_2_percent(weights):
    ids = [f"b{i}" for i in range(len(weights))]
    table = maglev_table(ids, weights)
    counts = Counter(table)
    total = sum(weights)
    for i, w in enumerate(weights):
        share = counts[i] / len(table)
        assert abs(share - w / total) <= 0.02, (ids[i], share, w / total)


def test_shares_are_exact_to_about_one_slot():
    # Each turn claims exactly one slot, so shares are off by at most ~1 slot per backend.
    weights = [1, 2, 3]
    table = maglev_table(["a", "b", "c"], weights, 4093)
    counts = Counter(table)
    for i, w in enumerate(weights):
        assert abs(counts[i] - 4093 * w / 6) <= 2


@pytest.mark.parametrize("n", [3, 5, 10])
def test_minimal_disruption_on_remove(n):
    ids = [f"n{i}" for i in range(n)]
    before = ids_of(maglev_table(ids, [1] * n), ids)
    gone = ids[n // 2]
    rest = [i for i in ids if i != gone]
    after = ids_of(maglev_table(rest, [1] * (n - 1)), rest)
    # The removed backend's slots must move; the others should mostly stay.
    assert all(b != gone for b in after)
    moved_others = sum(x != y and x != gone for x, y in zip(before, after, strict=True)) / len(before)
    assert changed(before, after) <= 1 / n + 0.03
    assert moved_others <= 0.03


@pytest.mark.parametrize("n", [3, 5, 10])
def test_minimal_disruption_on_add(n):
    ids = [f"n{i}" for i in range(n)]
    before = ids_of(maglev_table(ids, [1] * n), ids)
    more = [*ids, "newcomer"]
    after = ids_of(maglev_table(more, [1] * (n + 1)), more)
    taken = sum(y == "newcomer" for y in after) / len(after)
    assert abs(taken - 1 / (n + 1)) <= 0.01
    # Slots that changed beyond those the newcomer took: the "small excess".
    assert changed(before, after) - taken <= 0.03


def test_input_order_does_not_matter():
    ids = ["n3", "n1", "10.0.0.50:80", "n2"]
    weights = {"n3": 1, "n1": 2, "10.0.0.50:80": 3, "n2": 1}
    ref = ids_of(maglev_table(ids, [weights[i] for i in ids], 1021), ids)
    rnd = random.Random(7)
    for _ in range(5):
        shuffled = ids[:]
        rnd.shuffle(shuffled)
        got = ids_of(maglev_table(shuffled, [weights[i] for i in shuffled], 1021), shuffled)
        assert got == ref


def test_weight_change_moves_few_slots():
    ids = ["n1", "n2", "n3", "n4"]
    before = ids_of(maglev_table(ids, [1, 1, 1, 1]), ids)
    after = ids_of(maglev_table(ids, [1, 1, 1, 2]), ids)
    # n4's share goes from 1/4 to 2/5: at least 15 % of the slots must move; not much more.
    assert 0.14 <= changed(before, after) <= 0.25


@pytest.mark.parametrize("args, message", [
    (([], []), "at least one"),
    ((["a"], [1, 2]), "weights"),
    ((["a", "a"], [1, 1]), "unique"),
    ((["a", "b"], [1, 0]), "positive"),
    ((["a"], [1], 1000), "prime"),
    ((["a", "b", "c"], [1, 1, 1], 2), "smaller"),
])
def test_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        maglev_table(*args)


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime(251) and is_prime(1021) and is_prime(4093) and is_prime(16381)
