"""A committed table is validated before any of it becomes rule text (issue 15, finding 9):
names, addresses and ports; a table from Raft that fails is refused with an ERROR and the
last good generation stays in force."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import replace
from typing import Any

import pytest

from hacluster.dataplane import worker as worker_module
from hacluster.dataplane.apply import NftApplier
from hacluster.dataplane.render import render
from hacluster.dataplane.table import Table, table_from_doc, table_to_doc
from hacluster.dataplane.validate import table_errors
from hacluster.dataplane.worker import DataplaneWorker
from tests.support.wait import wait_until
from tests.unit.test_dataplane_render import CASES, SORRY, be, svc

INJECTED_NAME = 'web"; flush ruleset; add table ip x { #'


def committed(table: Table) -> Table:
    """The table as every member reads it from the Raft log (its JSON form)."""
    return table_from_doc(table_to_doc(table))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_golden_table_is_valid(name: str) -> None:
    assert table_errors(CASES[name]) == []


@pytest.mark.parametrize(("table", "where"), [
    (Table(2, (svc(INJECTED_NAME),)), "services[0].name"),
    (Table(2, (svc(vip="10.0.0.100 flush ruleset"),)), "services[0].vip"),
    (Table(2, (svc(vip="::1"),)), "services[0].vip"),
    (Table(2, (svc(backends=(be(1), replace(be(2), address="10.0.0.2; flush ruleset"))),)),
     "services[0].backends[1].address"),
    (Table(2, (svc(backends=(replace(be(1), address="010.0.0.1"),)),)), "services[0].backends[0].address"),
    (Table(2, (svc(backends=(replace(be(1), id="n1\" counter"),)),)), "services[0].backends[0].id"),
    (Table(2, (svc(ports=(80, 0)),)), "services[0].ports[1]"),
    (Table(2, (svc(ports=(70000,)),)), "services[0].ports[0]"),
    (Table(2, (svc(backend_port=-1),)), "services[0].backend_port"),
    (Table(2, (svc(backends=(be(1, weight=0),)),)), "services[0].backends[0].weight"),
    (Table(2, (svc(fallback=replace(SORRY, address="10.0.0.60 } }")),)), "services[0].fallback.address"),
    (Table(2, (svc(snat_address="10.0.0.101/24"),)), "services[0].snat_address"),
    (Table(2, (svc(), svc())), "services: two services share a name"),
])
def test_bad_names_addresses_and_ports_are_named(table: Table, where: str) -> None:
    errors = table_errors(committed(table))
    assert any(e.startswith(where) for e in errors), errors
    with pytest.raises(ValueError, match="refusing to render"):
        render(committed(table))


def test_the_applier_never_runs_nft_with_an_injected_name() -> None:
    calls: list[tuple[list[str], str | None]] = []

    def run(args: Any, stdin: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
        calls.append((list(args), stdin))
        return subprocess.CompletedProcess(list(args), 0, '{"nftables": []}', "")
    with pytest.raises(ValueError, match="services\\[0\\].name"):
        NftApplier(run=run).apply(committed(Table(2, (svc(INJECTED_NAME),))))
    assert not any("-f" in args for args, _ in calls)


class FakePlane:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.kernel: int | None = None

    def apply(self, table: Table) -> None:
        self.applied.append(table.generation)
        self.kernel = table.generation

    def applied_generation(self) -> int | None:
        return self.kernel


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(worker_module, "VERIFY_S", 0.05)  # compare with the kernel often
    plane = FakePlane()
    w = DataplaneWorker(plane, "fake")
    w.start()
    yield w, plane
    w.stop()


def test_a_committed_table_that_fails_validation_is_refused_and_the_last_good_stays(
        worker, caplog: pytest.LogCaptureFixture) -> None:
    w, plane = worker
    w.want(committed(Table(1, (svc(),))))
    wait_until(lambda: w.applied_generation() == 1, 5, "generation 1 applied")
    with caplog.at_level(logging.ERROR, "hacluster.dataplane"):
        w.want(committed(Table(2, (svc(INJECTED_NAME),))))
        wait_until(lambda: "refused" in w.last_error, 5, "generation 2 refused")
    assert plane.applied == [1] and w.applied_generation() == 1
    assert "generation 1 stays in force" in w.last_error and "services[0].name" in w.last_error
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR and "refused" in r.getMessage()]
    assert len(refusals) == 1, "refused once, not retried every second"
    # the kernel loses our table (a firewall reload): the last good one is put back
    plane.kernel = None
    wait_until(lambda: plane.applied == [1, 1], 5, "generation 1 re-applied")
    assert "refused" in w.last_error, "the refusal stands until a newer table"
    # a newer, good table goes in as usual
    w.want(committed(Table(3, (svc(backends=(be(1),)),))))
    wait_until(lambda: w.applied_generation() == 3, 5, "generation 3 applied")
    assert plane.applied == [1, 1, 3] and w.last_error == ""
