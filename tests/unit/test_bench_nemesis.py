"""bench/nemesis.py's figures from the holder monitor's timeline (pure; no lab)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import _nemesis

    yield _nemesis.holder_figures
    for name in ("_nemesis", "_labkit"):
        sys.modules.pop(name, None)


def tl(*events: tuple[float, str]) -> list[tuple[float, frozenset[str]]]:
    return [(t, frozenset(h for h in holders.split(",") if h)) for t, holders in events]


def test_a_failover_is_one_no_holder_span_and_one_move(figures) -> None:
    f = figures(tl((0.0, "n1"), (10.5, ""), (10.8, "n2")), start=10.0, end=20.0)
    assert f["longest_no_holder_ms"] == pytest.approx(300.0)
    assert f["two_holders_ms"] == 0
    assert f["moves"] == 1
    assert f["holder_at_start"] == ["n1"]
    assert f["transitions_ms"] == [[500, "n1", False], [800, "n2", True]]


def test_two_holders_are_summed_and_the_longest_gap_wins(figures) -> None:
    f = figures(tl((0.0, "n1"), (1.0, "n1,n2"), (1.002, "n2"), (2.0, ""), (2.1, "n2"),
                   (3.0, ""), (3.5, "n3")), start=0.5, end=4.0)
    assert f["two_holders_ms"] == pytest.approx(2.0)
    assert f["longest_no_holder_ms"] == pytest.approx(500.0)
    assert f["no_holder_spans"] == 2
    assert f["moves"] == 2  # n2, then n3; n2's release and re-claim is no move


def test_no_holder_until_the_end_is_counted_to_the_end(figures) -> None:
    f = figures(tl((0.0, "n1"), (1.0, "")), start=0.0, end=13.0)
    assert f["longest_no_holder_ms"] == pytest.approx(12000.0)
    assert f["no_holder_at_end"] is True
    assert f["moves"] == 0
