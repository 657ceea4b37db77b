"""Thin helpers over iproute2 for the lab. Every command's failure says what it ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any


class LabError(RuntimeError):
    pass


# Observers (ip monitor) enter a server's namespace to watch it, so they show up in
# `ip netns pids`; a simulated power-off must not kill the witness along with the server.
OBSERVER_PIDS: set[int] = set()


def run(*args: str, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    return run(*cmd, check=check)


def netns_list() -> list[str]:
    out = run("ip", "-j", "netns", "list", check=False).strip()
    if not out:
        return []
    return [e["name"] for e in json.loads(out)]


def netns_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.split()]


def signal_pids(pids: list[int], sig: int) -> None:
    """Send sig to each process; one that has exited meanwhile is no error."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_netns_processes(ns: str, sig: int = signal.SIGKILL, spare_observers: bool = True) -> None:
    signal_pids([pid for pid in netns_pids(ns) if not (spare_observers and pid in OBSERVER_PIDS)], sig)


def addresses(ns: str, ifname: str = "eth0") -> list[dict[str, Any]]:
    out = ip("-j", "addr", "show", "dev", ifname, ns=ns, check=False).strip()
    if not out:
        return []
    data = json.loads(out)
    return data[0].get("addr_info", []) if data else []


def holds(ns: str, address: str, ifname: str = "eth0") -> bool:
    return any(a.get("local") == address for a in addresses(ns, ifname))


def nft(ns: str, ruleset: str) -> None:
    cmd = ["ip", "netns", "exec", ns, "nft", "-f", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, input=ruleset)
    if proc.returncode != 0:
        raise LabError(f"nft in {ns} failed: {proc.stderr.strip()}\n{ruleset}")
