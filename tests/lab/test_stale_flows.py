"""A closed flow's entry must not take a new connection to a dead backend (CI, issue 16's
membership test): the VIP holder's conntrack entries of closed flows came from the previous
holder through conntrackd, and the kernel reopens only the entries it saw close itself; a
client that reused a source port went where the old entry pointed, to a server removed
since, and timed out. Once a backend leaves the table or goes down, the holder forgets the
dead flows to it (closed, never answered), and such a connection is balanced afresh.

Real kernel, real conntrackd: a request from a chosen source port answered by server X
through the first holder; a switchover (its synced entries committed on the new holder);
X's backend stops; the same source port is served by a live backend.
"""

from __future__ import annotations

import subprocess
import sys

from hacluster.lab.lab import HTTP_PORT, Lab, cli_argv
from hacluster.lab.netns import run
from tests.lab.test_continuity import wait_sync_ok
from tests.support.wait import wait_until

# One request from a fixed source port; prints the answering server's name, or the error.
_GET = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(2.0)
try:
    s.bind(("0.0.0.0", int(sys.argv[3])))
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip() or "?")
except OSError as e:
    print(f"error: {type(e).__name__}")
"""


def get_from(lab: Lab, port: int) -> str:
    proc = subprocess.run(["ip", "netns", "exec", lab.client_ns, sys.executable, "-c", _GET, lab.vip,
                           str(HTTP_PORT), str(port)], capture_output=True, text=True, timeout=15)
    return proc.stdout.strip()


def entries_from(lab: Lab, name: str, port: int) -> str:
    """The conntrack entries of the client's flows from source `port`, on server `name`."""
    return run("ip", "netns", "exec", lab.node(name).netns, "conntrack", "-L", "-p", "tcp",
               "-s", lab.client_ip, "--sport", str(port), check=False)


def test_a_reused_source_port_goes_to_a_live_backend_once_the_old_one_is_down(lab_factory):
    lab = lab_factory(algorithm="round-robin")
    holder = lab.wait_single_holder(10)
    wait_sync_ok(lab)
    # a request through the first holder that a backend on another server answered
    port, x = next((p, who) for p in range(41000, 41060)
                   if (who := get_from(lab, p)) in {n.name for n in lab.nodes} - {holder})
    target = next(n.name for n in lab.nodes if n.name not in (holder, x))
    x_ip = lab.node(x).ip
    h = lab.node(holder)
    proc = subprocess.run(cli_argv(h.netns, "failover", "--to", target, "--config", str(h.config)),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert lab.wait_single_holder(10) == target
    # the closed flow's entry reached the new holder with the sync, pointing to X
    wait_until(lambda: f"src={x_ip}" in entries_from(lab, target, port), 10,
               f"the synced entry of port {port} (to {x}) on {target}")
    lab.stop_backend(lab.node(x))
    wait_until(lambda: f"src={x_ip}" not in entries_from(lab, target, port), 20,
               f"{target} to forget the closed flow to {x} once its backend is down")
    answered = get_from(lab, port)
    assert answered in {holder, target}, f"source port {port} again: {answered!r}"
