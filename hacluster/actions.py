"""Admin actions (drain, undrain, weight): validated here, committed as replicated flags.

Any member takes them: pysyncobj forwards a follower's command to the leader. Each waits for
the commit (bounded) so that the operator's command returns only once the cluster agreed,
and retries a compare-and-set lost to a concurrent change (health or table commits bump the
generation all the time). The leader's table step then turns the flags into a new table.
"""

from __future__ import annotations

import threading
from typing import Any

from hacluster.config import Config
from hacluster.dataplane.build import backend_id
from hacluster.errors import Refusal, Refused
from hacluster.model import MAINTENANCE_FLAG, draining_flag, maintenance_on

COMMIT_WAIT_S = 2.0
CAS_TRIES = 5


class AdminActions:
    def __init__(self, config: Config, raft: Any):
        self.config = config
        self.raft = raft

    # ------------------------------------------------------------------ actions

    def drain(self, target: str, undo: bool, disable: bool) -> tuple[str, int]:
        members = {m.id for m in self.config.members}
        if target in members:
            if disable:
                raise Refused("--disable applies to one backend (SERVICE/BACKEND), "
                              "not to a whole server")
            return self._flag(draining_flag(target), None if undo else "true",
                              f"server {target} {'back in service' if undo else 'draining'}")
        service, sep, backend = target.partition("/")
        if not sep:
            raise Refused(f"{target!r} is neither a member ({', '.join(sorted(members))}) "
                          "nor SERVICE/BACKEND")
        self._check_backend(service, backend)
        state = None if undo else ("disabled" if disable else "draining")
        return self._flag(f"backend/{service}/{backend}", state,
                          f"backend {target} {state or 'back in service'}")

    def weight(self, service: str, backend: str, weight: int) -> tuple[str, int]:
        if not 0 <= weight <= 1000:
            raise Refused(f"weight must be 1-1000 (0 restores the configured one), "
                          f"got {weight}")
        self._check_backend(service, backend)
        return self._flag(f"weight/{service}/{backend}", str(weight) if weight else None,
                          f"backend {service}/{backend} weight "
                          f"{weight if weight else 'back to the configured one'}")

    def maintenance(self, on: bool) -> tuple[str, int]:
        return self._flag(MAINTENANCE_FLAG, "true" if on else None,
                          "maintenance mode ON: table frozen, no automatic handoff; health still "
                          "reported" if on else "maintenance mode off: the table follows health again")

    # ------------------------------------------------------------------ internals

    def _check_backend(self, service: str, backend: str) -> None:
        svc = next((s for s in self.config.services if s.name == service), None)
        if svc is None:
            raise Refused(f"no service {service!r} (services: "
                          f"{', '.join(s.name for s in self.config.services) or 'none'})",
                          Refusal.NOT_FOUND)
        ids = [backend_id(b, svc.backend_port) for b in svc.backends]
        if backend not in ids:
            raise Refused(f"service {service} has no backend {backend!r} (backends: "
                          f"{', '.join(ids)})", Refusal.NOT_FOUND)

    def _flag(self, name: str, value: str | None, words: str) -> tuple[str, int]:
        view = self.raft.view()
        if not view.has_quorum and view.leader is None:
            raise Refused("no leader with a quorum: the cluster cannot agree on a change "
                          "now (hacluster status shows why)", Refusal.PRECONDITION)
        if name != MAINTENANCE_FLAG and maintenance_on(self.raft.state.flags):
            words += (" -- MAINTENANCE is on: the balancing table stays frozen until "
                      "`hacluster maintenance off`")
        for _ in range(CAS_TRIES):
            state = self.raft.state
            if state.flags.get(name) == value:
                return f"{words} (already so)", state.generation
            result = self._commit({"type": "set_flag", "name": name, "value": value,
                                   "expect_generation": state.generation})
            if result.ok:
                return words, result.generation
            if "stale generation" not in result.detail:
                raise Refused(f"refused: {result.detail}", Refusal.PRECONDITION)
        raise Refused("the cluster state kept changing; try again",
                      Refusal.ABORTED)

    def _commit(self, command: dict[str, Any]) -> Any:
        done = threading.Event()
        box: list[Any] = []

        def callback(result: Any, err: int) -> None:
            box.append((result, err))
            done.set()

        self.raft.submit(command, callback)
        if not done.wait(COMMIT_WAIT_S):
            raise Refused(f"not confirmed within {COMMIT_WAIT_S:g} s: the OUTCOME IS UNKNOWN "
                          "(it may still be applied; check `hacluster status` before "
                          "retrying, which is safe)", Refusal.ABORTED)
        if box[0][0] is None:
            raise Refused(f"not committed (pysyncobj reason {box[0][1]}): is there a leader "
                          "with a quorum?", Refusal.PRECONDITION)
        return box[0][0]
