"""The real HostOps: VIP addresses through rtnetlink, probes and announcements through ARP.

Everything acts in the caller's network namespace (the lab runs the agent under
`ip netns exec`). Needs CAP_NET_ADMIN for addresses and CAP_NET_RAW for ARP.

Every call is a plain system call: address writes (RTM_NEWADDR/RTM_DELADDR) and the
address dump (RTM_GETADDR) are packed here and sent on one NETLINK_ROUTE socket (about
20-30 us each; they run every 10 ms tick), the interface index and MAC come from
if_nametoindex and SIOCGIFHWADDR. pyroute2 0.9 was measured at ~0.5 ms of Python per
request in its asyncio machinery and was the suspect of a loop stall, so it is not used.
The socket is opened lazily, reused, and used under one lock because the agent calls from
more than one thread.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import math
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from hacluster.clock import now as _clock
from hacluster.hostops import arp
from hacluster.hostops.base import Guard, HostOpsError
from hacluster.model import Vip

T = TypeVar("T")

# linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
log = logging.getLogger(__name__)

RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_DELNEIGH = 29
NDA_DST = 1
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_CACHEINFO = 6
INFINITY_LIFE_TIME = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")  # len, type
_CACHEINFO = struct.Struct("=IIII")  # ifa_prefered, ifa_valid, cstamp, tstamp
_ERRNO = struct.Struct("=i")
_SIOCGIFHWADDR = 0x8927
_ARPHRD_ETHER = 1

# Our own kernel acks an address request in microseconds; no ack within a second means
# something is badly wrong, not slow.
_ACK_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class _Link:
    index: int
    mac: str | None  # None on links without an Ethernet address (tun, some tunnels)


def lifetime_seconds(lifetime_s: float) -> int:
    """The kernel counts address lifetimes in whole seconds: round up so the address never
    lives shorter than asked, at least 1 (0 would expire it at once), below infinity."""
    return min(max(math.ceil(lifetime_s), 1), INFINITY_LIFE_TIME - 1)


def pack_addr_request(msg_type: int, seq: int, index: int, vip: Vip, lifetime: int | None) -> bytes:
    """One RTM_NEWADDR (replace, with lifetime) or RTM_DELADDR message for vip on index.

    Same attributes as `ip addr replace A/P dev D valid_lft N preferred_lft N`: IFA_LOCAL
    and IFA_ADDRESS both set to the address, no flags, so the kernel keeps its normal
    prefix-route behaviour.
    """
    ip = ipaddress.ip_address(vip.address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = _IFADDRMSG.pack(family, vip.prefixlen, 0, 0, index)
    body += _rta(IFA_LOCAL, ip.packed) + _rta(IFA_ADDRESS, ip.packed)
    flags = NLM_F_REQUEST | NLM_F_ACK
    if lifetime is not None:
        body += _rta(IFA_CACHEINFO, _CACHEINFO.pack(lifetime, lifetime, 0, 0))
        flags |= NLM_F_CREATE | NLM_F_REPLACE
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, seq, 0) + body


def pack_neigh_delete(seq: int, index: int, address: str) -> bytes:
    """RTM_DELNEIGH for `address` on link `index` (as `ip neigh del ADDRESS dev D`)."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = struct.pack("=BxxxiHBB", family, index, 0, 0, 0) + _rta(NDA_DST, ip.packed)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _rta(kind: int, payload: bytes) -> bytes:
    # 4 and 16 byte addresses and the 16 byte cacheinfo are already 4-aligned: no padding.
    return _RTA.pack(_RTA.size + len(payload), kind) + payload


def parse_addr_dump(data: bytes, seq: int, found: set[tuple[int, int, bytes]]) -> tuple[bool, int]:
    """Add the (index, prefixlen, address) of each RTM_NEWADDR of dump `seq` in one datagram
    to found; return (dump finished, errno). Messages of other sequences are skipped."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return True, 0
        if msg_seq == seq:
            if kind == NLMSG_DONE:
                return True, 0
            if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + _ERRNO.size:
                return True, -_ERRNO.unpack_from(data, offset + _NLMSGHDR.size)[0]
            if kind == RTM_NEWADDR:
                found.update(_addr_entry(data, offset + _NLMSGHDR.size, offset + length))
        offset += (length + 3) & ~3
    return False, 0


def _addr_entry(data: bytes, start: int, end: int) -> list[tuple[int, int, bytes]]:
    _family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, start)
    local = address = None
    pos = start + _IFADDRMSG.size
    while pos + _RTA.size <= end:
        rta_len, rta_type = _RTA.unpack_from(data, pos)
        if rta_len < _RTA.size:
            break
        payload = data[pos + _RTA.size:pos + rta_len]
        if rta_type == IFA_LOCAL:
            local = payload
        elif rta_type == IFA_ADDRESS:
            address = payload
        pos += (rta_len + 3) & ~3
    chosen = local or address  # IPv4 reports the address itself in IFA_LOCAL
    return [(index, prefixlen, chosen)] if chosen else []


def iter_acks(data: bytes) -> Iterator[tuple[int, int]]:
    """(sequence, errno) of each NLMSG_ERROR in a netlink datagram; errno 0 is success."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + _ERRNO.size:
            yield seq, -_ERRNO.unpack_from(data, offset + _NLMSGHDR.size)[0]
        offset += (length + 3) & ~3


class NetlinkHostOps:
    """HostOps on the running kernel, IPv4 only for claims, probes and announcements."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nl: socket.socket | None = None
        self._seq = 0
        self._links: dict[str, _Link] = {}
        # A separate lock for ARP: a probe takes up to its timeout and must never hold up a
        # renewal on the tick thread.
        self._arp_lock = threading.Lock()
        self._arp_sockets: dict[str, arp.ArpSocket] = {}

    # --- HostOps ------------------------------------------------------------------------

    def vip_present(self, vip: Vip) -> bool:
        """One RTM_GETADDR dump on a plain netlink socket (~30 us; it runs every tick).

        The interface index is asked afresh each time (if_nametoindex, one ioctl), so an
        interface recreated under a new index (a network restart) is never missed.
        """
        try:
            index = socket.if_nametoindex(vip.interface)
        except OSError:
            # Say so (a typo in the config must show on followers too, not only on claim).
            raise _InterfaceMissing(vip.interface) from None
        family = socket.AF_INET if vip.family == 4 else socket.AF_INET6
        want = ipaddress.ip_address(vip.address).packed
        with self._lock:
            try:
                return (index, vip.prefixlen, want) in self._dump_addresses(family)
            except OSError as exc:
                self._close_netlink()
                raise HostOpsError(f"netlink: look up {vip}: {exc}") from exc

    def claim_vip(self, vip: Vip, lifetime_s: float, guard: Guard | None = None) -> bool:
        _require_ipv4(vip)
        lifetime = lifetime_seconds(lifetime_s)
        return self._on_link(
            vip, "claim", lambda link: self._write(RTM_NEWADDR, link, vip, lifetime, guard))

    def release_vip(self, vip: Vip) -> None:
        # A missing interface cannot hold the address either: both count as released.
        try:
            self._on_link(vip, "release", lambda link: self._write(RTM_DELADDR, link, vip, None))
        except (_AddressAbsent, _InterfaceMissing):
            return
        self._forget_neighbour(vip)

    def _forget_neighbour(self, vip: Vip) -> None:
        """After a release: drop any neighbour entry this kernel still has for the address
        (learnt while another server held it, before we did). Clients that have not heard
        the next holder's GARP yet still send to us, and we forward (render.py: only a holder
        balances); with no entry, the kernel queues those packets while it asks who has the
        address, and the next holder's GARP sends them on. With a stale entry they would go
        to a server that held it before (a lost SYN: a client waiting 1 s). Best effort."""
        def op(link: _Link) -> None:
            if self._nl is None:
                self._nl = _open_netlink()
            self._seq = self._seq % 0xFFFFFFFF + 1
            seq = self._seq
            try:
                self._nl.send(pack_neigh_delete(seq, link.index, vip.address))
                for _ in range(8):
                    if any(ack_seq == seq for ack_seq, _err in iter_acks(self._nl.recv(65536))):
                        return  # done, or ENOENT: no entry to forget
            except OSError:
                self._close_netlink()

        try:
            with self._lock:
                op(self._link(vip.interface))
        except Exception as exc:  # noqa: BLE001 - the release itself is done
            log.debug("neighbour entry of %s not removed: %s", vip, exc)

    def probe(self, vip: Vip, timeout_s: float) -> bool:
        _require_ipv4(vip)
        our_mac = self._ethernet_mac(vip)
        frame = arp.build_arp_probe(our_mac, vip.address)
        # RFC 5227 sends several probes; two, the second at half time, survive one lost frame
        # while keeping the whole probe within timeout_s.
        send_at = [0.0, timeout_s / 2]

        def answered(packet: arp.ArpPacket) -> bool:
            return arp.claims_address(packet, vip.address, our_mac)

        return self._on_arp(
            vip, "ARP probe", lambda sock: sock.exchange(frame, send_at, timeout_s, answered)
        )

    def announce(self, vip: Vip) -> None:
        _require_ipv4(vip)
        frame = arp.build_gratuitous_arp(self._ethernet_mac(vip), vip.address)
        self._on_arp(vip, "gratuitous ARP", lambda sock: sock.send(frame))

    def close(self) -> None:
        with self._arp_lock:
            for sock in self._arp_sockets.values():
                sock.close()
            self._arp_sockets.clear()
        with self._lock:
            self._close_netlink()
            self._links.clear()

    # --- links --------------------------------------------------------------------------

    def _on_link(self, vip: Vip, what: str, op: Callable[[_Link], T]) -> T:
        """Run op on vip's interface, under the lock, with netlink errors as HostOpsError.

        The index is cached per name. ENODEV means the interface was recreated (a network
        restart, a rebuilt bond) under a new index: look it up once more and retry. Any other
        failure also drops the cached entry so that the next call starts fresh.
        """
        with self._lock:
            try:
                try:
                    return op(self._link(vip.interface))
                except NetlinkError as exc:
                    self._links.pop(vip.interface, None)
                    if exc.code != errno.ENODEV:
                        raise
                    return op(self._link(vip.interface))
            except NetlinkError as exc:
                self._links.pop(vip.interface, None)
                if exc.code == errno.EADDRNOTAVAIL and what == "release":
                    raise _AddressAbsent from exc
                if exc.code == errno.ENODEV:
                    raise _InterfaceMissing(vip.interface) from exc
                raise HostOpsError(f"netlink: {what} {vip}: {os.strerror(exc.code)}") from exc

    def _link(self, ifname: str) -> _Link:
        link = self._links.get(ifname)
        if link is None:
            link = self._links[ifname] = self._lookup_link(ifname)
        return link

    def _lookup_link(self, ifname: str) -> _Link:
        """Index and MAC with two plain system calls (if_nametoindex, SIOCGIFHWADDR).

        pyroute2 0.9 ran these through a hidden asyncio loop per thread; in the lab an agent
        loop stalled for over a second (once for a minute) inside such calls, long enough for
        the watchdog to depose a healthy leader. Nothing on the tick path uses it any more.
        """
        try:
            index = socket.if_nametoindex(ifname)
        except OSError:
            raise _InterfaceMissing(ifname) from None
        return _Link(index=index, mac=_hardware_address(ifname))

    def _ethernet_mac(self, vip: Vip) -> str:
        # Probes and announcements are rare (failover only) while a MAC can change under a
        # cached entry (bond failover with fail_over_mac): always ask the kernel afresh.
        with self._lock:
            self._links.pop(vip.interface, None)
        link = self._on_link(vip, "look up", lambda link: link)
        if not link.mac or link.mac == arp.ZERO_MAC:
            raise HostOpsError(f"interface {vip.interface} has no Ethernet address for ARP")
        return link.mac

    # --- ARP socket ---------------------------------------------------------------------

    def _on_arp(self, vip: Vip, what: str, op: Callable[[arp.ArpSocket], T]) -> T:
        """Run op on the interface's long-lived ARP socket, under the ARP lock.

        A packet socket stays tied to the interface it was bound to and reports ENETDOWN or
        ENXIO once that goes down or away: reopen it and try once more before giving up.
        """
        with self._arp_lock:
            try:
                return op(self._arp_socket(vip.interface))
            except OSError:
                self._arp_sockets.pop(vip.interface).close()
            try:
                return op(self._arp_socket(vip.interface))
            except OSError as exc:
                self._arp_sockets.pop(vip.interface).close()
                raise HostOpsError(f"{what} for {vip}: {exc}") from exc

    def _arp_socket(self, ifname: str) -> arp.ArpSocket:
        sock = self._arp_sockets.get(ifname)
        if sock is not None:
            return sock
        try:
            sock = self._arp_sockets[ifname] = arp.ArpSocket(ifname)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise _InterfaceMissing(ifname) from exc
            if exc.errno == errno.EPERM:
                raise HostOpsError(f"ARP on {ifname} needs CAP_NET_RAW") from exc
            raise HostOpsError(f"ARP socket on {ifname}: {exc}") from exc
        return sock

    # --- netlink handles ----------------------------------------------------------------


    def _write(self, msg_type: int, link: _Link, vip: Vip, lifetime: int | None,
               guard: Guard | None = None) -> bool:
        """Send one address request and wait for its ack; NetlinkError on a kernel error.

        guard, when given, returns the deadline (on hacluster.clock.now) until which the request
        may be sent; it is compared with the clock immediately before the send, with
        everything else prepared: the kernel re-creates an expired IPv4 address on any
        RTM_NEWADDR (NLM_F_CREATE or not), so the only protection against a renewal decided
        before a long freeze is to decide it as late as possible. Past the deadline: nothing
        is sent, False is returned.
        """
        if self._nl is None:
            self._nl = _open_netlink()
        self._seq = self._seq % 0xFFFFFFFF + 1
        seq = self._seq
        request = pack_addr_request(msg_type, seq, link.index, vip, lifetime)
        sock = self._nl
        send = sock.send
        deadline = guard() if guard is not None else None
        try:
            # The last moment before the kernel acts: nothing but a clock read between the
            # check and the system call (a freeze in between is what we must not act after).
            if deadline is not None and _clock() >= deadline:
                return False
            send(request)
            while True:
                for ack_seq, err in iter_acks(sock.recv(65536)):
                    # Older sequences are late acks of requests we gave up on; skip them.
                    if ack_seq == seq:
                        if err:
                            raise NetlinkError(err)
                        return True
        except OSError as exc:
            # Unknown socket state (a late ack may still arrive): start over next time.
            self._close_netlink()
            what = "claim" if msg_type == RTM_NEWADDR else "release"
            raise HostOpsError(f"netlink: {what} {vip}: {exc}") from exc

    def _dump_addresses(self, family: int) -> set[tuple[int, int, bytes]]:
        """{(ifindex, prefixlen, IFA_LOCAL or IFA_ADDRESS)} of every address of `family`."""
        if self._nl is None:
            self._nl = _open_netlink()
        self._seq = self._seq % 0xFFFFFFFF + 1
        seq = self._seq
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        sock = self._nl
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETADDR,
                                 NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        found: set[tuple[int, int, bytes]] = set()
        while True:
            done, err = parse_addr_dump(sock.recv(65536), seq, found)
            if err:
                raise NetlinkError(err)
            if done:
                return found

    def _close_netlink(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None


class NetlinkError(Exception):
    """A kernel error answered to one of our netlink requests; .code is the errno.

    Not an OSError on purpose: socket failures (OSError) reset the socket, kernel answers
    (EADDRNOTAVAIL, ENODEV) are handled per operation in _on_link."""

    def __init__(self, code: int):
        super().__init__(f"{os.strerror(code)} (errno {code})")
        self.code = code


class _InterfaceMissing(HostOpsError):
    def __init__(self, ifname: str) -> None:
        super().__init__(f"interface {ifname} not found")


class _AddressAbsent(Exception):
    """release_vip of an address the kernel does not have: success, not an error."""


def _hardware_address(ifname: str) -> str | None:
    """The interface's Ethernet address (SIOCGIFHWADDR), None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    family = struct.unpack_from("H", res, 16)[0]
    if family != _ARPHRD_ETHER:
        return None
    return ":".join(f"{b:02x}" for b in res[18:24])


def _open_netlink() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.bind((0, 0))
    sock.settimeout(_ACK_TIMEOUT_S)
    return sock


def _require_ipv4(vip: Vip) -> None:
    if vip.family != 4:
        raise HostOpsError("IPv6 VIPs are not supported yet")
