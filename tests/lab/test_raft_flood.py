"""The Raft-port flood of the security review (issue 15, finding 1), on a real 3-node lab.

A plain process in one member's namespace streams a bogus frame (a 2 GiB length, then
zeros, as fast as the peer takes them, reconnecting whenever it is closed) at the three
Raft ports for FLOOD_S. Its packets come from a member address (or loopback, to its own
node), so the Raft port guard lets them in: only the agents' transport stands between the
stream and pysyncobj's tick thread. Before the fix the lab had no VIP holder for the whole
flood (12.9 s); now neither the leader, nor its term, nor the VIP holder may change, and
the VIP is held without a gap.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from hacluster.lab.lab import RAFT_PORT
from tests.support.wait import wait_until

from .conftest import agent_status, assert_no_overlap

FLOOD_S = 10.0

# argv: seconds, then HOST:PORT targets. One thread per target; bounded by time and by a
# count of connections. Prints what it did, as JSON.
FLOODER = r"""
import json, socket, struct, sys, threading, time
seconds, targets = float(sys.argv[1]), sys.argv[2:]
until = time.monotonic() + seconds
stats = {"connections": 0, "sent_mib": 0.0, "connect_errors": 0, "longest_open_s": 0.0}
chunk = b"\0" * 65536

def run(target):
    host, port = target.rsplit(":", 1)
    sent = 0
    while time.monotonic() < until and stats["connections"] < 200000:
        try:
            s = socket.create_connection((host, int(port)), timeout=0.5)
        except OSError:
            stats["connect_errors"] += 1
            time.sleep(0.005)
            continue
        stats["connections"] += 1
        opened = time.monotonic()
        try:
            s.sendall(struct.pack("i", 2**31 - 1))
            while time.monotonic() < until:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            stats["longest_open_s"] = max(stats["longest_open_s"], time.monotonic() - opened)
            s.close()
    stats["sent_mib"] += sent / 2**20

threads = [threading.Thread(target=run, args=(t,)) for t in targets]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(stats))
"""


def _views(lab) -> dict[str, dict]:
    out = {}
    for n in lab.nodes:
        st = agent_status(lab, n.name)
        assert st is not None, f"{n.name}: no status"
        out[n.name] = st
    return out


def _without_holder_s(monitor, start: float, end: float) -> float:
    """Seconds between start and end during which no server held the VIP."""
    timeline = monitor.timeline()
    holders = frozenset()
    for t, h in timeline:
        if t > start:
            break
        holders = h
    total, since = 0.0, (start if not holders else None)
    for t, h in timeline:
        if not start < t <= end:
            continue
        if not h and since is None:
            since = t
        elif h and since is not None:
            total, since = total + t - since, None
    return total + (end - since if since is not None else 0.0)


def test_a_flood_at_every_raft_port_moves_neither_leader_nor_vip(lab, monitor):
    holder = lab.wait_single_holder(30)
    before = wait_until(lambda: (v := _views(lab)) and all(s["leader"] == holder for s in v.values()) and v,
                        15, f"every member following {holder}")
    terms = {name: s["term"] for name, s in before.items()}
    flood_ns = lab.node(holder).netns  # the leader's own host: to itself on loopback, to the others
    targets = [f"{n.ip}:{RAFT_PORT}" for n in lab.nodes]
    started = time.time()
    flooder = subprocess.run(["ip", "netns", "exec", flood_ns, sys.executable, "-c", FLOODER,
                              str(FLOOD_S), *targets],
                             capture_output=True, text=True, timeout=FLOOD_S + 30)
    ended = time.time()
    assert flooder.returncode == 0, flooder.stderr
    stats = json.loads(flooder.stdout)

    after = _views(lab)
    timeline = [(t, h) for t, h in monitor.timeline() if started <= t <= ended]
    renewals = [t for t, name, present in sorted(monitor.events)
                if name == holder and present and started <= t <= ended]
    gaps = [b - a for a, b in zip([started, *renewals], [*renewals, ended], strict=True)]
    print(f"flood from {holder}'s namespace for {ended - started:.1f} s: {stats['connections']} "
          f"connections, {stats['sent_mib']:.0f} MiB written, {stats['connect_errors']} connect "
          f"errors, longest connection open {stats['longest_open_s'] * 1000:.0f} ms; VIP renewals "
          f"by {holder}: {len(renewals)}, longest gap {max(gaps) * 1000:.0f} ms; without a holder "
          f"{_without_holder_s(monitor, started, ended):.2f} s")

    logs = "\n".join(f"--- {n.name}:\n{lab.tail(n, 25)}" for n in lab.nodes)
    assert stats["connections"] >= 3, "the flood never reached the Raft ports"
    assert {name: s["term"] for name, s in after.items()} == terms, f"an election happened\n{logs}"
    assert all(s["leader"] == holder for s in after.values()), logs
    assert after[holder]["role"] == "leader" and after[holder]["lease_ok"], logs
    assert all(h == frozenset({holder}) for _, h in timeline), f"the VIP left its holder\n{logs}"
    assert lab.holders() == [holder]
    assert_no_overlap(monitor)
    # the agents refused the stream (and said so), not the kernel
    refused = wait_until(lambda: [n.name for n in lab.nodes if "raft port, last" in lab.tail(n, 400)],
                         15, "an agent's summary of the refused frames")
    print(f"refusals reported by {refused}")
