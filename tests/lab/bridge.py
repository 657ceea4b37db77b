"""A throwaway switched network for lab tests that need no agents: a bridge in its own
namespace (PREFIX-sw) and hosts PREFIX-NAME plugged into it, each with an eth0 carrying
the given IPv4 and IPv6 addresses. `close()` kills what runs there and removes every
namespace, and says if one was left behind."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from hacluster.lab.netns import ip, kill_netns_processes, netns_list


@dataclass
class BridgeTopo:
    prefix: str
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def sw(self) -> str:
        return self.ns("sw")

    def make_switch(self) -> None:
        ip("netns", "add", self.sw)
        ip("link", "add", "br0", "type", "bridge", ns=self.sw)
        ip("link", "set", "br0", "up", ns=self.sw)

    def add_host(self, name: str, *addrs: str) -> str:
        ns = self.ns(name)
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        port = f"v-{name}"
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.sw)
        ip("link", "set", port, "master", "br0", "up", ns=self.sw)
        ip("link", "set", "lo", "up", ns=ns)
        for a in addrs:  # nodad: an IPv6 address is usable at once, not after ~1 s of DAD
            v6 = ":" in a
            ip("addr", "add", f"{a}/{64 if v6 else 24}", "dev", "eth0", *(("nodad",) if v6 else ()),
               ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        return ns

    def close(self) -> None:
        for ns in [*self.namespaces, self.sw]:
            kill_netns_processes(ns, spare_observers=False)
        for p in self.procs:
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
        for ns in [*self.namespaces, self.sw]:
            ip("netns", "del", ns, check=False)
        left = [ns for ns in netns_list() if ns.startswith(self.prefix + "-")]
        assert not left, f"left namespaces behind: {left}"
