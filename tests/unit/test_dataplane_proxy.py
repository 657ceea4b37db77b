"""The userspace data plane (dataplane/proxy.py, select.py) on loopback.

Real tiny backends (asyncio servers in the test's loop, each answering its name) behind a
real ProxyDataplane running in its own thread, as in the agent. No sleeps-and-hope: every
wait is a condition with a deadline. Shares are exact for round-robin and weighted (the
picks are sequential on the proxy loop), so the ±5% bounds only leave room for nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import pytest

from hacluster.dataplane.algorithms import slots_for
from hacluster.dataplane.proxy import ProxyDataplane, ProxyError
from hacluster.dataplane.select import Chooser, FlowKey, make_chooser
from hacluster.dataplane.table import Algorithm, Backend, BackendState, Protocol, Service, Table
from tests.support.wait import wait_until_async

LO = "127.0.0.1"
VIP = "10.0.0.100"  # what the table says; the proxy binds LO instead (bind_host)
DEADLINE_S = 20.0


# ---------------------------------------------------------------------- helpers


def free_port(kind: int = socket.SOCK_STREAM, host: str = LO) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(scenario: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE_S):
            await scenario
    asyncio.run(bounded())


class NameServer:
    """A TCP backend: says its name on connect, then answers each line with 'name:line'."""

    def __init__(self, name: str, host: str = LO, port: int = 0):
        self.name, self.host, self.port = name, host, port
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> NameServer:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            writer.write(f"{self.name}\n".encode())
            while line := await reader.readline():
                writer.write(f"{self.name}:".encode() + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def backend(self, weight: int = 1, state: BackendState = BackendState.ACTIVE) -> Backend:
        return Backend(self.name, self.host, self.port, weight, state)


@contextlib.asynccontextmanager
async def name_servers(*names: str) -> AsyncIterator[list[NameServer]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(NameServer(n)) for n in names]


def service(port: int | Sequence[int], backends: Sequence[Backend],
            algorithm: Algorithm = Algorithm.ROUND_ROBIN, fallback: Backend | None = None,
            protocol: Protocol = Protocol.TCP, name: str = "web") -> Service:
    ports = (port,) if isinstance(port, int) else tuple(port)
    return Service(name, VIP, protocol, ports, None, algorithm, tuple(backends), fallback)


@contextlib.asynccontextmanager
async def proxy(*services: Service, generation: int = 1, bind_host: str = LO,
                **kw: Any) -> AsyncIterator[ProxyDataplane]:
    p = ProxyDataplane(reason="the unit tests run without nftables", bind_host=bind_host, **kw)
    p.start()
    try:
        await asyncio.to_thread(p.apply, Table(generation, tuple(services)))
        yield p
    finally:
        await asyncio.to_thread(p.stop)


async def fetch(port: int, source: str | None = None, host: str = LO) -> str:
    """One connection, one answer: the backend's name, or '' when the proxy closed or reset."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    try:
        return (await reader.readline()).decode().strip()
    except ConnectionError:
        return ""
    finally:
        writer.close()


async def fetch_many(port: int, n: int, sources: Sequence[str | None] = (None,),
                     concurrency: int = 32) -> collections.Counter[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            return await fetch(port, sources[i % len(sources)])
    return collections.Counter(await asyncio.gather(*(one(i) for i in range(n))))


class LongConnection:
    """A client connection kept open across table changes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: str):
        self.reader, self.writer, self.backend = reader, writer, backend

    @classmethod
    async def open(cls, port: int) -> LongConnection:
        reader, writer = await asyncio.open_connection(LO, port)
        return cls(reader, writer, (await reader.readline()).decode().strip())

    async def ask(self, text: str) -> str:
        self.writer.write(f"{text}\n".encode())
        await self.writer.drain()
        return (await asyncio.wait_for(self.reader.readline(), 2)).decode().strip()

    def close(self) -> None:
        self.writer.close()


def within(count: int, expected: float, tolerance: float = 0.05) -> bool:
    return abs(count - expected) <= tolerance * expected


# ---------------------------------------------------------------------- selection, pure


FLOW = FlowKey("tcp", "192.0.2.7", 40000, VIP, 80)


def bk(name: str, weight: int = 1) -> Backend:
    return Backend(name, "192.0.2.1", 80, weight)


def chooser(algorithm: Algorithm, backends: Sequence[Backend]) -> Chooser:
    return make_chooser(service(80, backends, algorithm))


def test_smooth_weighted_interleaves_like_nginx():
    c = chooser(Algorithm.WEIGHTED, [bk("a", 5), bk("b"), bk("c")])
    assert "".join(c.choose(FLOW).id for _ in range(14)) == "aabacaa" * 2


def test_round_robin_skips_excluded_and_reports_none():
    c = chooser(Algorithm.ROUND_ROBIN, [bk("a"), bk("b")])
    assert c.choose(FLOW, frozenset({"a"})).id == "b"
    assert c.choose(FLOW, frozenset({"a", "b"})) is None
    assert chooser(Algorithm.ROUND_ROBIN, []).choose(FLOW) is None


def test_hashes_are_stable_across_instances_and_retry_elsewhere():
    backends = [bk("a"), bk("b", 2), bk("c")]
    for algorithm in (Algorithm.SOURCE_HASH, Algorithm.MAGLEV):
        one, two = chooser(algorithm, backends), chooser(algorithm, backends)
        flows = [FlowKey("tcp", f"10.1.{i // 250}.{i % 250}", 1000 + i, VIP, 80) for i in range(300)]
        picks = [one.choose(f) for f in flows]
        assert picks == [two.choose(f) for f in flows]
        assert {p.id for p in picks} == {"a", "b", "c"}
        assert all(one.choose(f, frozenset({p.id})).id != p.id for f, p in zip(flows, picks, strict=True))
        assert chooser(algorithm, []).choose(FLOW) is None


# ---------------------------------------------------------------------- TCP through the proxy


def test_round_robin_equal_shares_and_counters_grow():
    async def scenario() -> None:
        async with name_servers("a", "b", "c") as servers, \
                proxy(service(port := free_port(), [s.backend() for s in servers])) as p:
            got = await fetch_many(port, 3000)
            assert set(got) == {"a", "b", "c"} and all(within(got[n], 1000) for n in "abc"), got
            counters = p.counters()
            for n in "abc":  # at least the name line; "web/<id>" like the kernel's counter names
                assert counters[f"web/{n}"][0] >= got[n] and counters[f"web/{n}"][1] >= 2 * got[n]
            await wait_until_async(lambda: sum(p.active().values()) == 0, 5, "every connection ended",
                                   interval=0.01)
            assert p.applied_generation() == 1 and p.refused() == {}
    run(scenario())


def test_weighted_one_two_three():
    async def scenario() -> None:
        async with name_servers("a", "b", "c") as servers:
            backends = [s.backend(weight=w) for s, w in zip(servers, (1, 2, 3), strict=True)]
            async with proxy(service(port := free_port(), backends, Algorithm.WEIGHTED)):
                got = await fetch_many(port, 3000)
        assert within(got["a"], 500) and within(got["b"], 1000) and within(got["c"], 1500), got
    run(scenario())


def test_source_hash_one_client_address_one_backend():
    async def scenario() -> None:
        sources = [f"127.0.0.{i}" for i in range(2, 51)]
        async with name_servers("a", "b", "c") as servers:
            svc = service(port := free_port(), [s.backend() for s in servers], Algorithm.SOURCE_HASH)
            async with proxy(svc) as p:
                seen: dict[str, set[str]] = collections.defaultdict(set)
                for rnd in range(4):
                    got = await asyncio.gather(*(fetch(port, src) for src in sources))
                    for src, name in zip(sources, got, strict=True):
                        seen[src].add(name)
                    if rnd == 1:  # a new generation with the same backends keeps the mapping
                        await asyncio.to_thread(p.apply, Table(2, (svc,)))
        assert all(len(names) == 1 for names in seen.values()), seen
        assert {n for names in seen.values() for n in names} == {"a", "b", "c"}
    run(scenario())


def test_maglev_same_flow_same_backend_on_two_proxies():
    async def scenario() -> None:
        async with name_servers("a", "b", "c") as servers:
            svc = service(port := free_port(), [s.backend() for s in servers], Algorithm.MAGLEV)
            # Two independent instances, as on two nodes: same table, different bound address.
            async with proxy(svc, bind_host="127.0.0.1"), proxy(svc, bind_host="127.0.0.2"):
                picks: list[tuple[str, str]] = []
                client_port = 21000
                while len(picks) < 120:
                    client_port += 1
                    src = f"127.0.0.{10 + len(picks) % 30}"
                    try:
                        first = await fetch_from(port, "127.0.0.1", (src, client_port))
                        second = await fetch_from(port, "127.0.0.2", (src, client_port))
                    except OSError:  # that client port is taken on this machine: use another
                        continue
                    picks.append((first, second))
        assert all(a == b for a, b in picks), picks
        assert {a for a, _ in picks} == {"a", "b", "c"}
    run(scenario())


@pytest.mark.parametrize("algorithm", [Algorithm.SOURCE_HASH, Algorithm.MAGLEV])
def test_real_connections_reach_the_backend_the_kernel_rule_picks(algorithm: Algorithm):
    """The running proxy hashes the flow as the kernel would (the service's VIP and port, not
    the address it bound; the client's address and port): the slot algorithms.py computes,
    which tests/lab/test_dataplane_hash.py checks against a real kernel."""
    async def scenario() -> None:
        async with name_servers("a", "b", "c", "d") as servers:
            svc = service(port := free_port(), [s.backend(weight=w) for s, w in zip(servers, (1, 2, 1, 3),
                                                                                 strict=True)], algorithm)
            slots = slots_for(svc)
            misses: list[tuple[str, int, str, str]] = []
            async with proxy(svc):
                client_port, done = 23000, 0
                while done < 80:
                    client_port += 1
                    src = f"127.0.{done % 7}.{10 + done % 40}"
                    try:
                        got = await fetch_from(port, LO, (src, client_port))
                    except OSError:  # that client port is taken on this machine: use another
                        continue
                    done += 1
                    want = slots.backends[slots.slot_of(FlowKey("tcp", src, client_port, VIP, port))].id
                    if got != want:
                        misses.append((src, client_port, got, want))
        assert not misses, misses
    run(scenario())


async def fetch_from(port: int, host: str, local: tuple[str, int]) -> str:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the same 5-tuple twice in a row
    sock.setblocking(False)
    try:
        sock.bind(local)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except OSError:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        return (await reader.readline()).decode().strip()
    finally:
        writer.close()


@pytest.mark.parametrize("state", [BackendState.DOWN, BackendState.DRAINING, BackendState.DISABLED])
def test_not_serving_gets_no_new_flows_but_keeps_established_ones(state: BackendState):
    async def scenario() -> None:
        async with name_servers("a", "b", "c") as servers:
            port = free_port()
            async with proxy(service(port, [s.backend() for s in servers])) as p:
                long = await LongConnection.open(port)
                gone = long.backend
                assert await long.ask("before") == f"{gone}:before"
                changed = [s.backend(state=state if s.name == gone else BackendState.ACTIVE)
                           for s in servers]
                await asyncio.to_thread(p.apply, Table(2, (service(port, changed),)))
                accepted_before = next(s for s in servers if s.name == gone).accepted
                got = await fetch_many(port, 300)
                assert gone not in got and sum(got.values()) == 300, got
                assert next(s for s in servers if s.name == gone).accepted == accepted_before
                for i in range(5):  # the established connection still flows both ways
                    assert await long.ask(f"after{i}") == f"{gone}:after{i}"
                assert p.active()[f"web/{gone}"] == 1  # what a drain waits for
                server = next(s for s in servers if s.name == gone)
                # The drain timeout: cut what is left, as conntrack -D does for the kernel.
                assert await asyncio.to_thread(p.flush_backend, LO, server.port, "tcp") == \
                    (True, f"1 tcp flows to {LO}:{server.port} cut")
                with contextlib.suppress(ConnectionError):
                    assert await asyncio.wait_for(long.reader.read(), 2) == b""
                await wait_until_async(lambda: p.active()[f"web/{gone}"] == 0, 5, "the drained flow ended",
                                       interval=0.01)
                long.close()
    run(scenario())


def test_no_serving_backend_uses_the_fallback():
    async def scenario() -> None:
        async with name_servers("a", "b", "sorry") as (a, b, sorry), \
                proxy(service(port := free_port(), [a.backend(state=BackendState.DOWN),
                                                    b.backend(state=BackendState.DISABLED)],
                              fallback=sorry.backend())) as p:
            assert await fetch_many(port, 50) == {"sorry": 50}
            assert p.counters()["web/sorry"][0] >= 50 and p.refused() == {}
    run(scenario())


def test_no_serving_backend_and_no_fallback_refuses_and_counts():
    async def scenario() -> None:
        async with name_servers("a") as (a,), \
                proxy(service(port := free_port(), [a.backend(state=BackendState.DOWN)])) as p:
            t0 = time.monotonic()
            assert await fetch_many(port, 20) == {"": 20}
            assert time.monotonic() - t0 < 2.0  # closed at once, not after a timeout
            assert p.refused() == {"web": 20} and a.accepted == 0 and p.counters()["web/a"] == (0, 0)
    run(scenario())


def test_unreachable_backend_is_skipped_for_the_next_choice_once():
    async def scenario() -> None:
        # "dead" refuses at once; "hung" never completes the handshake (a full accept queue).
        hung = socket.socket()
        hung.bind((LO, 0))
        hung.listen(0)
        filler = socket.create_connection(hung.getsockname())
        dead_port = free_port()
        try:
            async with name_servers("ok1", "ok2") as ok:
                dead = Backend("dead", LO, dead_port, 1)
                stuck = Backend("hung", LO, hung.getsockname()[1], 1)
                good = [s.backend() for s in ok]
                port = free_port()
                async with proxy(service(port, [dead, *good]), connect_timeout=0.3) as p:
                    got = await fetch_many(port, 30, concurrency=10)
                    assert got.total() == 30 and set(got) == {"ok1", "ok2"}, got
                    await asyncio.to_thread(p.apply, Table(2, (service(port, [stuck, *good]),)))
                    got = await fetch_many(port, 30, concurrency=10)
                    assert got.total() == 30 and set(got) == {"ok1", "ok2"}, got
                    assert p.refused() == {}
                    # Both choices fail: closed after them, not retried further.
                    await asyncio.to_thread(p.apply, Table(3, (service(port, [dead, stuck]),)))
                    t0 = time.monotonic()
                    assert await fetch_many(port, 4) == {"": 4}
                    assert time.monotonic() - t0 < 2.0 and p.refused() == {"web": 4}
        finally:
            filler.close()
            hung.close()
    run(scenario())


def test_flow_limit_refuses_and_counts():
    async def scenario() -> None:
        async with name_servers("a") as (a,), \
                proxy(service(port := free_port(), [a.backend()]), max_tcp_connections=1) as p:
            long = await LongConnection.open(port)
            assert await fetch(port) == "" and p.refused() == {"web": 1}
            assert await long.ask("ok") == "a:ok"
            long.close()
            await wait_until_async(lambda: p.active()["web/a"] == 0, 5, "the connection ended", interval=0.01)
            assert await fetch(port) == "a"
    run(scenario())


def test_bulk_data_both_ways_with_half_close():
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):  # until the client's half-close arrives
            writer.write(data)
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(echo, LO, 0)
        payload = bytes(range(256)) * 32 * 1024  # 8 MiB
        try:
            backend = Backend("bulk", LO, server.sockets[0].getsockname()[1], 1)
            async with proxy(service(port := free_port(), [backend])) as p:
                reader, writer = await asyncio.open_connection(LO, port)

                async def send() -> None:
                    writer.write(payload)
                    await writer.drain()
                    writer.write_eof()
                _, got = await asyncio.gather(send(), reader.read())
                writer.close()
                assert got == payload
                assert p.counters()["web/bulk"][1] == 2 * len(payload)
        finally:
            server.close()
    run(scenario())


def test_backend_port_zero_is_the_port_the_client_used():
    async def scenario() -> None:
        port = free_port()
        async with NameServer("same-port", host="127.0.0.2", port=port) as srv, \
                proxy(service(port, [Backend("same-port", srv.host, 0, 1)])):
            assert await fetch(port) == "same-port"
    run(scenario())


def test_apply_keeps_open_connections_and_moves_listeners():
    async def scenario() -> None:
        async with name_servers("a", "b", "c") as servers:
            old_port, new_port = free_port(), free_port()
            async with proxy(service(old_port, [s.backend() for s in servers])) as p:
                long = await LongConnection.open(old_port)
                assert p.listeners() == [f"{LO}:{old_port}/tcp"]
                moved = service(new_port, [s.backend(weight=3) for s in servers], Algorithm.WEIGHTED)
                await asyncio.to_thread(p.apply, Table(2, (moved,)))
                assert p.applied_generation() == 2 and p.listeners() == [f"{LO}:{new_port}/tcp"]
                assert await long.ask("still") == f"{long.backend}:still"
                with pytest.raises(ConnectionRefusedError):
                    await fetch(old_port)
                assert (await fetch_many(new_port, 30)).total() == 30
                assert await long.ask("again") == f"{long.backend}:again"
                long.close()
    run(scenario())


def test_a_port_that_cannot_be_bound_is_reported_and_retried():
    async def scenario() -> None:
        port = free_port()
        squatter = socket.create_server((LO, port))
        async with name_servers("a") as (a,), proxy(generation=0) as p:
            table = Table(1, (service(port, [a.backend()]),))
            with pytest.raises(ProxyError, match=f"cannot listen on {LO}:{port}/tcp"):
                await asyncio.to_thread(p.apply, table)
            assert p.applied_generation() == 0
            squatter.close()
            await asyncio.to_thread(p.apply, table)  # the worker's retry
            assert p.applied_generation() == 1 and await fetch(port) == "a"
    run(scenario())


def test_stop_closes_listeners_and_connections():
    async def scenario() -> None:
        async with name_servers("a") as (a,):
            port = free_port()
            async with proxy(service(port, [a.backend()])) as p:
                long = await LongConnection.open(port)
                t0 = time.monotonic()
                await asyncio.to_thread(p.stop)
                assert time.monotonic() - t0 < 1.0
                with pytest.raises(ConnectionRefusedError):
                    await fetch(port)
                with contextlib.suppress(ConnectionError):  # EOF or a reset: either way, closed
                    assert await asyncio.wait_for(long.reader.read(), 2) == b""
                long.close()
    run(scenario())


# ---------------------------------------------------------------------- UDP


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str):
        self.name = name
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(f"{self.name}:".encode() + data, addr)


@contextlib.asynccontextmanager
async def udp_echoes(*names: str) -> AsyncIterator[list[Backend]]:
    loop = asyncio.get_running_loop()
    transports = []
    try:
        for n in names:
            t, _ = await loop.create_datagram_endpoint(lambda n=n: UdpEcho(n), local_addr=(LO, 0))
            transports.append(t)
        yield [Backend(n, LO, t.get_extra_info("sockname")[1], 1) for n, t in
               zip(names, transports, strict=True)]
    finally:
        for t in transports:
            t.close()


async def udp_ask(sock: socket.socket, port: int, text: str) -> tuple[str, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, text.encode(), (LO, port))
    data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
    return data.decode(), addr


def udp_client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind((LO, 0))
    return s


def test_udp_round_robin_per_flow_replies_from_the_proxy():
    async def scenario() -> None:
        port = free_port(socket.SOCK_DGRAM)
        async with udp_echoes("u1", "u2") as backends, \
                proxy(service(port, backends, protocol=Protocol.UDP, name="udp")) as p:
            clients = [udp_client() for _ in range(20)]
            try:
                per_client: dict[int, set[str]] = collections.defaultdict(set)
                for rnd in range(3):
                    for i, c in enumerate(clients):
                        reply, source = await udp_ask(c, port, f"q{rnd}")
                        assert source == (LO, port)  # from the proxy, not from the backend
                        name, _, text = reply.partition(":")
                        assert text == f"q{rnd}"
                        per_client[i].add(name)
                assert all(len(names) == 1 for names in per_client.values())  # a flow stays put
                shares = collections.Counter(next(iter(n)) for n in per_client.values())
                assert shares == {"u1": 10, "u2": 10}
                assert p.active() == {"udp/u1": 10, "udp/u2": 10}
                assert p.counters()["udp/u1"] == (60, 60 * 2 + 3 * 10 * len("u1:"))
            finally:
                for c in clients:
                    c.close()
    run(scenario())


def test_udp_idle_flows_expire_and_no_backend_drops_and_counts():
    async def scenario() -> None:
        port = free_port(socket.SOCK_DGRAM)
        async with udp_echoes("u1", "u2") as backends:
            svc = service(port, backends, protocol=Protocol.UDP, name="udp")
            async with proxy(svc, udp_idle_timeout=0.2) as p:
                c = udp_client()
                try:
                    first = (await udp_ask(c, port, "x"))[0].split(":")[0]
                    await wait_until_async(lambda: sum(p.active().values()) == 0, 5, "the idle flow expired",
                                           interval=0.01)
                    second = (await udp_ask(c, port, "x"))[0].split(":")[0]
                    assert {first, second} == {"u1", "u2"}  # a new flow: round-robin moved on
                    down = tuple(dataclasses.replace(b, state=BackendState.DOWN) for b in backends)
                    await asyncio.to_thread(p.apply, Table(2, (dataclasses.replace(svc, backends=down),)))
                    await wait_until_async(lambda: sum(p.active().values()) == 0, 5, "the flow expired",
                                           interval=0.01)
                    await asyncio.get_running_loop().sock_sendto(c, b"lost", (LO, port))
                    await wait_until_async(lambda: p.refused() == {"udp": 1}, 5, "the datagram refused",
                                           interval=0.01)
                finally:
                    c.close()
    run(scenario())
