"""Byte layouts of the ARP frames hacluster sends, and the parser that reads answers."""

from __future__ import annotations

import pytest

from hacluster.hostops import arp

OUR_MAC = "02:aa:bb:cc:dd:01"
PEER_MAC = "02:aa:bb:cc:dd:02"
VIP = "10.250.7.50"


def reply_from(sender_mac: str, sender_ip: str) -> bytes:
    """What a Linux kernel sends back to our probe: unicast reply, target IP 0.0.0.0."""
    return arp.build_arp_frame(
        eth_dst=OUR_MAC,
        eth_src=sender_mac,
        op=arp.ARPOP_REPLY,
        sender_mac=sender_mac,
        sender_ip=sender_ip,
        target_mac=OUR_MAC,
        target_ip="0.0.0.0",
    )


def test_probe_byte_layout() -> None:
    frame = arp.build_arp_probe(OUR_MAC, VIP)
    our = bytes.fromhex("02aabbccdd01")
    expected = (
        b"\xff" * 6  # Ethernet destination: broadcast
        + our  # Ethernet source
        + b"\x08\x06"  # ethertype ARP
        + b"\x00\x01\x08\x00\x06\x04"  # Ethernet, IPv4, hlen 6, plen 4
        + b"\x00\x01"  # request
        + our
        + bytes(4)  # sender IP 0.0.0.0 (RFC 5227 probe)
        + bytes(6)  # target MAC zero
        + bytes([10, 250, 7, 50])
    )
    assert frame[: arp.ARP_FRAME_LEN] == expected
    assert len(frame) == 60  # padded to the Ethernet minimum
    assert frame[arp.ARP_FRAME_LEN :] == bytes(60 - arp.ARP_FRAME_LEN)


def test_gratuitous_arp_is_a_broadcast_request_with_sender_ip_equal_target_ip() -> None:
    packet = arp.parse_arp(arp.build_gratuitous_arp(OUR_MAC, VIP))
    assert packet == arp.ArpPacket(
        eth_dst=arp.BROADCAST_MAC,
        eth_src=OUR_MAC,
        op=arp.ARPOP_REQUEST,
        sender_mac=OUR_MAC,
        sender_ip=VIP,
        target_mac=arp.ZERO_MAC,
        target_ip=VIP,
    )


def test_round_trip_of_every_field() -> None:
    fields = dict(
        eth_dst="01:02:03:04:05:06",
        eth_src="0a:0b:0c:0d:0e:0f",
        op=arp.ARPOP_REPLY,
        sender_mac="10:20:30:40:50:60",
        sender_ip="192.168.1.2",
        target_mac="a0:b0:c0:d0:e0:f0",
        target_ip="172.16.0.9",
    )
    assert arp.parse_arp(arp.build_arp_frame(**fields)) == arp.ArpPacket(**fields)


def test_parse_accepts_an_unpadded_42_byte_frame() -> None:
    frame = arp.build_arp_probe(OUR_MAC, VIP)[: arp.ARP_FRAME_LEN]
    packet = arp.parse_arp(frame)
    assert packet is not None and packet.target_ip == VIP and packet.sender_ip == "0.0.0.0"


def test_mac_upper_case_and_dashes_are_normalised() -> None:
    packet = arp.parse_arp(arp.build_arp_probe("02-AA-BB-CC-DD-01", VIP))
    assert packet is not None and packet.sender_mac == OUR_MAC


@pytest.mark.parametrize("bad", ["02:aa:bb", "02:aa:bb:cc:dd:ee:ff", "zz:aa:bb:cc:dd:ee"])
def test_bad_mac_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        arp.build_arp_probe(bad, VIP)


def test_short_and_empty_frames_are_rejected() -> None:
    frame = reply_from(PEER_MAC, VIP)
    assert arp.parse_arp(b"") is None
    assert arp.parse_arp(frame[: arp.ARP_FRAME_LEN - 1]) is None


def _patched(frame: bytes, offset: int, value: bytes) -> bytes:
    return frame[:offset] + value + frame[offset + len(value) :]


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (12, b"\x08\x00"),  # ethertype IPv4, not ARP
        (14, b"\x00\x06"),  # hardware type IEEE 802, not Ethernet
        (16, b"\x86\xdd"),  # protocol IPv6
        (18, b"\x08"),  # hardware length 8
        (19, b"\x10"),  # protocol length 16
        (20, b"\x00\x03"),  # RARP request opcode
    ],
)
def test_frames_that_are_not_ethernet_ipv4_arp_are_rejected(offset: int, value: bytes) -> None:
    assert arp.parse_arp(_patched(reply_from(PEER_MAC, VIP), offset, value)) is None


def test_garbage_never_raises() -> None:
    for size in range(0, 80, 7):
        assert arp.parse_arp(bytes(range(size))) is None
        assert arp.parse_arp(b"\xff" * size) is None


def test_a_reply_from_another_mac_claims_the_address() -> None:
    packet = arp.parse_arp(reply_from(PEER_MAC, VIP))
    assert packet is not None
    assert arp.claims_address(packet, VIP, OUR_MAC)


def test_a_request_from_the_address_claims_it_too() -> None:
    packet = arp.parse_arp(arp.build_gratuitous_arp(PEER_MAC, VIP))
    assert packet is not None
    assert arp.claims_address(packet, VIP, OUR_MAC)


def test_our_own_frames_and_other_addresses_do_not_claim() -> None:
    ours = arp.parse_arp(reply_from(OUR_MAC, VIP))
    other_ip = arp.parse_arp(reply_from(PEER_MAC, "10.250.7.51"))
    # Another host probing for the VIP (sender 0.0.0.0) does not hold it.
    peer_probe = arp.parse_arp(arp.build_arp_probe(PEER_MAC, VIP))
    assert ours is not None and other_ip is not None and peer_probe is not None
    assert not arp.claims_address(ours, VIP, OUR_MAC.upper())
    assert not arp.claims_address(other_ip, VIP, OUR_MAC)
    assert not arp.claims_address(peer_probe, VIP, OUR_MAC)


def test_parse_addr_dump_reads_index_prefix_and_local_address():
    import socket
    import struct

    from hacluster.hostops.netlink import NLMSG_DONE, RTM_NEWADDR, parse_addr_dump

    def rta(kind, payload):
        return struct.pack("=HH", 4 + len(payload), kind) + payload

    def msg(kind, seq, body):
        return struct.pack("=IHHII", 16 + len(body), kind, 2, seq, 0) + body

    addr = socket.inet_aton("10.0.0.100")
    entry = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 7) + rta(1, addr) + rta(2, addr)
    other = struct.pack("=BBBBI", socket.AF_INET, 8, 0, 0, 1) + rta(2, socket.inet_aton("127.0.0.1"))
    found: set = set()
    done, err = parse_addr_dump(msg(RTM_NEWADDR, 5, entry) + msg(RTM_NEWADDR, 4, other), 5, found)
    assert (done, err) == (False, 0) and found == {(7, 24, addr)}  # seq 4 is someone else's
    done, err = parse_addr_dump(msg(NLMSG_DONE, 5, b"\0\0\0\0"), 5, found)
    assert done and err == 0
    assert parse_addr_dump(b"\x01\x02", 5, set()) == (False, 0)  # truncated: nothing read
