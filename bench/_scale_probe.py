"""bench/scale.py's hands inside the lab: run in the lab's client namespace, print one JSON line.

    python bench/_scale_probe.py metrics URL...
        every agent's metrics listener scraped once, in parallel (2 s timeout each):
        {url: {"ok": true, "values": {"name{labels}": value, ...}} | {"ok": false, "error": ...}}
        (only the families scale.py reads, see KEEP)
    python bench/_scale_probe.py commits --config FILE --target SERVICE/BACKEND --samples K
        K `hacluster drain` + `hacluster undrain` admin calls to the agent that FILE names,
        each timed in this one process (no CLI start-up in the figure): every call returns
        once its change is committed through Raft and applied by that agent.
        {"drain_ms": [...], "undrain_ms": [...], "errors": [...]}

The metrics command imports nothing of hacluster (a cheap poll: no grpc start-up); the
root namespace cannot reach the lab's addresses, the client namespace can.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

KEEP = ("hacluster_members{", "hacluster_member_up{", "hacluster_leader ",
        "hacluster_check_committed_up{", "hacluster_raft_commit_latency_seconds_sum",
        "hacluster_raft_commit_latency_seconds_count", "process_resident_memory_bytes",
        "hacluster_raft_term ")


def parse_metrics(text: str, keep: tuple[str, ...] = KEEP) -> dict[str, float]:
    """Prometheus text exposition -> {"name{labels}": value} for the lines starting with one
    of `keep` (comments and unparsable values skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or not line.startswith(keep):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def scrape(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - lab addresses only
            return {"ok": True, "values": parse_metrics(r.read().decode(errors="replace"))}
    except Exception as e:  # noqa: BLE001 - any failure is a fact to report, not to raise
        return {"ok": False, "error": str(e)[:200]}


def metrics(urls: list[str]) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(urls)))) as pool:
        return dict(zip(urls, pool.map(scrape, urls), strict=True))


def commits(config: str, target: str, samples: int) -> dict[str, Any]:
    from hacluster_cli.client import drain
    from hacluster_cli.connect import resolve_agent

    agent = resolve_agent({"config_path": config, "admin": None, "ca": None, "cert": None,
                           "key": None})
    out: dict[str, Any] = {"drain_ms": [], "undrain_ms": [], "errors": []}
    for _ in range(samples):
        for undo, key in ((False, "drain_ms"), (True, "undrain_ms")):
            t = time.perf_counter()
            try:
                drain(agent.target, agent.creds, target, undo=undo, timeout=10)
            except Exception as e:  # noqa: BLE001 - reported, the next sample runs
                out["errors"].append(f"{key[:-3]}: {e}"[:300])
                continue
            out[key].append(round((time.perf_counter() - t) * 1000, 1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("metrics")
    m.add_argument("urls", nargs="+")
    c = sub.add_parser("commits")
    c.add_argument("--config", required=True)
    c.add_argument("--target", required=True)
    c.add_argument("--samples", type=int, default=5, choices=range(1, 51), metavar="1-50")
    a = p.parse_args(argv)
    doc = metrics(a.urls) if a.cmd == "metrics" else commits(a.config, a.target, a.samples)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
