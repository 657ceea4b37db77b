"""An in-memory network for the gossip engine (memberlist's MockTransport, STYLE.md §3).

Delivery is synchronous: a ping calls the other engine's handle_ping on the caller's
thread and returns its Ack. Faults are per node (stopped), per one-way link (cut), per
message kind (dropped) and per one-way link delay: an answer whose round trip exceeds the
caller's timeout is lost (the request itself was still delivered, as on a real slow link).
Every call is counted per sender, and ping timeouts are recorded for assertions.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial

from hacluster.gossip.grpc_transport import PING_REQ_MAX_TIMEOUT_S
from hacluster.gossip.membership import GossipTiming, Membership, MemberView
from hacluster.gossip.types import Ack, GossipState, NodeRecord
from hacluster.model import NodeId
from tests.support.clock import FakeClock


def address(node: NodeId) -> str:
    return f"{node}.ward:7946"


class Network:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.engines: dict[NodeId, Membership] = {}
        self.down: set[NodeId] = set()
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.delays: dict[tuple[NodeId, NodeId], float] = {}
        self.dropped_kinds: set[str] = set()
        self.calls: Counter[tuple[NodeId, str]] = Counter()
        self.ping_timeouts: dict[NodeId, list[float]] = {}

    def transport(self, node: NodeId) -> FakeTransport:
        return FakeTransport(self, node)

    def add(self, engine: Membership, node: NodeId) -> None:
        self.engines[node] = engine

    # faults

    def stop(self, node: NodeId) -> None:
        self.down.add(node)

    def start(self, node: NodeId) -> None:
        self.down.discard(node)

    def cut_link(self, src: NodeId, dst: NodeId, both: bool = True) -> None:
        self.cut.add((src, dst))
        if both:
            self.cut.add((dst, src))

    def isolate_outbound(self, node: NodeId) -> None:
        """Nothing `node` sends gets out; it still hears everything."""
        for other in self.engines:
            if other != node:
                self.cut.add((node, other))

    def partition(self, *groups: Iterable[NodeId]) -> None:
        sides = [set(g) for g in groups]
        for i, a in enumerate(sides):
            for b in sides[i + 1:]:
                for x in a:
                    for y in b:
                        self.cut_link(x, y)

    def heal(self) -> None:
        self.cut.clear()
        self.delays.clear()
        self.dropped_kinds.clear()

    # plumbing

    def node_at(self, addr: str) -> NodeId:
        return addr.split(".", 1)[0]

    def delivers(self, src: NodeId, dst: NodeId, kind: str = "") -> bool:
        return (src not in self.down and dst not in self.down and (src, dst) not in self.cut
                and dst in self.engines and kind not in self.dropped_kinds)

    def answers(self, src: NodeId, dst: NodeId, timeout: float) -> bool:
        rtt = self.delays.get((src, dst), 0.0) + self.delays.get((dst, src), 0.0)
        return self.delivers(dst, src) and rtt <= timeout

    def count(self, node: NodeId, kind: str, n: int = 1) -> None:
        with self._lock:
            self.calls[(node, kind)] += n

    def sent(self, node: NodeId) -> int:
        with self._lock:
            return sum(v for (src, _), v in self.calls.items() if src == node)

    def total(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(v for (_, k), v in self.calls.items() if kind is None or k == kind)


class FakeTransport:
    def __init__(self, net: Network, node: NodeId) -> None:
        self.net = net
        self.node = node

    def ping(self, address: str, updates: tuple[NodeRecord, ...], timeout: float) -> Ack | None:
        self.net.count(self.node, "ping")
        with self.net._lock:
            self.net.ping_timeouts.setdefault(self.node, []).append(timeout)
        dst = self.net.node_at(address)
        if not self.net.delivers(self.node, dst, "ping"):
            return None
        ack = self.net.engines[dst].handle_ping(self.node, updates)
        return ack if self.net.answers(self.node, dst, timeout) else None

    def ping_req(self, vias: list[str], target: NodeId, target_address: str,
                 timeout: float) -> list[bool | None]:
        self.net.count(self.node, "ping_req", len(vias))
        out: list[bool | None] = []
        for via_address in vias:
            via = self.net.node_at(via_address)
            if not self.net.delivers(self.node, via, "ping_req"):
                out.append(None)
                continue
            # As GrpcTransport: the via gets 80% of our deadline, to have time to nack,
            # and never more than it accepts.
            acked = self.net.engines[via].handle_ping_req(
                self.node, target, target_address, min(timeout * 0.8, PING_REQ_MAX_TIMEOUT_S))
            out.append(acked if self.net.answers(self.node, via, timeout) else None)
        return out

    def gossip(self, address: str, updates: tuple[NodeRecord, ...]) -> None:
        self.net.count(self.node, "gossip")
        dst = self.net.node_at(address)
        if self.net.delivers(self.node, dst, "gossip"):
            self.net.engines[dst].handle_gossip(self.node, updates)

    def push_pull(self, address: str, records: tuple[NodeRecord, ...], join: bool,
                  timeout: float) -> tuple[NodeRecord, ...] | None:
        self.net.count(self.node, "push_pull")
        dst = self.net.node_at(address)
        if not self.net.delivers(self.node, dst, "push_pull"):
            return None
        theirs = self.net.engines[dst].handle_push_pull(self.node, records, join)
        return theirs if self.net.answers(self.node, dst, timeout) else None


class NullTransport:
    """Nobody ever answers; counts nothing. For single-engine tests."""

    def ping(self, address, updates, timeout):
        return None

    def ping_req(self, vias, target, target_address, timeout):
        return [None for _ in vias]

    def gossip(self, address, updates):
        return None

    def push_pull(self, address, records, join, timeout):
        return None


class Cluster:
    """n engines on one Network and one FakeClock; `round()` is one probe period."""

    def __init__(self, n: int, timing: GossipTiming = GossipTiming(), seed: int = 1,  # noqa: B008
                 gossips_per_round: int = 2) -> None:
        self.timing = timing
        self.clock = FakeClock()
        self.net = Network()
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.seed = seed
        self.gossips_per_round = gossips_per_round
        # (time, observer, node, old state, new state)
        self.changes: list[tuple[float, NodeId, NodeId, GossipState | None, GossipState]] = []
        self.engines: dict[NodeId, Membership] = {}
        for node in self.ids:
            self.restart(node)

    def restart(self, node: NodeId, rng_salt: int = 0) -> Membership:
        """A fresh engine for `node` (incarnation 0, meta unknown), as after a reboot."""
        index = self.ids.index(node)
        engine = Membership(node, address(node), {p: address(p) for p in self.ids if p != node},
                            self.net.transport(node), self.timing, self.clock,
                            random.Random(self.seed * 1000 + index + rng_salt), version="1.0",
                            on_change=partial(self._record, node))
        self.engines[node] = engine
        self.net.add(engine, node)
        return engine

    def _record(self, observer: NodeId, view: MemberView, old: GossipState | None) -> None:
        # Calls back into the engine: on_change must run outside the engine's lock.
        assert self.engines[observer].member(view.node) is not None
        self.changes.append((self.clock(), observer, view.node, old, view.state))

    def __getitem__(self, node: NodeId) -> Membership:
        return self.engines[node]

    def running(self) -> list[NodeId]:
        return [n for n in self.ids if n not in self.net.down]

    def round(self, probe: bool = True, gossip: bool = True, push_pull: bool = False,
              reconnect: bool = False) -> None:
        for node in self.running():
            engine = self.engines[node]
            if probe:
                engine.probe_once()
            for _ in range(self.gossips_per_round if gossip else 0):
                engine.gossip_once()
            if push_pull:
                engine.push_pull_once()
            if reconnect:
                engine.reconnect_once()
        for node in self.running():
            self.engines[node].expire_suspicions()
        self.clock.advance(self.timing.probe_interval)

    def run_until(self, cond: Callable[[], bool], max_rounds: int, **kw) -> int:
        for rounds in range(max_rounds + 1):
            if cond():
                return rounds
            self.round(**kw)
        raise AssertionError(f"condition not met within {max_rounds} rounds:\n{self.describe()}")

    def state(self, observer: NodeId, node: NodeId) -> GossipState:
        view = self.engines[observer].member(node)
        assert view is not None
        return view.state

    def all_see(self, node: NodeId, state: GossipState, observers: Iterable[NodeId] | None = None) -> bool:
        watchers = [o for o in (observers or self.running()) if o != node]
        return all(self.state(o, node) is state for o in watchers)

    def all_alive(self) -> bool:
        live = self.running()
        return all(self.state(o, n) is GossipState.ALIVE for o in live for n in live)

    def states_seen(self, node: NodeId) -> set[GossipState]:
        return {new for _, _, n, _, new in self.changes if n == node}

    def describe(self) -> str:
        lines = []
        for o in self.ids:
            row = " ".join(f"{v.node}:{v.state.value[0]}{v.incarnation}" for v in self.engines[o].members())
            lines.append(f"  {o} ({'down' if o in self.net.down else 'up'}): {row}")
        return "\n".join(lines)

