"""The hostile clients of bench/nemesis.py, run inside a lab server's namespace:

    ip netns exec NS python bench/_nemesis_load.py flood HOST:PORT[,HOST:PORT...]
        [--seconds 10] [--conns 4]
    ip netns exec NS python bench/_nemesis_load.py hold HOST:PORT [--count 2000] [--seconds 10]

flood: per target, `--conns` connections that each send a frame header announcing 0x7fffffff
bytes (pysyncobj's 4-byte big-endian length; it buffers the body before any authentication),
then junk as fast as the peer takes it; a connection the peer closes is opened again.
hold: open up to `--count` TCP connections and leave them idle (not a byte sent), so that the
peer must spend a file descriptor on each until it times them out.

Both are bounded in time (`--seconds`), connections and bytes, and print one JSON line of
counts on stdout when they end. Run from a member's namespace, the traffic comes from a
member address, which the Raft guard lets through (as it would from a compromised member).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time
from typing import Any

HEADER = struct.pack(">I", 0x7FFFFFFF)  # the largest length pysyncobj accepts (2 GiB - 1)
CHUNK = 65536
MAX_BYTES_PER_CONN = 1 << 30  # a connection stops after 1 GiB (never reached in 10 s here)
REOPEN_DELAY_S = 0.1  # a refused connect is retried this much later, not in a tight loop
MAX_OPENS_PER_TARGET = 2000


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def flood(targets: list[str], seconds: float, conns: int) -> dict[str, Any]:
    sel = selectors.DefaultSelector()
    junk = memoryview(os.urandom(CHUNK))
    stats = {t: {"opened": 0, "connected": 0, "refused": 0, "closed_by_peer": 0, "bytes": 0}
             for t in targets}
    retry: list[tuple[float, str]] = [(0.0, t) for t in targets for _ in range(conns)]
    deadline = time.monotonic() + seconds

    def open_one(target: str) -> None:
        if stats[target]["opened"] >= MAX_OPENS_PER_TARGET:
            return
        stats[target]["opened"] += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(_endpoint(target))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            stats[target]["refused"] += 1
            retry.append((time.monotonic() + REOPEN_DELAY_S, target))
            return
        # state: target, pending bytes, connected yet, bytes sent on this connection
        sel.register(s, selectors.EVENT_WRITE, [target, memoryview(HEADER + bytes(junk)), False, 0])

    def drop(s: socket.socket, st: list[Any], why: str) -> None:
        sel.unregister(s)
        s.close()
        stats[st[0]][why] += 1
        retry.append((time.monotonic() + REOPEN_DELAY_S, st[0]))

    while (now := time.monotonic()) < deadline:
        due = [r for r in retry if r[0] <= now]
        retry[:] = [r for r in retry if r[0] > now]
        for _, t in due:
            open_one(t)
        for key, _ in sel.select(timeout=min(0.05, max(0.0, deadline - now))):
            s, st = key.fileobj, key.data
            assert isinstance(s, socket.socket)
            if not st[2]:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    drop(s, st, "refused")
                    continue
                st[2] = True
                stats[st[0]]["connected"] += 1
            try:
                n = s.send(st[1])
            except BlockingIOError:
                continue
            except OSError:
                drop(s, st, "closed_by_peer")
                continue
            st[3] += n
            stats[st[0]]["bytes"] += n
            st[1] = st[1][n:] if n < len(st[1]) else junk
            if st[3] >= MAX_BYTES_PER_CONN:
                sel.unregister(s)
                s.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return {"mode": "flood", "seconds": seconds, "conns_per_target": conns, "targets": stats}


def hold(target: str, count: int, seconds: float) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    deadline = time.monotonic() + seconds
    open_by = time.monotonic() + min(seconds, 5.0)  # connecting stops after 5 s
    sel = selectors.DefaultSelector()
    stats = {"target": target, "asked": count, "connected": 0, "refused": 0, "pending": 0,
             "closed_by_peer": 0, "errors": {}}
    socks: list[socket.socket] = []
    for _ in range(count):
        if time.monotonic() >= open_by:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(_endpoint(target))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            stats["refused"] += 1
            name = errno.errorcode.get(err, str(err))
            stats["errors"][name] = stats["errors"].get(name, 0) + 1
            continue
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, "connecting")
    while (now := time.monotonic()) < deadline:
        for key, _ in sel.select(timeout=min(0.2, max(0.0, deadline - now))):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if key.data == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    stats["refused"] += 1
                    sel.unregister(s)
                    continue
                stats["connected"] += 1
                sel.modify(s, selectors.EVENT_READ, "idle")
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:  # the peer closed it (or reset): it no longer costs the peer an fd
                stats["closed_by_peer"] += 1
                sel.unregister(s)
    stats["pending"] = sum(1 for k in sel.get_map().values() if k.data == "connecting")
    stats["open_at_end"] = sum(1 for k in sel.get_map().values() if k.data == "idle")
    for s in socks:
        s.close()
    return {"mode": "hold", "seconds": seconds, **stats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("flood")
    f.add_argument("targets", help="HOST:PORT[,HOST:PORT...]")
    f.add_argument("--seconds", type=float, default=10.0)
    f.add_argument("--conns", type=int, default=4)
    h = sub.add_parser("hold")
    h.add_argument("target", help="HOST:PORT")
    h.add_argument("--count", type=int, default=2000)
    h.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args(argv)
    if not 0 < a.seconds <= 120:
        p.error("--seconds must be in (0, 120]")
    if a.mode == "flood":
        if not 1 <= a.conns <= 64:
            p.error("--conns must be 1-64")
        out = flood([t for t in a.targets.split(",") if t], a.seconds, a.conns)
    else:
        if not 1 <= a.count <= 20000:
            p.error("--count must be 1-20000")
        out = hold(a.target, a.count, a.seconds)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
