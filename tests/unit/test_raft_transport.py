"""The Raft port under attack (issue 15, findings 1 and 2), on real pysyncobj nodes.

pysyncobj 0.3.17 alone buffers a frame of any announced length (up to 2 GiB) before any
authentication, on its single tick thread, for as long as bytes arrive; keeps idle strangers'
connections for ever; and closes its listener for good on one failed accept(). Each test
below reproduces one of those against real RaftNodes on 127.0.0.1 (the hardened transport,
hacluster/consensus/transport.py, wired in by pysyncobj_compat) and fails without the fix.

The figures the tests rely on are the transport's limits (transport.LIMITS), restated here
where a test states a bound, and checked against the module by the first test.

Every load loop is bounded in count and in time; every wait is for a condition with a
deadline; every node, socket and child process is closed at the end, even on failure.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hacluster.consensus import raft
from hacluster.consensus.raft import RaftNode
from hacluster.model import Role
from tests.support.net import LO, free_tcp_ports
from tests.support.wait import wait_until

from .test_raft_persistence import Cluster, commit

ROOT = Path(__file__).resolve().parents[2]
FAST = 0.02  # s between polls of a cheap condition (read in this process)
HANDSHAKE_S = 2.0  # transport.LIMITS.handshake_s: an unauthenticated connection lives that long
PER_SOURCE = 4  # transport.LIMITS.unauthenticated_per_source
TOTAL = 32  # transport.LIMITS.unauthenticated
TWO_GIB = 2**31 - 1


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Cluster]]:
    monkeypatch.setattr(raft, "AGENT_STUCK_S", float("inf"))  # no agent loop runs here
    made: list[Cluster] = []

    def build(size: int) -> Cluster:
        c = Cluster(tmp_path, size)
        made.append(c)
        for node_id in c.configs:
            c.start(node_id)
        return c

    yield build
    for c in made:
        c.stop_all()


def raft_port(c: Cluster, node_id: str) -> int:
    return c.configs[node_id].me.raft_port


def id_of(c: Cluster, node: RaftNode) -> str:
    return next(i for i, n in c.nodes.items() if n is node)


# ---------------------------------------------------------------- clients

def closed_by_peer(s: socket.socket) -> bool:
    """Whether the other end closed `s` (EOF or reset), without blocking."""
    try:
        ready, _, _ = select.select([s], [], [], 0)
        return bool(ready) and s.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def wait_closed(s: socket.socket, timeout: float) -> float | None:
    """Seconds until the peer closes `s` (polled every 10 ms), None if still open at timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if closed_by_peer(s):
            return time.monotonic() - start
        time.sleep(0.01)
    return None


def connect(port: int, source: str = LO) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(2)
    s.connect((LO, port))
    return s


@dataclass
class FloodStats:
    connections: int = 0
    sent: int = 0


def flood(ports: list[int], seconds: float,
          max_connections: int = 20_000) -> tuple[list[threading.Thread], FloodStats]:
    """One thread per port streaming a bogus 2 GiB frame at it, as fast as the peer takes
    it, reconnecting whenever it is closed: for `seconds`, at most `max_connections` in all."""
    stats = FloodStats()
    until = time.monotonic() + seconds
    chunk = b"\0" * 65536

    def run(port: int) -> None:
        while time.monotonic() < until and stats.connections < max_connections:
            try:
                with socket.create_connection((LO, port), timeout=0.5) as s:
                    stats.connections += 1
                    s.sendall(struct.pack("i", TWO_GIB))
                    while time.monotonic() < until:
                        s.sendall(chunk)
                        stats.sent += len(chunk)
            except OSError:
                time.sleep(0.001)

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in ports]
    for t in threads:
        t.start()
    return threads, stats


class TickGaps:
    """The longest time between two ticks of each node's pysyncobj thread (its hook
    before_tick runs first in every tick): a tick thread stuck reading shows here."""

    def __init__(self, nodes: dict[str, RaftNode]) -> None:
        self.longest = dict.fromkeys(nodes, 0.0)
        for node_id, node in nodes.items():
            self._wrap(node_id, node)

    def _wrap(self, node_id: str, node: RaftNode) -> None:
        original = node.before_tick
        last = [time.monotonic()]

        def before_tick() -> None:
            now = time.monotonic()
            self.longest[node_id] = max(self.longest[node_id], now - last[0])
            last[0] = now
            original()
        node.before_tick = before_tick  # type: ignore[method-assign]

    def reset(self) -> None:
        for k in self.longest:
            self.longest[k] = 0.0


# ---------------------------------------------------------------- finding 1: frames

def test_the_limits_restated_here_are_the_transports():
    from hacluster.consensus.transport import LIMITS
    assert (LIMITS.handshake_s, LIMITS.unauthenticated_per_source, LIMITS.unauthenticated) == \
        (HANDSHAKE_S, PER_SOURCE, TOTAL)
    assert LIMITS.handshake_frame < 64 * 1024 < LIMITS.frame < TWO_GIB


@pytest.mark.parametrize("length", [TWO_GIB, 1 << 20, -1, -TWO_GIB])
def test_a_bogus_frame_length_is_refused_and_the_connection_closed_at_once(cluster, length):
    """The length alone, no body: pysyncobj would wait for the body (2 GiB) for ever."""
    c = cluster(1)
    c.leader()
    with connect(raft_port(c, "n1")) as s:
        s.sendall(struct.pack("i", length))
        took = wait_closed(s, 5.0)
    assert took is not None, f"a frame of {length} bytes announced: connection still open after 5 s"
    assert took < 1.0, f"closed only after {took:.2f} s"


def test_an_endless_stream_at_every_raft_port_stalls_no_tick_and_moves_no_leader(cluster):
    """The flood of the security review, on three real nodes: the leader, its term and
    commits go on while every Raft port is streamed a bogus frame."""
    c = cluster(3)
    leader = c.leader()
    term = leader.view().term
    gaps = TickGaps(c.nodes)
    threads, stats = flood([raft_port(c, i) for i in c.nodes], seconds=4.0)
    latencies = []
    try:
        deadline = time.monotonic() + 4.0
        n = 0
        while time.monotonic() < deadline and n < 40:  # bounded: count and time
            n += 1
            start = time.monotonic()
            # the generation moves on with each flag: compare-and-set on the one we read
            commit(leader, {"type": "set_flag", "name": "maintenance", "value": f"n{1 + n % 3}",
                            "expect_generation": leader.state.generation})
            latencies.append(time.monotonic() - start)
            time.sleep(0.1)
    finally:
        for t in threads:
            t.join(10)
    print(f"flood: {stats.connections} connections, {stats.sent >> 20} MiB sent; commits "
          f"{len(latencies)}, slowest {max(latencies) * 1000:.0f} ms; longest tick gap per node "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in gaps.longest.items()))
    assert len(latencies) >= 10
    assert max(latencies) < 2.0
    assert all(n.view().role is not Role.CANDIDATE for n in c.nodes.values())
    assert leader.view().role is Role.LEADER and leader.view().term == term
    assert all(v < 1.0 for v in gaps.longest.values()), gaps.longest


# ---------------------------------------------------------------- finding 1: connections

def test_unauthenticated_connections_are_capped_per_source_oldest_first(cluster):
    c = cluster(1)
    c.leader()
    port = raft_port(c, "n1")
    socks = [connect(port) for _ in range(40)]  # all from 127.0.0.1, all silent
    try:
        def capped() -> bool:
            open_ = [not closed_by_peer(s) for s in socks]
            return not any(open_[:-PER_SOURCE]) and all(open_[-PER_SOURCE:])
        # well within the handshake deadline, which would close them all
        wait_until(capped, HANDSHAKE_S / 2, f"the {PER_SOURCE} newest of 40 left open", FAST)
    finally:
        for s in socks:
            s.close()


def test_unauthenticated_connections_are_capped_in_all(cluster):
    """From 12 loopback addresses, 4 each (within the per-source cap): 48 strangers."""
    c = cluster(1)
    c.leader()
    port = raft_port(c, "n1")
    socks = [connect(port, f"127.0.0.{2 + i % 12}") for i in range(48)]
    try:
        wait_until(lambda: sum(not closed_by_peer(s) for s in socks) <= TOTAL, HANDSHAKE_S / 2,
                   f"at most {TOTAL} of 48 left open", FAST)
        assert not any(closed_by_peer(s) for s in socks[-TOTAL // 2:])  # the newest stay
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("kind", ["silent", "trickle"])
def test_an_unauthenticated_connection_is_closed_at_its_handshake_deadline(cluster, kind):
    """Silent, or dripping a small frame a byte at a time (each byte would reset
    pysyncobj's own idle timeout): closed once the handshake deadline has passed."""
    c = cluster(1)
    c.leader()
    with connect(raft_port(c, "n1")) as s:
        start = time.monotonic()
        if kind == "trickle":
            s.sendall(struct.pack("i", 1000))
        while time.monotonic() - start < HANDSHAKE_S + 3.0 and not closed_by_peer(s):
            if kind == "trickle":
                try:
                    s.send(b"x")
                except OSError:
                    break
            time.sleep(0.2)
        took = time.monotonic() - start
        assert closed_by_peer(s), f"{kind} stranger still connected after {took:.1f} s"
    assert took >= HANDSHAKE_S - 0.5


def test_a_member_reconnects_while_strangers_keep_every_slot_taken(cluster):
    """The caps must not lock members out: strangers on the members' own address (loopback
    here) refill every slot, yet a restarted member gets in (the oldest stranger goes)."""
    c = cluster(3)
    leader = c.leader()
    # the member that the others dial (pysyncobj: the greater address dials the smaller)
    target = min(c.nodes, key=lambda i: c.configs[i].me.raft_endpoint)
    restarted = next(i for i in c.nodes if i != target and c.nodes[i] is not leader)
    port = raft_port(c, target)
    stop = threading.Event()
    opened = [0]

    def strangers() -> None:
        socks: list[socket.socket] = []
        until = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < until and opened[0] < 3000:
            for s in [s for s in socks if closed_by_peer(s)]:
                socks.remove(s)
                s.close()
            while len(socks) < 2 * PER_SOURCE and opened[0] < 3000:
                try:
                    socks.append(connect(port))
                    opened[0] += 1
                except OSError:
                    break
            time.sleep(0.005)
        for s in socks:
            s.close()

    t = threading.Thread(target=strangers, daemon=True)
    t.start()
    try:
        wait_until(lambda: opened[0] >= 2 * PER_SOURCE, 5, "strangers at the port", FAST)
        c.stop(restarted)
        node = c.start(restarted)

        def linked() -> bool:
            return any(p.id == target and p.connected for p in node.view().peers)
        wait_until(linked, 10, f"{restarted} connected to {target} again", FAST)
    finally:
        stop.set()
        t.join(10)
    print(f"strangers opened {opened[0]} connections meanwhile")


# ---------------------------------------------------------------- finding 2: the listener

_EMFILE_CHILD = r"""
import json, os, resource, sys, time
from hacluster.consensus.pysyncobj_compat import HookedSyncObj, SyncObjConf, SyncObjSeam, replicated

class Hooks:
    def before_tick(self): pass
    def on_message(self, node, message, deliver): deliver()
    def on_send(self, message): return message

class Counter(HookedSyncObj):
    def __init__(self, addr, others, conf):
        self.total = 0
        super().__init__(Hooks(), addr, others, conf, replicated_attrs=("total",))
    @replicated
    def add(self, n):
        self.total += n
        return self.total

me, peer, secret = sys.argv[1:4]
conf = SyncObjConf(password=secret, connectionRetryTime=0.05, appendEntriesPeriod=0.05,
                   raftMinTimeout=0.3, raftMaxTimeout=0.5, dynamicMembershipChange=False)
seam = SyncObjSeam(Counter(me, [peer], conf))
seam.obj.waitBinded()
print("ready", flush=True)
fillers = []
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "fill":  # every descriptor this process may still open, taken
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        while len(fillers) < 1000:
            try:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                break
        print("full", len(fillers), flush=True)
    elif cmd == "release":
        for fd in fillers:
            os.close(fd)
        fillers.clear()
        print("released", flush=True)
    elif cmd == "stats":
        stats = getattr(seam, "transport_stats", dict)()
        connected = any(seam.is_connected(n) for n in seam.other_nodes())
        print(json.dumps({"stats": stats, "connected": connected}), flush=True)
    elif cmd == "quit":
        break
seam.destroy()
"""


def _listeners(port: int) -> set[str]:
    """The inodes of the sockets listening on port (127.0.0.1 or the wildcard), per the kernel."""
    want = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return {row[9] for row in rows if row[1] in want and row[3] == "0A"}


def _listening(port: int) -> bool:
    return bool(_listeners(port))


class Child:
    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen([sys.executable, "-c", _EMFILE_CHILD, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def ask(self, command: str | None, expect: str, timeout: float = 10) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith(expect), f"child: {line!r} (wanted {expect!r}); stderr: {self.stderr()}"
        return line[len(expect):].strip()

    def stats(self) -> dict[str, Any]:
        return json.loads(self.ask("stats", ""))

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit", "", 2)
            except AssertionError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def test_emfile_on_accept_does_not_end_listening():
    """A member process out of descriptors (RLIMIT_NOFILE reached, as 58 idle connections did
    under `ulimit -n 64`) fails accept() with EMFILE; once descriptors are back, its Raft
    port must still listen and a member must get in. pysyncobj closed its listener at the
    first such error and never bound again."""
    child_port, peer_port = sorted(free_tcp_ports(2))
    # pysyncobj: the greater address dials; the peer (in this process) must dial the child
    child = Child([f"{LO}:{child_port}", f"{LO}:{peer_port}", "emfile-secret"])
    held: list[socket.socket] = []
    try:
        child.ask(None, "ready")
        assert _listening(child_port)
        child.ask("fill", "full")
        for _ in range(3):  # the kernel completes these; the child's accept() fails
            held.append(connect(child_port))

        def refused_at_least_once() -> bool:
            assert _listening(child_port), "the child closed its Raft listener"
            return child.stats()["stats"].get("accept_errors", 0) >= 1
        wait_until(refused_at_least_once, 5, "accept() to fail with EMFILE in the child", FAST)
        child.ask("release", "released")
        for s in held:
            s.close()
        # a real member on the greater address dials the child and must get in
        with _peer(f"{LO}:{peer_port}", f"{LO}:{child_port}", "emfile-secret") as peer:
            wait_until(lambda: peer.connected() and child.stats()["connected"], 10,
                       "the member and the child connected", 0.1)
        assert _listening(child_port)
    finally:
        for s in held:
            s.close()
        child.close()


class _peer:
    """A bare pysyncobj member in this process (hooks that let everything through)."""

    def __init__(self, me: str, other: str, secret: str) -> None:
        from hacluster.consensus.pysyncobj_compat import HookedSyncObj, SyncObjConf, SyncObjSeam

        class Hooks:
            def before_tick(self) -> None:
                pass

            def on_message(self, node: Any, message: dict[str, Any], deliver: Callable[[], None]) -> None:
                deliver()

            def on_send(self, message: dict[str, Any]) -> dict[str, Any]:
                return message

        conf = SyncObjConf(password=secret, connectionRetryTime=0.05, appendEntriesPeriod=0.05,
                           raftMinTimeout=0.3, raftMaxTimeout=0.5, dynamicMembershipChange=False)
        self.seam = SyncObjSeam(HookedSyncObj(Hooks(), me, [other], conf))

    def connected(self) -> bool:
        return any(self.seam.is_connected(n) for n in self.seam.other_nodes())

    def __enter__(self) -> _peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.seam.destroy()


def _listener_fd(port: int) -> int:
    """This process's descriptor of the socket listening on port."""
    inodes = _listeners(port)
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return int(name)
    raise AssertionError(f"no listener on port {port} in this process")


def test_a_broken_listener_is_bound_again(cluster):
    """The listening socket stops listening under the agent (shut down here; in the field a
    kernel error): pysyncobj unbound for good on the poll error. It must listen again, and a
    stranger's bogus frame is then accepted and refused like any other."""
    c = cluster(1)
    node = c.leader()
    port = raft_port(c, "n1")
    sock = socket.socket(fileno=_listener_fd(port))  # borrowed: detached, never closed here
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.detach()
    wait_until(lambda: not _listening(port) or node.listener_up() is False, 5, "the listener down", FAST)
    wait_until(lambda: _listening(port) and node.listener_up(), 10, "the listener bound again", FAST)
    with connect(port) as s:
        s.sendall(struct.pack("i", TWO_GIB))
        assert wait_closed(s, 5.0) is not None
    commit(node, {"type": "set_flag", "name": "maintenance", "value": "n1", "expect_generation":
                  node.state.generation})

