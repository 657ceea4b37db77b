"""Runs one NetlinkHostOps inside a network namespace for the lab tests.

Started as `ip netns exec NS python _hostops_probe_helper.py`, because netlink and packet
sockets act on the namespace of the process that opens them. Reads one JSON request per
line on stdin, answers one JSON line on stdout:

    {"op": "claim", "vip": ["10.0.0.5", 24, "eth0"], "lifetime_s": 2}
    -> {"ok": true, "result": null, "elapsed_s": 0.00002}
    -> {"ok": false, "error": "HostOpsError", "message": "interface eth9 not found"}

ops: present, claim (lifetime_s), release, probe (timeout_s), announce.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from hacluster.hostops.base import HostOpsError
from hacluster.hostops.netlink import NetlinkHostOps
from hacluster.model import Vip


def handle(ops: NetlinkHostOps, request: dict[str, Any]) -> Any:
    vip = Vip(*request["vip"])
    op = request["op"]
    if op == "present":
        return ops.vip_present(vip)
    if op == "claim":
        return ops.claim_vip(vip, request["lifetime_s"])
    if op == "release":
        return ops.release_vip(vip)
    if op == "probe":
        return ops.probe(vip, request["timeout_s"])
    if op == "announce":
        return ops.announce(vip)
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    ops = NetlinkHostOps()
    for line in sys.stdin:
        start = time.perf_counter()
        try:
            result = handle(ops, json.loads(line))
            reply = {"ok": True, "result": result}
        except (HostOpsError, ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
            reply["hostops_error"] = isinstance(exc, HostOpsError)
        reply["elapsed_s"] = time.perf_counter() - start
        print(json.dumps(reply), flush=True)
    ops.close()


if __name__ == "__main__":
    main()
