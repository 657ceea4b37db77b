"""ARP frames for IPv4 VIPs: RFC 5227 probes, gratuitous announcements, parsing.

The builders and the parser are pure (bytes in, bytes out) so they are unit-tested without
root. ArpSocket at the bottom is the only part that touches the host.
"""

from __future__ import annotations

import ctypes
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent, as seen by a packet socket

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
ZERO_IP = "0.0.0.0"

_ETH_HEADER = struct.Struct("!6s6sH")
# htype, ptype, hlen, plen, op, sha, spa, tha, tpa (Ethernet + IPv4 ARP only)
_ARP_BODY = struct.Struct("!HHBBH6s4s6s4s")
ARP_FRAME_LEN = _ETH_HEADER.size + _ARP_BODY.size  # 42
# Pad to the Ethernet minimum (60 bytes without FCS) ourselves: most drivers pad short
# frames, but not all, and some switches drop runts.
_MIN_FRAME_LEN = 60


@dataclass(frozen=True)
class ArpPacket:
    """One parsed Ethernet/IPv4 ARP frame; MACs as lower-case "aa:bb:..", IPs dotted."""

    eth_dst: str
    eth_src: str
    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


def mac_to_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a 48-bit MAC address: {mac!r}")
    return raw


def mac_to_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def build_arp_frame(
    *,
    eth_dst: str,
    eth_src: str,
    op: int,
    sender_mac: str,
    sender_ip: str,
    target_mac: str,
    target_ip: str,
) -> bytes:
    """A complete Ethernet frame carrying one ARP packet, padded to 60 bytes."""
    header = _ETH_HEADER.pack(mac_to_bytes(eth_dst), mac_to_bytes(eth_src), ETH_P_ARP)
    body = _ARP_BODY.pack(
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        op,
        mac_to_bytes(sender_mac),
        socket.inet_aton(sender_ip),
        mac_to_bytes(target_mac),
        socket.inet_aton(target_ip),
    )
    return (header + body).ljust(_MIN_FRAME_LEN, b"\x00")


def build_arp_probe(our_mac: str, address: str) -> bytes:
    """RFC 5227 §2.1.1 probe: sender IP 0.0.0.0 so no receiver learns a mapping from it.

    Linux answers a probe for any of its local addresses from the kernel, so a frozen or
    hung agent elsewhere still reveals that its host holds the address.
    """
    return build_arp_frame(
        eth_dst=BROADCAST_MAC,
        eth_src=our_mac,
        op=ARPOP_REQUEST,
        sender_mac=our_mac,
        sender_ip=ZERO_IP,
        target_mac=ZERO_MAC,
        target_ip=address,
    )


def build_gratuitous_arp(our_mac: str, address: str) -> bytes:
    """RFC 5227 §2.3 announcement: a broadcast request with sender IP == target IP.

    Request form because Linux (arp.c, arp_is_garp) treats a request with sip == tip as
    gratuitous whatever the target MAC is, and a gratuitous packet overrides the neighbour
    locktime, so peers switch to our MAC at once. A gratuitous *reply* would additionally
    need tha == sha. Receivers without an entry for the address only learn it when
    net.ipv4.conf.*.arp_accept is set; that is fine, they will ARP when they need it.
    """
    return build_arp_frame(
        eth_dst=BROADCAST_MAC,
        eth_src=our_mac,
        op=ARPOP_REQUEST,
        sender_mac=our_mac,
        sender_ip=address,
        target_mac=ZERO_MAC,
        target_ip=address,
    )


def parse_arp(frame: bytes) -> ArpPacket | None:
    """The ARP packet in an Ethernet frame, or None for anything else (short, not
    Ethernet/IPv4 ARP, unknown opcode). Never raises on garbage: it reads from the wire."""
    if len(frame) < ARP_FRAME_LEN:
        return None
    eth_dst, eth_src, ethertype = _ETH_HEADER.unpack_from(frame, 0)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP_BODY.unpack_from(
        frame, _ETH_HEADER.size
    )
    if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, ETH_P_IP, 6, 4):
        return None
    if op not in (ARPOP_REQUEST, ARPOP_REPLY):
        return None
    return ArpPacket(
        eth_dst=mac_to_str(eth_dst),
        eth_src=mac_to_str(eth_src),
        op=op,
        sender_mac=mac_to_str(sha),
        sender_ip=socket.inet_ntoa(spa),
        target_mac=mac_to_str(tha),
        target_ip=socket.inet_ntoa(tpa),
    )


def claims_address(packet: ArpPacket, address: str, our_mac: str) -> bool:
    """True when packet shows another host using address: a reply, or a request (its own
    announcement or ordinary ARP traffic), sent *from* address by a MAC that is not ours."""
    return packet.sender_ip == address and packet.sender_mac != our_mac.lower()


# --- socket (needs CAP_NET_RAW; acts in the caller's network namespace) ---------------

# Classic BPF "ret #k": k = 0 drops the frame, k = 0xFFFF passes up to 64 KiB of it.
SO_ATTACH_FILTER = 26  # asm-generic/socket.h; the socket module does not export it
_BPF_RET_K = 0x06
_SOCK_FILTER = struct.Struct("HBBI")
_SOCK_FPROG = struct.Struct("HP")


class ArpSocket:
    """One long-lived packet socket per interface, for probes and announcements.

    Long-lived because closing (or rebinding) a packet socket waits for an RCU grace
    period in the kernel (synchronize_net): 10-20 ms idle, more on a busy host, on every
    failover step. Between probes a drop-everything BPF filter keeps the link's ARP chatter
    out of the queue, so the idle socket costs one filter instruction per ARP frame.
    """

    def __init__(self, ifname: str) -> None:
        # Protocol 0 at creation and the ARP protocol at bind: binding a socket that already
        # has a protocol hook would unregister it first, which is another grace period.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._set_filter(accept=False)
            self._sock.bind((ifname, ETH_P_ARP))
        except OSError:
            self._sock.close()
            raise
        self.ifname = ifname

    def send(self, frame: bytes) -> None:
        self._sock.send(frame)

    def exchange(
        self,
        frame: bytes,
        send_at: list[float],
        timeout_s: float,
        match: Callable[[ArpPacket], bool],
    ) -> bool:
        """Send frame at each offset in send_at (seconds from now); True as soon as a received
        ARP packet satisfies match, False once timeout_s has passed without one."""
        self._set_filter(accept=True)
        try:
            self._drain()  # frames queued before the last probe ended are stale
            return self._watch(frame, sorted(send_at), timeout_s, match)
        finally:
            self._set_filter(accept=False)

    def close(self) -> None:
        self._sock.close()

    def _watch(
        self,
        frame: bytes,
        pending: list[float],
        timeout_s: float,
        match: Callable[[ArpPacket], bool],
    ) -> bool:
        start = time.monotonic()
        deadline = start + timeout_s
        while True:
            now = time.monotonic()
            while pending and start + pending[0] <= now:
                pending.pop(0)
                self._sock.send(frame)
            if now >= deadline:
                return False
            wake = min(deadline, start + pending[0]) if pending else deadline
            readable, _, _ = select.select([self._sock], [], [], max(0.0, wake - now))
            if readable and self._received_match(match):
                return True

    def _received_match(self, match: Callable[[ArpPacket], bool]) -> bool:
        frame, addr = self._sock.recvfrom(2048)
        # Our own transmissions are looped back to packet sockets; they never count.
        if addr[2] == PACKET_OUTGOING:
            return False
        packet = parse_arp(frame)
        return packet is not None and match(packet)

    def _drain(self) -> None:
        while True:
            try:
                self._sock.recv(2048, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return

    def _set_filter(self, *, accept: bool) -> None:
        program = ctypes.create_string_buffer(
            _SOCK_FILTER.pack(_BPF_RET_K, 0, 0, 0xFFFF if accept else 0)
        )
        fprog = _SOCK_FPROG.pack(1, ctypes.addressof(program))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
