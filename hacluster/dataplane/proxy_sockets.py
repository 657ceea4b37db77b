"""The userspace proxy's sockets: how it binds a listener, and its UDP flow table.

Split from proxy.py, which holds the table semantics and TCP; this module knows nothing of
tables. A UDP "flow" is a client address:port: its first datagram asks the proxy (the
`new_flow` callback) for a backend, and a socket connected to that backend then carries the
flow both ways until the proxy expires it for idleness or cuts it.

Memory is bounded per flow: datagrams are sent without queueing and dropped when the
socket buffer is full, as a router would.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass

from hacluster.dataplane.table import Protocol

LISTEN_BACKLOG = 1024
UDP_MAX = 65535
UDP_BURST = 64  # datagrams handled per wakeup, so one busy socket cannot starve the loop
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux value; Python < 3.12 lacks the name

ListenerKey = tuple[Protocol, str, int]  # protocol, bound address, port


def fmt_key(key: ListenerKey) -> str:
    return f"{key[1]}:{key[2]}/{key[0].value}"


def bound_socket(key: ListenerKey) -> socket.socket:
    """A non-blocking socket bound to the key's address and port (listening, for TCP)."""
    proto, host, port = key
    tcp = proto is Protocol.TCP
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    try:
        if tcp:  # not for UDP: there it would let a second process share the port silently
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sys.platform == "linux":
            # A standby binds the VIP before it holds the address, so the first packets after
            # a failover already find a listener.
            sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((host, port))
        if tcp:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class FlowCounts(typing.Protocol):
    """What a flow counts into (the proxy's per-backend counter)."""

    active: int

    def add(self, n: int) -> None: ...


@dataclass(eq=False)
class UdpFlow:
    client: tuple[str, int]
    target: tuple[str, int]
    sock: socket.socket  # connected to the target: its replies arrive here
    counter: FlowCounts
    last: float


class UdpListener:
    """One UDP VIP:port and its flows. Runs on the proxy's event loop only."""

    def __init__(self, key: ListenerKey, sock: socket.socket,
                 new_flow: Callable[[UdpListener, tuple[str, int]], UdpFlow | None]):
        """new_flow(listener, client): place a new flow (and add_flow() it), or None to
        drop the datagram (refused, or no longer served)."""
        self.key = key
        self.sock = sock
        self.new_flow = new_flow
        self.flows: dict[tuple[str, int], UdpFlow] = {}
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(UDP_BURST):
            try:
                data, addr = self.sock.recvfrom(UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket: nothing to forward
            flow = self.flows.get(addr) or self.new_flow(self, addr)
            if flow is None:
                continue
            flow.last = self.loop.time()
            flow.counter.add(len(data))
            try:
                flow.sock.send(data)
            except OSError:
                pass  # buffer full (dropped, as a router drops) or the backend is unreachable

    def _upstream_readable(self, flow: UdpFlow) -> None:
        for _ in range(UDP_BURST):
            try:
                data = flow.sock.recv(UDP_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP port unreachable from the backend: that datagram is lost
            flow.last = self.loop.time()
            flow.counter.add(len(data))
            try:
                self.sock.sendto(data, flow.client)  # from the address the client talked to
            except OSError:
                pass

    def add_flow(self, flow: UdpFlow) -> None:
        self.flows[flow.client] = flow
        flow.counter.active += 1
        self.loop.add_reader(flow.sock.fileno(), self._upstream_readable, flow)

    def drop_flow(self, flow: UdpFlow) -> None:
        if self.flows.pop(flow.client, None) is flow:
            flow.counter.active -= 1
            self.loop.remove_reader(flow.sock.fileno())
            flow.sock.close()

    def expire(self, idle_before: float) -> None:
        for flow in [f for f in self.flows.values() if f.last < idle_before]:
            self.drop_flow(flow)

    def close(self) -> None:
        # Replies go out through the listening socket, so its flows cannot outlive it.
        for flow in list(self.flows.values()):
            self.drop_flow(flow)
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
