"""One Raft connection's frames (consensus/connection.py): each is decrypted and its HMAC
checked once, its send time read from the checked token, and a frame stamped before the last
one accepted, a tampered one or a short read of many are handled as before.

A real socketpair; the poller is a recorder (its events are delivered by hand).
"""

from __future__ import annotations

import socket
import zlib
from typing import Any

import pytest
from cryptography.fernet import Fernet

from hacluster.consensus.connection import Connection, _fernet_stamp
from hacluster.consensus.pysyncobj_compat import wire_pickle
from hacluster.consensus.transport import LENGTH, READ, Gate


class _Poller:
    def subscribe(self, fd: int, callback: Any, mask: int) -> None:
        self.callback = callback

    def unsubscribe(self, fd: int) -> None:
        pass


def _frame(f: Fernet, message: Any, stamp: int) -> bytes:
    token = f.encrypt_at_time(zlib.compress(wire_pickle.dumps(message), 3), stamp)
    return LENGTH.pack(len(token)) + token


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    f = Fernet(Fernet.generate_key())
    gate = Gate()
    conn = Connection(_Poller(), wire_pickle, gate, sock=ours, source="127.0.0.1", timeout=10,
                      send_buffer=65536, recv_buffer=65536, keepalive=None)
    conn.encryptor = f
    conn.authenticated = True
    got: list[Any] = []
    conn.setOnMessageReceivedCallback(got.append)
    yield conn, theirs, f, gate, got
    conn.disconnect()
    theirs.close()


def test_the_stamp_read_from_the_token_is_fernets():
    f = Fernet(Fernet.generate_key())
    for stamp in (0, 1, 1_700_000_000, 2**40 + 7):
        token = f.encrypt_at_time(b"x" * 40, stamp)
        assert _fernet_stamp(token) == f.extract_timestamp(token) == stamp


def test_frames_in_order_are_delivered_and_an_older_one_closes_the_connection(pair):
    conn, theirs, f, gate, got = pair
    theirs.sendall(_frame(f, {"n": 1}, 10) + _frame(f, {"n": 2}, 10) + _frame(f, {"n": 3}, 11))
    conn._on_event(conn.fileno(), READ)
    assert got == [{"n": 1}, {"n": 2}, {"n": 3}]
    theirs.sendall(_frame(f, {"n": 4}, 9))  # stamped before the last one: a replay
    conn._on_event(conn.fileno(), READ)
    assert got == [{"n": 1}, {"n": 2}, {"n": 3}] and gate.stats.bad_frames == 1
    assert conn.fileno() is None  # closed


def test_a_frame_whose_stamp_was_altered_is_refused(pair):
    conn, theirs, f, gate, got = pair
    frame = bytearray(_frame(f, {"n": 1}, 10))
    # the stamp's last base64 character (bytes 1-8 of the token are the stamp)
    i = LENGTH.size + 11
    frame[i] = ord("A") if frame[i] != ord("A") else ord("B")
    theirs.sendall(bytes(frame))
    conn._on_event(conn.fileno(), READ)
    assert got == [] and gate.stats.bad_frames == 1 and conn.fileno() is None


def test_a_frame_that_arrives_in_pieces_is_delivered_once_whole(pair):
    conn, theirs, f, gate, got = pair
    frame = _frame(f, {"n": 1}, 10)
    theirs.sendall(frame[:7])
    conn._on_event(conn.fileno(), READ)
    assert got == []
    theirs.sendall(frame[7:])
    conn._on_event(conn.fileno(), READ)
    assert got == [{"n": 1}] and gate.stats.bad_frames == 0
