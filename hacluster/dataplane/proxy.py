"""The userspace fallback data plane: an asyncio TCP and UDP proxy (DESIGN.md §6).

Used where nftables, or the privileges to program it, are missing. It serves the same Table
with the same semantics as the kernel data plane:

- one listener per service port (VIP:port, tcp or udp; `bind_host` overrides the VIP);
- a new flow (a TCP connection; for UDP a client address:port, kept in a flow table until it
  has been idle for `udp_idle_timeout` s) gets a *serving* backend from the service's
  algorithm (select.py), else the fallback, else it is refused (TCP reset at once, UDP
  dropped) and counted. The choice follows the kernel's rules (algorithms.py): for
  source-hash and Maglev the same backend per flow as an nftables member, for round-robin
  and weighted the same shares;
- an established flow keeps its backend whatever later tables say (draining, down or
  disabled backends finish what they have, like conntrack entries in the kernel);
- the target port is the backend's, else the service's backend_port, else the port the
  client used (render.py's rule; build.py writes 0 for "none").

Differences from the kernel, inherent to a proxy: backends always see this node's address
(`snat: false` cannot be honoured); a TCP connection is accepted before a backend is
picked, so "refused" is a reset after the handshake rather than no handshake; and the proxy
terminates TCP, so a connection it carries lives in this process and cannot move to another
member with the VIP (nothing like conntrack state to sync): a failover to or from a proxy
member cuts every established TCP connection, even where the next member picks the same
backend. In exchange a backend that does not answer the connect within `connect_timeout` s
is skipped once for the next choice, which the kernel cannot do.

Threading: the proxy runs its own asyncio loop in its own thread, so the agent's tick never
waits for it. apply(), counters() and friends are called from other threads; apply() blocks
its caller (the DataplaneWorker thread) until the listeners are in place. All proxy state is
mutated on the proxy loop only.

Memory is bounded per flow: stream reads of at most CHUNK bytes with drain() backpressure
(a slow side pauses reading from the other), UDP datagrams are sent without queueing and
dropped when the socket buffer is full, as a router would. The sockets and the UDP flow
table live in proxy_sockets.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from hacluster.dataplane.algorithms import Slots
from hacluster.dataplane.proxy_sockets import (
    LISTEN_BACKLOG,
    ListenerKey,
    UdpFlow,
    UdpListener,
    bound_socket,
    fmt_key,
)
from hacluster.dataplane.select import Chooser, FlowKey, make_chooser, signature
from hacluster.dataplane.table import Backend, Protocol, Service, Table

log = logging.getLogger("hacluster.dataplane.proxy")

CHUNK = 64 * 1024  # one read; also the StreamReader limit, so a connection buffers ~3 of these
WARN_EVERY_S = 10.0  # at most one "backend does not answer" line per backend this often


class ProxyError(Exception):
    """A table could not be applied in full (a port could not be bound, a bad service)."""


@dataclass
class _Counter:
    packets: int = 0  # reads and datagrams, both directions
    bytes: int = 0  # both directions
    active: int = 0  # established TCP connections plus live UDP flows

    def add(self, n: int) -> None:
        self.packets += 1
        self.bytes += n


@dataclass(frozen=True)
class _Route:
    """What one listener serves in the current table."""

    service: Service
    port: int
    chooser: Chooser


@dataclass(eq=False)
class _TcpConn:
    reader: asyncio.StreamReader  # from the client
    client: asyncio.StreamWriter
    target: tuple[str, int] | None = None
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ended: bool = False  # both sides closed cleanly: their last bytes may still be in flight

    def abort(self) -> None:
        if self.ended:
            return  # abort() now would throw away data that close() is still flushing
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


def _target(route: _Route, backend: Backend) -> tuple[str, int]:
    return backend.address, backend.port or route.service.backend_port or route.port


def _matches(target: tuple[str, int] | None, address: str, port: int | None) -> bool:
    return target is not None and target[0] == address and (not port or target[1] == port)


class ProxyDataplane:
    """The userspace data plane; see the module docstring for its semantics."""

    def __init__(self, reason: str = "nftables is not available", bind_host: str | None = None,
                 connect_timeout: float = 2.0, udp_idle_timeout: float = 30.0,
                 max_tcp_connections: int = 4096, max_udp_flows: int = 4096,
                 apply_timeout: float = 10.0, clock: Callable[[], float] = time.monotonic):
        """reason: why the kernel data plane is not used (logged once at start).
        bind_host: listen there instead of on each service's VIP (tests: 127.0.0.1).
        max_*: beyond these, new flows are refused and counted; each TCP connection holds two
        file descriptors and each UDP flow one, so LimitNOFILE must leave room for them."""
        self.reason = reason
        self.bind_host = bind_host
        self.connect_timeout = connect_timeout
        self.udp_idle_timeout = udp_idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self.max_udp_flows = max_udp_flows
        self.apply_timeout = apply_timeout
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._generation: int | None = None
        self._routes: dict[ListenerKey, _Route] = {}
        self._choosers: dict[str, tuple[Slots, Chooser]] = {}
        self._tcp_servers: dict[ListenerKey, asyncio.Server] = {}
        self._udp_listeners: dict[ListenerKey, UdpListener] = {}
        self._conns: set[_TcpConn] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # Written on the proxy loop, read from other threads: new keys go in under the lock.
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._refused: dict[str, int] = {}
        self._warned: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name="dataplane-proxy",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        log.info("userspace proxy serving the balancing table because %s (backends see this node "
                 "as the client; connect timeout %.1f s, udp idle timeout %.0f s)", self.reason,
                 self.connect_timeout, self.udp_idle_timeout)

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        self._sweeper = loop.create_task(self._sweep_udp())
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every listener and every flow, then end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        log.info("userspace proxy stopped")

    async def _shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._routes = {}
        for server in self._tcp_servers.values():
            server.close()
        for udp in self._udp_listeners.values():
            udp.close()
        self._tcp_servers.clear()
        self._udp_listeners.clear()
        tasks = [t for c in self._conns for t in c.tasks]
        for c in list(self._conns):
            c.abort()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for _ in range(3):  # let the transports' connection_lost callbacks close their sockets
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ the table

    def apply(self, table: Table) -> None:
        """Serve `table` from now on: new flows follow it, established flows keep their
        backend, listeners open and close as services and ports change. Blocks until done;
        raises ProxyError when a listener could not be opened (the rest of the table is in
        force; applying again retries the missing listeners)."""
        future = asyncio.run_coroutine_threadsafe(self._apply(table), self._running_loop())
        try:
            future.result(self.apply_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ProxyError(f"table generation {table.generation}: not applied within "
                             f"{self.apply_timeout} s") from None

    def applied_generation(self) -> int | None:
        """The generation of the last table applied in full, or None."""
        return self._generation

    def flush_backend(self, address: str, port: int | None, protocol: Protocol | str) -> tuple[bool, str]:
        """Cut the established flows to address[:port] (after a drain timeout), as
        NftApplier.flush_backend does with conntrack."""
        proto = Protocol(protocol)
        future = asyncio.run_coroutine_threadsafe(self._flush(address, port, proto), self._running_loop())
        cut = future.result(self.apply_timeout)
        return True, f"{cut} {proto.value} flows to {address}{f':{port}' if port else ''} cut"

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("proxy not running: start() it first")
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking call from the proxy's own loop would deadlock")
        return loop

    async def _flush(self, address: str, port: int | None, proto: Protocol) -> int:
        cut = 0
        if proto is Protocol.TCP:
            for conn in [c for c in self._conns if _matches(c.target, address, port)]:
                conn.abort()
                cut += 1
        for udp in self._udp_listeners.values() if proto is Protocol.UDP else ():
            for flow in [f for f in udp.flows.values() if _matches(f.target, address, port)]:
                udp.drop_flow(flow)
                cut += 1
        return cut

    async def _apply(self, table: Table) -> None:
        errors: list[str] = []
        routes: dict[ListenerKey, _Route] = {}
        choosers: dict[str, tuple[Slots, Chooser]] = {}
        for svc in table.services:
            kept = self._choosers.get(svc.name)
            try:
                sig = signature(svc)
                chooser = kept[1] if kept is not None and kept[0] == sig else make_chooser(svc, sig)
            except Exception as e:  # noqa: BLE001 - one bad service must not block the others
                errors.append(f"service {svc.name}: {e}")
                continue
            choosers[svc.name] = (sig, chooser)
            for b in (*svc.backends, *((svc.fallback,) if svc.fallback else ())):
                self._counter(svc.name, b)  # every configured backend has one, serving or not
            for port in svc.ports:
                key = (svc.protocol, self.bind_host or svc.vip, port)
                if key in routes:
                    errors.append(f"service {svc.name}: {fmt_key(key)} already serves "
                                  f"{routes[key].service.name}")
                    continue
                routes[key] = _Route(svc, port, chooser)
        # The swap: every flow accepted from here on is placed by the new table; flows already
        # placed hold their own backend and are not touched.
        self._routes, self._choosers = routes, choosers
        opened, closed = await self._reconcile_listeners(routes, errors)
        if opened or closed:
            log.info("userspace proxy, table generation %d: %s", table.generation, "; ".join(
                x for x in (opened and "listening on " + ", ".join(opened),
                            closed and "closed " + ", ".join(closed)) if x))
        if errors:
            raise ProxyError(f"table generation {table.generation}: " + "; ".join(errors))
        self._generation = table.generation

    async def _reconcile_listeners(self, routes: dict[ListenerKey, _Route],
                                   errors: list[str]) -> tuple[list[str], list[str]]:
        opened: list[str] = []
        closed: list[str] = []
        for key in [k for k in self._tcp_servers if k not in routes]:
            self._tcp_servers.pop(key).close()  # accepted connections stay open
            closed.append(fmt_key(key))
        for key in [k for k in self._udp_listeners if k not in routes]:
            self._udp_listeners.pop(key).close()
            closed.append(fmt_key(key))
        for key in routes:
            if key in self._tcp_servers or key in self._udp_listeners:
                continue
            try:
                sock = bound_socket(key)
                if key[0] is Protocol.TCP:
                    self._tcp_servers[key] = await asyncio.start_server(
                        partial(self._on_tcp, key), sock=sock, limit=CHUNK, backlog=LISTEN_BACKLOG)
                else:
                    self._udp_listeners[key] = UdpListener(key, sock, self._udp_new_flow)
                opened.append(fmt_key(key))
            except OSError as e:
                errors.append(f"cannot listen on {fmt_key(key)}: {e.strerror or e}")
        return opened, closed

    # ------------------------------------------------------------------ observation

    def counters(self) -> dict[str, tuple[int, int]]:
        """'<service>/<backend id>' -> (packets, bytes), both directions, since start."""
        with self._lock:
            items = list(self._counters.items())
        return {f"{s}/{b}": (c.packets, c.bytes) for (s, b), c in items}

    def backend_counters(self) -> dict[str, tuple[int, int]]:
        """What DataplaneWorker.backend_counters() asks for: the same as counters()."""
        return self.counters()

    def active(self) -> dict[str, int]:
        """'<service>/<backend id>' -> established TCP connections plus live UDP flows; a
        draining backend is drained when it reaches 0."""
        with self._lock:
            items = list(self._counters.items())
        return {f"{s}/{b}": c.active for (s, b), c in items}

    def refused(self) -> dict[str, int]:
        """service -> new flows refused: no serving backend and no fallback, no backend
        answering the connect, or the flow limit reached."""
        with self._lock:
            return dict(self._refused)

    def listeners(self) -> list[str]:
        """What is bound now, as 'address:port/protocol'."""
        keys = list(self._tcp_servers) + list(self._udp_listeners)
        return sorted(fmt_key(k) for k in keys)

    def summary(self) -> str:
        """One sentence for the agent's status line."""
        act = sum(self.active().values())
        return (f"userspace proxy gen {self._generation}, {len(self.listeners())} listeners, "
                f"{act} flows, {sum(self.refused().values())} refused")

    def _counter(self, service: str, backend: Backend) -> _Counter:
        key = (service, backend.id)
        c = self._counters.get(key)
        if c is None:
            with self._lock:
                c = self._counters.setdefault(key, _Counter())
        return c

    def _refuse(self, service: str) -> None:
        with self._lock:
            self._refused[service] = self._refused.get(service, 0) + 1

    # ------------------------------------------------------------------ TCP

    async def _on_tcp(self, key: ListenerKey, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        route = self._routes.get(key)
        peer = writer.get_extra_info("peername")
        if route is None or peer is None:  # the listener is closing, or the client left already
            writer.transport.abort()
            return
        name = route.service.name
        if len(self._conns) >= self.max_tcp_connections:
            self._refuse(name)
            writer.transport.abort()
            return
        conn = _TcpConn(reader, writer)
        current = asyncio.current_task()
        if current is not None:
            conn.tasks.append(current)
        self._conns.add(conn)
        try:
            await self._serve(conn, route, FlowKey("tcp", peer[0], peer[1], route.service.vip, route.port))
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending normally matters on 3.11: asyncio's
            # StreamReaderProtocol callback calls task.exception() and logs a cancelled task
            # as an error.
            pass
        finally:
            self._conns.discard(conn)
            conn.abort()  # a refusal resets the client at once; a clean end is left to flush

    async def _serve(self, conn: _TcpConn, route: _Route, flow: FlowKey) -> None:
        placed = await self._connect(route, flow)
        if placed is None:
            self._refuse(route.service.name)
            return
        backend, up_reader, up_writer = placed
        conn.upstream, conn.target = up_writer, _target(route, backend)
        counter = self._counter(route.service.name, backend)
        counter.active += 1
        try:
            await self._splice(conn, up_reader, up_writer, counter)
        finally:
            counter.active -= 1

    async def _connect(self, route: _Route, flow: FlowKey) -> tuple[
            Backend, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The first choice, else the next choice once; the fallback only when the table has
        no serving backend at all (as in the kernel, which knows nothing of connects)."""
        backend = route.chooser.choose(flow)
        tries = 2
        if backend is None:
            backend, tries = route.service.fallback, 1
        tried: set[str] = set()
        while backend is not None and tries > 0:
            tries -= 1
            target = _target(route, backend)
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(*target, limit=CHUNK), self.connect_timeout)
                return backend, r, w
            except (OSError, TimeoutError) as e:
                self._warn_unreachable(route.service.name, backend, target, e)
            tried.add(backend.id)
            backend = route.chooser.choose(flow, frozenset(tried)) if tries else None
        return None

    def _warn_unreachable(self, service: str, backend: Backend, target: tuple[str, int],
                          e: BaseException) -> None:
        key = f"{service}/{backend.id}"
        now = self._clock()
        if now - self._warned.get(key, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[key] = now
            why = (f"no answer within {self.connect_timeout:.1f} s" if isinstance(e, TimeoutError)
                   else getattr(e, "strerror", None) or str(e))
            log.warning("userspace proxy: %s backend %s at %s:%d does not accept connections (%s)",
                        service, backend.id, *target, why)

    async def _splice(self, conn: _TcpConn, up_reader: asyncio.StreamReader,
                      up_writer: asyncio.StreamWriter, counter: _Counter) -> None:
        """Copy both ways until both sides have closed (half-closes are passed on); a reset or
        error on either side aborts both."""
        pumps = [asyncio.ensure_future(_pump(conn.reader, up_writer, counter)),
                 asyncio.ensure_future(_pump(up_reader, conn.client, counter))]
        conn.tasks.extend(pumps)
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            if pending or any(t.cancelled() or t.exception() is not None for t in done):
                conn.abort()
                for t in pending:
                    t.cancel()
                await asyncio.wait(pumps)
            else:
                conn.ended = True
                conn.client.close()
                up_writer.close()
        finally:
            for t in pumps:
                t.cancel()
                if t.done() and not t.cancelled():
                    t.exception()  # retrieved: a reset is routine, not an "unhandled" error

    # ------------------------------------------------------------------ UDP

    def _udp_new_flow(self, listener: UdpListener, client: tuple[str, int]) -> UdpFlow | None:
        route = self._routes.get(listener.key)
        if route is None:
            return None
        name = route.service.name
        flow_key = FlowKey("udp", client[0], client[1], route.service.vip, route.port)
        backend = route.chooser.choose(flow_key) or route.service.fallback
        if backend is None or sum(len(u.flows) for u in self._udp_listeners.values()) >= self.max_udp_flows:
            self._refuse(name)
            return None
        target = _target(route, backend)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(target)
        except OSError as e:
            sock.close()
            self._warn_unreachable(name, backend, target, e)
            self._refuse(name)
            return None
        flow = UdpFlow(client, target, sock, self._counter(name, backend), listener.loop.time())
        listener.add_flow(flow)
        return flow

    async def _sweep_udp(self) -> None:
        """Forget UDP flows idle for udp_idle_timeout: the next datagram is a new flow."""
        loop = asyncio.get_running_loop()
        every = max(0.05, min(1.0, self.udp_idle_timeout / 4))
        while True:
            await asyncio.sleep(every)
            idle_before = loop.time() - self.udp_idle_timeout
            for listener in list(self._udp_listeners.values()):
                listener.expire(idle_before)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: _Counter) -> None:
    while data := await src.read(CHUNK):
        counter.add(len(data))
        dst.write(data)
        await dst.drain()  # backpressure: stop reading while the other side is slow
    if dst.can_write_eof() and not dst.transport.is_closing():
        dst.write_eof()  # a half-close travels on, as it would through the kernel
