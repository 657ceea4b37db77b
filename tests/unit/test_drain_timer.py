"""When the established flows of draining and disabled backends are cut, and the dead
flows of backends that left the table or went down are forgotten."""

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
from hacluster.dataplane.worker import DataplaneWorker, DrainTimer, out_of_service
from tests.support.clock import FakeClock
from tests.support.wait import wait_until


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


def test_backends_that_leave_the_table_or_go_down_are_out_of_service_once():
    before = table(1, n3="draining")
    assert out_of_service(before, table(2, n3="draining")) == set()
    # n1 down, n3 gone (its server was removed): their dead flows' entries are to go
    gone = Table(3, (replace(before.services[0], backends=tuple(
        replace(b, state=BackendState.DOWN) if b.id == "n1" else b
        for b in before.services[0].backends if b.id != "n3")),))
    assert out_of_service(before, gone) == {("tcp", ("10.0.0.11", 0)), ("tcp", ("10.0.0.13", 0))}
    assert out_of_service(gone, gone) == set()  # down already: nothing new
    # the same address and port still served by another service: its flows are live
    other = replace(before.services[0], name="web2", vip="10.0.0.101")
    assert out_of_service(before, Table(4, (gone.services[0], other))) == set()


class StalePlane:
    def __init__(self) -> None:
        self.kernel: int | None = None
        self.forgotten: list[tuple[str, int | None, str]] = []

    def apply(self, table: Table) -> None:
        self.kernel = table.generation

    def applied_generation(self) -> int | None:
        return self.kernel

    def forget_stale(self, address: str, port: int | None, protocol: str) -> tuple[bool, str]:
        self.forgotten.append((address, port, protocol))
        return True, "forgotten"


def test_the_worker_forgets_the_dead_flows_of_a_backend_once_it_applied_a_table_without_it():
    plane = StalePlane()
    w = DataplaneWorker(plane, "fake")
    w.start()
    try:
        w.want(table(1))
        wait_until(lambda: w.applied_generation() == 1, 5, "generation 1 applied")
        assert plane.forgotten == []
        w.want(table(2, n2="down"))
        wait_until(lambda: w.applied_generation() == 2, 5, "generation 2 applied")
        wait_until(lambda: plane.forgotten, 5, "n2's dead flows forgotten")
        assert plane.forgotten == [("10.0.0.12", None, "tcp")]
    finally:
        w.stop()
