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
            detail, generation = self._flag(draining_flag(target), None if undo else "true",
                                            f"server {target} {'back in service' if undo else 'draining'}")
            return (detail if undo else detail + self._drained_leader_note(target)), generation
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

    def _drained_leader_note(self, node: str) -> str:
        """What happens to the VIPs when the drained server leads (ha/leader.py,
        _leave_if_drained): it keeps them for the services' longest drain_timeout_s, so
        that the flows through it finish, unless the operator moves them at once."""
        if self.raft.view().leader != node:
            return ""
        now = "; to move them now: hacluster failover --to NODE (or without --to: the best " \
              "eligible member)"
        if maintenance_on(self.raft.state.flags):
            return f"; {node} leads and keeps the VIPs: MAINTENANCE is on, so it does not hand " \
                   f"them over by itself{now}"
        grace = max((s.drain_timeout_s for s in self.config.services), default=0)
        if not grace:
            return f"; {node} leads: it hands leadership and the VIPs over within seconds{now}"
        return (f"; {node} leads and keeps the VIPs until drain_timeout_s ({grace} s) has passed, "
                f"so that the flows through it finish, then hands them over{now}")

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
