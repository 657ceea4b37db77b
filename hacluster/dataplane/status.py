"""The committed table plus this node's data plane, as `hacluster backends` shows it."""

from __future__ import annotations

from typing import Any

from hacluster.dataplane.table import Backend, table_from_doc
from hacluster.model import BackendsStatus, BackendStatus, ServiceStatus


def backends_status(node: str, state: Any, worker: Any) -> BackendsStatus:
    """state: the replicated state; worker: a DataplaneWorker or None."""
    table = table_from_doc(state.table) if state.table is not None else None
    counters: dict[str, tuple[int, int]] = {}
    if worker is not None:
        try:
            counters = worker.backend_counters()
        except Exception:  # noqa: BLE001 - counters are a nicety; the table still shows
            counters = {}

    def view(service: str, b: Backend) -> BackendStatus:
        packets, nbytes = counters.get(f"{service}/{b.id}", (None, None))
        return BackendStatus(b.id, b.address, b.port, b.weight, b.state.value, packets, nbytes)

    services = () if table is None else tuple(
        ServiceStatus(s.name, s.vip, s.protocol.value, s.ports, s.algorithm.value,
                      tuple(view(s.name, b) for b in s.backends),
                      None if s.fallback is None else view(s.name, s.fallback))
        for s in table.services)
    return BackendsStatus(node=node, table_generation=state.table_generation,
                          applied_generation=None if worker is None else worker.applied_generation(),
                          dataplane="none" if worker is None else worker.name, services=services)
