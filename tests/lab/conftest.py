"""Lab fixtures: every test gets its own uniquely named lab, torn down even on failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hacluster.lab.lab import UDP_PORT, Lab, cli_argv, random_prefix
from hacluster.lab.monitor import HolderMonitor
from hacluster.lab.netns import netns_list


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _root_and_tools():
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces); run them with scripts/test.sh")
    for tool in ("ip", "nft"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            pytest.fail(f"lab tests need `{tool}`: run scripts/setup.sh")


LOG_TAIL_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item: lab_factory shows the agents' logs when the
    test failed (CI keeps only pytest's output)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def _show_logs(lab: Lab) -> None:
    keep = os.environ.get("HACLUSTER_KEEP_LOGS")  # a directory: whole logs of failed tests land there
    if keep:
        dest = Path(keep) / lab.prefix
        dest.mkdir(parents=True, exist_ok=True)
        for path in lab.dir.glob("n*/agent.log"):
            shutil.copy(path, dest / f"{path.parent.name}.log")
    for path in sorted(lab.dir.glob("n*/agent.log")):
        try:
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            continue
        print(f"----- {lab.prefix} {path.parent.name} agent.log (last {len(lines)} lines)")
        print("\n".join(lines))


@pytest.fixture
def lab_factory(request):
    made: list[Lab] = []

    def make(nodes: int = 3, up: bool = True, **kw) -> Lab:
        lab = Lab(random_prefix("t", 7), nodes, **kw)
        made.append(lab)
        if up:
            lab.up()
        return lab

    yield make
    call = getattr(request.node, "rep_call", None)
    for lab in made:
        if call is not None and call.failed:
            _show_logs(lab)
        lab.down()
        leftovers = [ns for ns in netns_list() if ns.startswith(lab.prefix + "-")]
        assert not leftovers, f"lab {lab.prefix} left namespaces behind: {leftovers}"


@pytest.fixture
def lab(lab_factory) -> Lab:
    return lab_factory()


@pytest.fixture
def monitor(lab):
    """Samples VIP holders from kernel address events in every server namespace."""
    m = HolderMonitor.for_lab(lab)
    yield m
    m.stop()


def agent_status(lab: Lab, name: str, config=None) -> dict | None:
    """`hacluster status --agent --json` run inside the node's namespace, as an operator would."""
    node = lab.node(name)
    config = config or node.config
    proc = subprocess.run(
        cli_argv(node.netns, "status", "--agent", "--json", "--timeout", "1", "--config", str(config)),
        capture_output=True, text=True, timeout=15)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def assert_no_overlap(monitor: HolderMonitor):
    overlaps = monitor.overlaps()
    assert not overlaps, "two VIP holders at once: " + "; ".join(
        f"{sorted(h)} for {(e - s) * 1000:.1f} ms" for s, e, h in overlaps)


def cli_json(lab, name: str, *args: str) -> dict | None:
    """`hacluster ARGS --json` inside server `name`'s namespace (None if the call failed)."""
    node = lab.node(name)
    proc = subprocess.run(
        cli_argv(node.netns, *args, "--json", "--timeout", "5", "--config", str(node.config)),
        capture_output=True, text=True, timeout=20)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def events(lab, name: str) -> list[dict]:
    """`hacluster events --json` on server `name`: its own timeline, oldest first."""
    node = lab.node(name)
    r = subprocess.run(cli_argv(node.netns, "events", "--json", "--config", str(node.config)),
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def check_state(checks: dict, node: str, check: str = "web") -> str | None:
    for n in checks["nodes"]:
        if n["node"] == node:
            return next((c["state"] for c in n["checks"] if c["name"] == check), None)
    return None


def committed(checks: dict, node: str, check: str = "web") -> bool | None:
    return next((c["healthy"] for c in checks["committed"]
                 if c["node"] == node and c["check"] == check), None)


def gossip_state(members: dict, node: str) -> str | None:
    return next((m["state"] for m in members["members"] if m["id"] == node), None)


def all_healthy(lab) -> bool:
    names = [n.name for n in lab.nodes]
    for viewer in names:
        c = cli_json(lab, viewer, "checks")
        if c is None or any(check_state(c, n) != "passing" or committed(c, n) is not True
                            for n in names):
            return False
    return True


_COUNT_SCRIPT = """
import collections, http.client, json, sys, time
host, n, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
seen = collections.Counter()
for _ in range(n):
    if time.monotonic() > deadline:
        break
    c = http.client.HTTPConnection(host, 80, timeout=2)
    try:
        c.request("GET", "/")
        seen[c.getresponse().read().decode().strip()] += 1
    except OSError as e:
        seen["error: " + type(e).__name__] += 1
    finally:
        c.close()
print(json.dumps(seen))
"""


def served_by(lab, n: int, limit_s: float = 60.0) -> dict[str, int]:
    """n HTTP requests to the VIP from the client namespace, one connection each (bounded
    by count and by limit_s): which server answered how often."""
    proc = subprocess.run(["ip", "netns", "exec", lab.client_ns, sys.executable, "-c", _COUNT_SCRIPT,
                           lab.vip, str(n), str(limit_s)],
                          capture_output=True, text=True, timeout=limit_s + 30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# One UDP flow per source port: a datagram to VIP:port from client:sport, the answer is the
# backend's name; up to 3 tries per flow (0.5 s each, same 5-tuple). Prints a JSON list of
# names (or null for a flow that got no answer), in source-port order.
_UDP_SCRIPT = """
import json, socket, sys, time
vip, port, client, first, n, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], \\
    int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
end = time.monotonic() + limit
out = []
for i in range(n):
    if time.monotonic() > end:
        break
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(0.5)
    if first:
        s.bind((client, first + i))
    name = None
    for _ in range(3):
        s.sendto(b"who", (vip, port))
        try:
            name = s.recv(2048).decode().strip()
            break
        except socket.timeout:
            pass
    s.close()
    out.append(name)
print(json.dumps(out))
"""


def udp_flows(lab, n: int, first_port: int = 0, limit_s: float = 60.0) -> list[str | None]:
    """n UDP flows to the lab's "echo" service on the VIP from the client namespace, each
    from its own source port (first_port, first_port + 1, ... when given, so that the same
    flows can be sent again; else ephemeral): the backend that answered each (None: no
    answer after 3 tries)."""
    proc = subprocess.run(["ip", "netns", "exec", lab.client_ns, sys.executable, "-c", _UDP_SCRIPT,
                           lab.vip, str(UDP_PORT), lab.client_ip, str(first_port), str(n), str(limit_s)],
                          capture_output=True, text=True, timeout=limit_s + 30)
    assert proc.returncode == 0, proc.stderr
    names = json.loads(proc.stdout)
    assert len(names) == n, f"only {len(names)} of {n} UDP flows within {limit_s} s"
    return names


def service(view: dict, name: str = "web") -> dict:
    """One service of a `hacluster backends --json` view."""
    return next(s for s in view["services"] if s["name"] == name)
