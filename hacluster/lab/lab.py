"""Build, operate and tear down a cluster of network namespaces (DESIGN.md §7).

Topology for prefix P: a switch namespace `P-sw` holding bridge `br0`; server namespaces
`P-n1..P-nN` and a client namespace `P-client`, each with an `eth0` veth whose other end
(`v-n1`, ..., `v-client`) is a port of the bridge. The bridge lives in its own namespace so
that the lab never touches the host's interfaces or routes. Cutting a server's cable is
`ip -n P-sw link set v-nX down`.

Every file lives under /run/hacluster-lab/P; `down()` removes namespaces, processes and
files by prefix, so it also cleans up after a crashed run that left no description behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hacluster import certs
from hacluster.lab.backend import MLLP_PORT
from hacluster.lab.cgroup import cpu_limited, remove_groups
from hacluster.lab.netns import (
    LabError,
    holds,
    ip,
    kill_netns_processes,
    netns_list,
    nft,
    run,
)

LAB_ROOT = Path(os.environ.get("HACLUSTER_LAB_ROOT", "/run/hacluster-lab"))
RAFT_PORT, GRPC_PORT, HTTP_PORT = 7100, 7101, 80
MAX_NODES = 25  # n1..n25 at NET.11-35 (externals at NET.51-59)
METRICS_PORT = 9464  # each server's Prometheus metrics, on its own address
UDP_PORT = 5300  # balanced labs: the UDP service "echo" (each backend answers its name)
DEFAULT_CHECKS: list[dict[str, Any]] = [
    {"name": "web", "kind": "http", "port": HTTP_PORT, "path": "/", "interval_ms": 500,
     "timeout_ms": 300, "rise": 2, "fall": 2},
]


def subnet_for(prefix: str) -> str:
    """A /24 in 10.128.0.0/9 derived from the prefix, so labs with other prefixes coexist."""
    h = int.from_bytes(hashlib.sha256(prefix.encode()).digest()[:2], "big")
    return f"10.{128 + (h >> 8) % 128}.{h & 0xFF}"


def check_prefix(prefix: str) -> None:
    if not (1 <= len(prefix) <= 8 and prefix.replace("-", "").isalnum() and prefix[0].isalpha()):
        raise LabError(f"lab name {prefix!r}: use 1-8 letters/digits starting with a letter")


def random_prefix(base: str, length: int = 8) -> str:
    """A fresh lab prefix such as `bf3fa2c1`: `base`, then random hex digits up to `length`
    characters, so that labs of tests and benchmarks running at once never share a name."""
    prefix = (base + secrets.token_hex(4))[:length]
    check_prefix(prefix)
    return prefix


def cli_argv(netns: str, *args: str, python: str = sys.executable) -> list[str]:
    """The command line of `hacluster ARGS` run inside namespace `netns`, as an operator on
    that server would run it (the installed package, started with `python`)."""
    return ["ip", "netns", "exec", netns, python, "-m", "hacluster_cli.main", *args]


@dataclass
class LabNode:
    name: str
    netns: str
    ip: str
    port: str  # bridge port in the switch namespace
    config: Path
    data_dir: Path
    log: Path
    agent: subprocess.Popen[bytes] | None = None
    backend: subprocess.Popen[bytes] | None = None
    voter: bool = True  # False: a non-voting member (issue 16)
    agent_pid: int | None = None  # an agent another process started (a lab read from lab.json)

    @property
    def admin(self) -> str:
        return f"{self.ip}:{GRPC_PORT}"


WAVE = 4  # non-voters started together (Lab._start_in_waves)


def _follows(node: LabNode) -> bool:
    """The agent's log says it follows a leader (its loop's sentence: "follower of nX")."""
    try:
        return "follower of " in node.log.read_text(errors="replace")
    except OSError:
        return False


class Lab:
    def __init__(self, prefix: str = "hcl", nodes: int = 3, timing: dict[str, int] | None = None,
                 python: str = sys.executable, log_level: str = "info",
                 checks: list[dict[str, Any]] | None = None, gossip: dict[str, int] | None = None,
                 balance: bool = True, algorithm: str = "maglev", dataplane: str = "auto",
                 externals: int = 0, conntrack_sync: str = "auto", voters: int | None = None):
        check_prefix(prefix)
        if not 1 <= nodes <= MAX_NODES:
            raise LabError(f"--nodes must be 1-{MAX_NODES}, got {nodes}")
        if voters is not None and not 1 <= voters <= nodes:
            raise LabError(f"--voters must be 1-{nodes} (the number of servers), got {voters}")
        self.prefix = prefix
        self.n = nodes
        self.timing = timing or {}
        # Every server checks its own lab backend over HTTP (the one the VIP serves).
        self.checks = DEFAULT_CHECKS if checks is None else checks
        self.gossip = gossip or {}
        # balance: the VIP's HTTP service goes through the balancing table over every
        # server's backend (the default); otherwise the VIP holder's own backend answers
        # (no table: the failover benchmark measures VIP moves alone, as keepalived does).
        self.balance = balance
        self.dataplane = dataplane  # auto | nftables | proxy (the agents' data plane)
        # maglev: every member maps a flow to the same backend, synced or not (docs/snat.md)
        self.algorithm = algorithm
        self.conntrack_sync = conntrack_sync  # off | auto | on (conntrackd between the servers)
        self.log_level = log_level
        self.python = python
        self.dir = LAB_ROOT / prefix
        self.pki = self.dir / "pki"
        self.net = subnet_for(prefix)
        self.sw = f"{prefix}-sw"
        self.client_ns = f"{prefix}-client"
        self.client_ip = f"{self.net}.2"
        self.vip = f"{self.net}.100"
        if not 0 <= externals <= 9 or (externals and not balance):
            raise LabError("externals (hosts that are backends but not members): 0-9, balanced labs only")
        # external hosts: a namespace with a backend (HTTP + UDP), no agent, at NET.51...
        self.externals = [
            LabNode(name=f"x{i}", netns=f"{prefix}-x{i}", ip=f"{self.net}.{50 + i}", port=f"v-x{i}",
                    config=self.dir / f"x{i}" / "none", data_dir=self.dir / f"x{i}",
                    log=self.dir / f"x{i}" / "backend.log")
            for i in range(1, externals + 1)
        ]
        self.nodes = [
            LabNode(name=f"n{i}", netns=f"{prefix}-n{i}", ip=f"{self.net}.{10 + i}",
                    port=f"v-n{i}", config=self.dir / f"n{i}" / "hacluster.yaml",
                    data_dir=self.dir / f"n{i}" / "data", log=self.dir / f"n{i}" / "agent.log")
            for i in range(1, nodes + 1)
        ]
        for node in self.nodes[voters or nodes:]:  # the first `voters` servers vote
            node.voter = False

    def params(self) -> dict[str, Any]:
        """What Lab() was built with (lab.json keeps it: `lab add` builds its server alike)."""
        return {"timing": self.timing, "log_level": self.log_level, "checks": self.checks,
                "gossip": self.gossip, "balance": self.balance, "algorithm": self.algorithm,
                "dataplane": self.dataplane, "conntrack_sync": self.conntrack_sync,
                "externals": len(self.externals)}

    @classmethod
    def from_description(cls, desc: dict[str, Any], python: str = sys.executable) -> Lab:
        """The Lab of a running lab (lab.json), its agents known by pid."""
        lab = cls(desc["name"], len(desc["nodes"]), python=python, **desc["params"])
        lab.nodes = [LabNode(name=n["name"], netns=n["netns"], ip=n["ip"], port=f"v-{n['name']}",
                             config=Path(n["config"]), data_dir=Path(n["data_dir"]), log=Path(n["log"]),
                             voter=n.get("voter", True), agent_pid=n.get("agent_pid"))
                     for n in desc["nodes"]]
        return lab

    def new_node(self) -> LabNode:
        i = max(int(n.name[1:]) for n in self.nodes) + 1 if self.nodes else 1
        if i > MAX_NODES:
            raise LabError(f"a lab has at most {MAX_NODES} servers (n1..n{MAX_NODES})")
        return LabNode(name=f"n{i}", netns=f"{self.prefix}-n{i}", ip=f"{self.net}.{10 + i}",
                       port=f"v-n{i}", config=self.dir / f"n{i}" / "hacluster.yaml",
                       data_dir=self.dir / f"n{i}" / "data", log=self.dir / f"n{i}" / "agent.log")

    def save_description(self) -> dict[str, Any]:
        desc = self.describe()
        (self.dir / "lab.json").write_text(json.dumps(desc, indent=2))
        return desc

    # ------------------------------------------------------------------ build

    def up(self, wait_s: float = 30.0) -> dict[str, Any]:
        if any(ns.startswith(self.prefix + "-") for ns in netns_list()):
            raise LabError(f"a lab named {self.prefix!r} already exists: "
                           f"run `hacluster lab down --name {self.prefix}` first")
        try:
            self._build_network()
            self._write_files()
            voters = [n for n in self.nodes if n.voter]
            for node in voters:
                self.start_backend(node)
                self.start_agent(node)
            for ext in self.externals:
                self.start_backend(ext)
            self.wait_single_holder(wait_s)
            self._start_in_waves([n for n in self.nodes if not n.voter], wait_s)
        except BaseException:
            self.down()
            raise
        return self.save_description()

    def _start_in_waves(self, nodes: list[LabNode], wait_s: float) -> None:
        """Non-voters join the voters' running cluster WAVE at a time, each wave once its
        agents follow the leader: 22 agents starting at once on a 2-CPU machine (imports,
        TLS, the cluster's first commits) starved the voters' loops and no leader held
        (bench/scale.py at 25 servers)."""
        for i in range(0, len(nodes), WAVE):
            wave = nodes[i:i + WAVE]
            for node in wave:
                self.start_backend(node)
                self.start_agent(node)
            deadline = time.monotonic() + wait_s
            while self.log_level in ("debug", "info") and not all(_follows(n) for n in wave):
                if time.monotonic() > deadline:
                    late = [n.name for n in wave if not _follows(n)]
                    raise LabError(f"non-voters {', '.join(late)} did not follow a leader within "
                                   f"{wait_s:g} s (see their agent.log)")
                time.sleep(0.1)

    def _build_network(self) -> None:
        ip("netns", "add", self.sw)
        ip("link", "add", "br0", "type", "bridge", ns=self.sw)
        ip("link", "set", "br0", "up", ns=self.sw)
        ip("link", "set", "lo", "up", ns=self.sw)
        hosts = [(n.netns, n.port, n.ip) for n in self.nodes + self.externals]
        hosts.append((self.client_ns, "v-client", self.client_ip))
        for ns, port, addr in hosts:
            self.add_host(ns, port, addr)

    def add_host(self, ns: str, port: str, addr: str) -> None:
        """A namespace with eth0 at `addr`, plugged into the lab's switch as `port`."""
        ip("netns", "add", ns)
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.sw)
        ip("link", "set", port, "master", "br0", "up", ns=self.sw)
        ip("link", "set", "lo", "up", ns=ns)
        ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        # The VIP holder forwards balanced flows to the other servers' backends.
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def _write_files(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = self.dir / "secret"
        secret.write_text(secrets.token_hex(24) + "\n")
        secret.chmod(0o600)
        # The lab's PKI: a CA, one node certificate per server, an admin certificate that
        # `hacluster --config` uses, and a reader one (PREFIX/pki; keys 0600).
        pki = self.pki
        certs.init_ca(pki, self.prefix)
        certs.issue(pki, pki, "admin", "lab-admin")
        certs.issue(pki, pki, "reader", "lab-reader")
        for n in self.nodes:
            certs.issue(pki, pki, "node", n.name, [n.ip])
        self.write_configs()

    def write_configs(self) -> None:
        """Every server's config file, for the servers the lab has now (`lab add` and `lab
        remove` rewrite them: the members (which only seed a new cluster) and the backends)."""
        secret, pki = self.dir / "secret", self.pki
        members = [{"id": n.name, "address": n.ip, "raft_port": RAFT_PORT, "grpc_port": GRPC_PORT,
                    **({} if n.voter else {"voter": False})} for n in self.nodes]
        backends = [{"node": m.name} for m in self.nodes] + [{"address": x.ip} for x in self.externals]
        for n in self.nodes:
            n.config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            doc = {
                "cluster": self.prefix, "node_id": n.name, "members": members,
                "vips": [{"address": self.vip, "prefix": 24, "interface": "eth0"}],
                "data_dir": str(n.data_dir), "secret_file": str(secret),
                "tls": {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / f"{n.name}.crt"),
                        "key_file": str(pki / f"{n.name}.key"),
                        "cli_cert_file": str(pki / "lab-admin.crt"),
                        "cli_key_file": str(pki / "lab-admin.key")},
                "metrics": {"listen": f"{n.ip}:{METRICS_PORT}"},
                "timing": dict(self.timing), "log_level": self.log_level,
                "gossip": dict(self.gossip), "checks": list(self.checks),
            }
            if self.balance:
                doc["services"] = [{
                    "name": "web", "vip": self.vip, "protocol": "tcp", "port": HTTP_PORT,
                    "algorithm": self.algorithm,
                    "check": "web" if any(c.get("name") == "web" for c in self.checks) else None,
                    "backends": backends}, {
                    "name": "echo", "vip": self.vip, "protocol": "udp", "port": UDP_PORT,
                    "algorithm": self.algorithm,
                    "check": "web" if any(c.get("name") == "web" for c in self.checks) else None,
                    "backends": backends}, {
                    # HL7 v2 over MLLP: one connection held for days (hacluster.lab.flows)
                    "name": "hl7", "vip": self.vip, "protocol": "tcp", "port": MLLP_PORT,
                    "algorithm": "maglev",
                    "check": "web" if any(c.get("name") == "web" for c in self.checks) else None,
                    "backends": backends}]
                doc["dataplane"] = self.dataplane
                doc["conntrack_sync"] = self.conntrack_sync
            n.config.write_text(yaml.safe_dump(doc, sort_keys=False))

    # ------------------------------------------------------------- processes

    def _spawn(self, ns: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            return subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=f, stderr=f,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def start_agent(self, node: LabNode, config: Path | None = None) -> None:
        node.agent = self._spawn(node.netns, [self.python, "-m", "hacluster.daemon", "--config",
                                              str(config or node.config)], node.log)

    def start_backend(self, node: LabNode) -> None:
        node.backend = self._spawn(node.netns, [self.python, "-m", "hacluster.lab.backend",
                                                "--name", node.name, "--port", str(HTTP_PORT),
                                                # balanced: on its own address (a proxy may
                                                # listen on VIP:80); else the VIP too
                                                "--host", node.ip if self.balance else "0.0.0.0",
                                                *(["--udp-port", str(UDP_PORT)] if self.balance else [])],
                                   node.log.with_name("backend.log"))

    def stop_backend(self, node: LabNode) -> None:
        """Stop the server's HTTP backend (the service fails, the server stays up)."""
        if node.backend is not None:
            node.backend.terminate()
            node.backend.wait(5)
            node.backend = None

    @contextlib.contextmanager
    def starve(self, node: LabNode, percent: float, burners: int = 1) -> Iterator[Path]:
        """The server's processes (agent, backend) get `percent` of one CPU between them,
        shared with `burners` busy loops (other work on an overloaded server). Yields the
        cgroup directory (its cpu.stat counts the throttled periods)."""
        spin = [self._spawn(node.netns, [self.python, "-c", "while True: pass"],
                            node.log.with_name("burner.log")) for _ in range(burners)]
        # `ip netns exec` execs the command, so each Popen pid is the process itself.
        pids = [p.pid for p in (node.agent, node.backend, *spin) if p is not None]
        try:
            with cpu_limited(self.prefix, node.name, pids, percent) as group:
                yield group
        finally:
            for p in spin:
                p.kill()
                p.wait(5)

    def signal_agent(self, node: LabNode, sig: int) -> None:
        if node.agent is None:
            raise LabError(f"{node.name}: no agent started by this Lab object")
        os.kill(node.agent.pid, sig)

    def edit_config(self, node: LabNode, change: Callable[[dict[str, Any]], None]) -> None:
        """Rewrite the server's config file: `change` edits the parsed document in place."""
        doc = yaml.safe_load(node.config.read_text())
        change(doc)
        node.config.write_text(yaml.safe_dump(doc, sort_keys=False))

    def reload(self, node: LabNode) -> None:
        """What `systemctl reload hacluster` does: SIGHUP to the agent (it re-reads its file)."""
        self.signal_agent(node, signal.SIGHUP)

    def wait_agent_exit(self, node: LabNode, timeout: float) -> int:
        assert node.agent is not None
        return node.agent.wait(timeout)

    # ----------------------------------------------------------------- faults

    def cut_link(self, node: LabNode) -> None:
        ip("link", "set", node.port, "down", ns=self.sw)

    def restore_link(self, node: LabNode) -> None:
        ip("link", "set", node.port, "up", ns=self.sw)

    def power_off(self, node: LabNode) -> None:
        """Pull the cable, kill every process, lose the addresses held in RAM."""
        self.cut_link(node)
        kill_netns_processes(node.netns)
        for p in (node.agent, node.backend):
            if p is not None:
                p.wait(5)
        ip("addr", "del", f"{self.vip}/24", "dev", "eth0", ns=node.netns, check=False)

    def power_on(self, node: LabNode) -> None:
        self.restore_link(node)
        self.start_backend(node)
        self.start_agent(node)

    def partition(self, node: LabNode, one_way: str | None = None) -> None:
        """Drop IP traffic between node and every other server (the client path stays up).

        one_way: None (both directions), "in" (node hears nothing) or "out" (node's packets lost).
        """
        peers = ", ".join(n.ip for n in self.nodes if n is not node)
        rules = []
        if one_way in (None, "in"):
            rules.append(f"chain i {{ type filter hook input priority -50; ip saddr {{ {peers} }} drop; }}")
        if one_way in (None, "out"):
            rules.append(f"chain o {{ type filter hook output priority -50; ip daddr {{ {peers} }} drop; }}")
        nft(node.netns, "table inet hclab {\n" + "\n".join(rules) + "\n}\n")

    def heal(self, node: LabNode) -> None:
        nft(node.netns, "delete table inet hclab\n")

    # ------------------------------------------------------------- observation

    def holders(self) -> list[str]:
        return [n.name for n in self.nodes if holds(n.netns, self.vip)]

    def wait_single_holder(self, timeout: float, exclude: tuple[str, ...] = ()) -> str:
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while time.monotonic() < deadline:
            last = self.holders()
            if len(last) == 1 and last[0] not in exclude:
                return last[0]
            for n in self.nodes:
                if n.agent is not None and n.agent.poll() is not None and n.name not in exclude:
                    raise LabError(f"{n.name}: agent exited with {n.agent.returncode}; "
                                   f"log {n.log}:\n{self.tail(n)}")
            time.sleep(0.02)
        logs = "\n".join(f"--- {n.name} ({n.log}):\n{self.tail(n, 12)}" for n in self.nodes)
        raise LabError(f"no single VIP holder within {timeout:.0f} s (holders: {last})\n{logs}")

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in lab {self.prefix}")

    def tail(self, node: LabNode, lines: int = 30) -> str:
        try:
            return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def in_client(self, *args: str, timeout: float = 30) -> str:
        return run("timeout", str(timeout), "ip", "netns", "exec", self.client_ns, *args)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.prefix, "bridge": "br0", "bridge_netns": self.sw,
            "client_netns": self.client_ns, "client_ip": self.client_ip, "subnet": f"{self.net}.0/24",
            "vips": [self.vip],
            "services": [{"name": "http", "vip": self.vip, "port": HTTP_PORT, "proto": "tcp"}]
            + ([{"name": "echo", "vip": self.vip, "port": UDP_PORT, "proto": "udp"},
                {"name": "hl7", "vip": self.vip, "port": MLLP_PORT, "proto": "tcp"}] if self.balance else []),
            "dir": str(self.dir),
            "nodes": [{"name": n.name, "netns": n.netns, "ip": n.ip,
                       "agent_pid": n.agent.pid if n.agent else n.agent_pid, "voter": n.voter,
                       "config": str(n.config), "data_dir": str(n.data_dir), "admin": n.admin,
                       "metrics": f"http://{n.ip}:{METRICS_PORT}/metrics", "log": str(n.log)}
                      for n in self.nodes],
            "externals": [{"name": x.name, "netns": x.netns, "ip": x.ip} for x in self.externals],
            "params": self.params(),
        }

    # ------------------------------------------------------------------ down

    def down(self) -> list[str]:
        return teardown(self.prefix, [n.agent for n in self.nodes]
                        + [n.backend for n in self.nodes + self.externals])


def teardown(prefix: str, procs: list[subprocess.Popen[bytes] | None] | None = None) -> list[str]:
    """Remove every namespace, process and file of lab `prefix`; return the namespaces removed."""
    check_prefix(prefix)
    remove_groups(prefix)
    mine = [ns for ns in netns_list() if ns.startswith(prefix + "-")]
    for ns in mine:
        kill_netns_processes(ns, signal.SIGKILL, spare_observers=False)
    for p in procs or []:
        if p is not None and p.poll() is None:
            p.kill()
        if p is not None:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    for ns in mine:
        ip("netns", "del", ns, check=False)
    shutil.rmtree(LAB_ROOT / prefix, ignore_errors=True)
    return mine


def load_description(prefix: str) -> dict[str, Any]:
    path = LAB_ROOT / prefix / "lab.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        raise LabError(f"no lab named {prefix!r} is up ({path} not found)") from None


__all__ = ["Lab", "LabError", "LabNode", "cli_argv", "teardown", "load_description", "random_prefix",
           "subnet_for"]
