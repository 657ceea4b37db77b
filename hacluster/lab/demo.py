"""The README's demo: a 3-server lab, traffic through the VIP, the leader's cable pulled."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from hacluster.lab.lab import Lab, cli_argv
from hacluster.lab.traffic import Prober, outage


def _status_table(lab: Lab, node_name: str) -> str:
    node = lab.node(node_name)
    cmd = cli_argv(node.netns, "status", "--config", str(node.config))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    return proc.stdout or proc.stderr


def run_demo(name: str, say: Callable[[str], None]) -> dict[str, Any]:
    lab = Lab(name, 3)
    say(f"[1/5] building a 3-server lab '{name}' in network namespaces "
        f"({lab.net}.0/24, VIP {lab.vip})...")
    t0 = time.monotonic()
    try:
        lab.up()
        holder = lab.holders()[0]
        say(f"      up in {time.monotonic() - t0:.1f} s; {holder} is leader and holds the VIP")
        say(f"[2/5] hacluster status on {holder}:")
        for line in _status_table(lab, holder).rstrip().splitlines():
            say("      " + line)
        say("[3/5] client connects to the VIP every 10 ms...")
        prober = Prober(lab, duration=6.0)
        time.sleep(2.0)  # traffic flows for a while before the fault: part of the show
        say(f"[4/5] pulling {holder}'s cable (link down on the switch)...")
        lab.cut_link(lab.node(holder))
        fault_at = time.time()  # once the cable is out: earlier requests may still succeed
        new = lab.wait_single_holder(10.0, exclude=(holder,))
        say(f"      {new} holds the VIP now; waiting for the client run to finish...")
        attempts = prober.result()
        o = outage(attempts, fault_at, prober.interval)
        served_before = sorted({a.server for a in attempts if a.ok and a.t < fault_at} - {None})
        served_after = sorted({a.server for a in attempts if a.ok and a.t >= fault_at} - {None})
        say("[5/5] result:")
        say(f"      served before the fault: {', '.join(served_before)}")
        say(f"      served after the fault:  {', '.join(served_after)}")
        say(f"      client-seen outage:      {o.ms:.0f} ms ({o.failed_attempts} failed attempts "
            f"of {len(attempts)})")
        return {"lab": name, "old_holder": holder, "new_holder": new,
                "served_before": served_before, "served_after": served_after,
                "outage_ms": round(o.ms, 1), "attempts": len(attempts),
                "failed_attempts": o.failed_attempts}
    finally:
        say(f"      tearing the lab down: {len(lab.down())} namespaces removed")
