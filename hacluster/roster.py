"""Every member follows the committed membership (issue 16).

Membership lives in the replicated state (consensus/state.py: members_seed, member_set,
member_del); the config file only seeds a new cluster. The roster:

* seeds it: the first leader whose epoch is applied commits its config's members once;
* follows it: when the committed membership changes, it replaces `config.members` (the one
  Config every part reads, Config.update_live), writes `members.json` in the data directory
  (atomically, fsynced: a restart starts from the membership it last saw, not the file's),
  and tells the parts that keep their own copy (gossip, the gossip service's allow-list, the
  Raft port guard, the connection-sync pairs) through `listeners`;
* notices its own change: removed from the cluster, or promoted/demoted (pysyncobj fixes a
  node's voting role when it is built), and calls `on_self_change(why)`: the daemon then
  stops its loop and restarts the agent in the new role (or stays stopped when removed).
  A server that was never in a committed membership (just added, catching up on the log)
  passes over the older memberships without it: they are history, not its removal (CI: a
  new server applied the seed's membership first, and stopped).

It runs on its own thread, woken by Raft (RaftNode.on_change: a role change or an applied
command, the only ways members_generation can move); it still looks every POLL_S in case a
wake-up was missed, and every SEED_RETRY_S while the membership is not seeded yet (a leader's
seed may be lost with its term). An idle cluster thus costs it no wake-ups (issue 17).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hacluster.config import Config
from hacluster.model import Member, Role

log = logging.getLogger(__name__)

FILE = "members.json"
POLL_S = 10.0  # the safety look: Raft's wake-up (on_change) is what makes the roster follow
SEED_RETRY_S = 2.0

Listener = Callable[[tuple[Member, ...]], None]


def members_of(state_members: dict[str, dict[str, Any]]) -> tuple[Member, ...]:
    return tuple(Member(node, m["address"], m["raft_port"], m["grpc_port"], m["voter"])
                 for node, m in sorted(state_members.items()))


def records_of(members: Sequence[Member]) -> dict[str, dict[str, Any]]:
    return {m.id: {"address": m.address, "raft_port": m.raft_port, "grpc_port": m.grpc_port,
                   "voter": m.voter} for m in members}


def load(config: Config) -> str | None:
    """At start: the membership this member last saw committed, if any, replaces the file's.
    Returns a sentence for the log, None without a saved membership. Raises ValueError when
    this server is not in it (it was removed: it must be added again, not restart alone)."""
    path = config.data_dir / FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); move it away to start from the config "
                         "file's members") from None
    try:
        members = members_of(doc["members"])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a membership file ({e})") from None
    if config.node_id not in {m.id for m in members}:
        raise ValueError(f"this server ({config.node_id}) was removed from the cluster (see {path}); "
                         f"add it again with `hacluster members add {config.node_id} ADDRESS` on the "
                         f"cluster, then move {path} away and start it")
    config.update_live(members=members)
    return (f"membership from {path} (generation {doc.get('generation', '?')}): "
            f"{', '.join(m.id + ('' if m.voter else ' (non-voter)') for m in members)}")


def save(data_dir: Path, members: Sequence[Member], generation: int) -> None:
    path = data_dir / FILE
    tmp = path.with_suffix(".tmp")
    body = json.dumps({"generation": generation, "members": records_of(members)}, indent=1, sort_keys=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Roster:
    def __init__(self, config: Config, raft: Any, events: Any, listeners: Sequence[Listener] = (),
                 on_self_change: Callable[[str], None] | None = None):
        self.config = config
        self.raft = raft
        self.events = events
        self.listeners = list(listeners)
        self.on_self_change = on_self_change or (lambda _why: None)
        self._seen = -1
        self._seed_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        me = config.member(config.node_id)
        self._voter = me.voter if me is not None else True
        # in a committed membership already (load() refuses a saved one without this server)
        self._joined = (config.data_dir / FILE).exists()

    def start(self) -> None:
        on_change = getattr(self.raft, "on_change", None)
        if on_change is not None:
            on_change(self._wake.set)  # runs on Raft's tick thread: only sets the event
        self._thread = threading.Thread(target=self._run, name="roster", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the look: a change during it wakes the next wait
            try:
                self.check()
            except Exception:  # noqa: BLE001 - keep following; say it
                log.exception("membership: following the committed membership failed")
            self._wake.wait(SEED_RETRY_S if self._seen < 0 else POLL_S)

    def check(self, now: float | None = None) -> None:
        """One look at the committed membership (the thread calls it when Raft changed, and
        at least every POLL_S)."""
        import time

        state = self.raft.state
        generation = state.members_generation
        if generation == 0:
            self._seed(time.monotonic() if now is None else now)
            return
        if generation == self._seen:
            return
        members = members_of(state.members)
        self._seen = generation
        if not self._joined and self.config.node_id not in state.members:
            log.info("membership (generation %d) does not list this server yet: catching up on "
                     "the log", generation)
            return
        self._joined = True
        if members == tuple(sorted(self.config.members, key=lambda m: m.id)):
            save(self.config.data_dir, members, generation)
            return
        old = {m.id: m for m in self.config.members}
        new = {m.id: m for m in members}
        words = _changes(old, new)
        save(self.config.data_dir, members, generation)
        self.config.update_live(members=members)
        log.info("membership (generation %d): %s", generation, words)
        self.events.add("members", f"membership: {words}")
        for listener in self.listeners:
            try:
                listener(members)
            except Exception:  # noqa: BLE001 - one part failing must not stop the others
                log.exception("membership: a part could not follow the change")
        me = new.get(self.config.node_id)
        if me is None:
            self.on_self_change("this server was removed from the cluster")
        elif me.voter != self._voter:
            self.on_self_change(f"this server is now a {'voter' if me.voter else 'non-voter'}")

    def _seed(self, now: float) -> None:
        view = self.raft.view()
        if view.role is not Role.LEADER or not view.epoch_applied or now < self._seed_at:
            return
        self._seed_at = now + SEED_RETRY_S
        log.info("membership: committing the config's members as the cluster's (%s)",
                 ", ".join(m.id for m in self.config.members))
        self.raft.submit({"type": "members_seed", "members": records_of(self.config.members)})


def _changes(old: dict[str, Member], new: dict[str, Member]) -> str:
    parts = [f"{n} joined ({'voter' if new[n].voter else 'non-voter'}, {new[n].address})"
             for n in sorted(set(new) - set(old))]
    parts += [f"{n} left" for n in sorted(set(old) - set(new))]
    parts += [f"{n} is now a {'voter' if new[n].voter else 'non-voter'}"
              for n in sorted(set(old) & set(new)) if old[n].voter != new[n].voter]
    parts += [f"{n} moved to {new[n].address}" for n in sorted(set(old) & set(new))
              if old[n].address != new[n].address]
    return "; ".join(parts) or "unchanged"
