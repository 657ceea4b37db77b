"""When the established flows of draining and disabled backends are cut."""

from dataclasses import replace

from hacluster.dataplane.table import (
    Algorithm,
    Backend,
    BackendState,
    Protocol,
    Service,
    Table,
    table_from_doc,
    table_to_doc,
)
from hacluster.dataplane.worker import DrainTimer
from tests.support.clock import FakeClock


def table(gen, **states):
    backends = tuple(Backend(n, f"10.0.0.{i}", 0, 1, BackendState(states.get(n, "active")))
                     for i, n in enumerate(("n1", "n2", "n3"), 11))
    return Table(gen, (Service("web", "10.0.0.100", Protocol.TCP, (80,), None, Algorithm.ROUND_ROBIN,
                               backends, drain_timeout_s=30),))


def test_draining_is_cut_after_the_timeout_disabled_at_once_each_once():
    clock = FakeClock(0.0)
    t = DrainTimer(clock)
    t.update(table(1, n2="draining", n3="disabled"))
    assert [b.id for _, b in t.due()] == ["n3"]
    assert t.due() == [] and t.next_in() == 30
    clock.advance(29)
    t.update(table(2, n2="draining", n3="disabled"))  # a new generation: the clock goes on
    assert t.due() == []
    clock.advance(1)
    assert [b.id for _, b in t.due()] == ["n2"] and t.due() == []
    assert t.next_in() == float("inf")


def test_undrain_then_drain_again_starts_over():
    clock = FakeClock(0.0)
    t = DrainTimer(clock)
    t.update(table(1, n2="draining"))
    clock.advance(20)
    t.update(table(2))
    t.update(table(3, n2="draining"))
    clock.advance(20)
    assert t.due() == []  # 20 s into the new spell, not 40


def test_old_table_docs_without_drain_timeout_still_load():
    doc = table_to_doc(table(1))
    del doc["services"][0]["drain_timeout_s"]
    assert table_from_doc(doc) == replace(table(1), services=(replace(table(1).services[0],
                                                                      drain_timeout_s=300),))
