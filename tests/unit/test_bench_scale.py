"""bench/scale.py's pure helpers: counters, /proc parsing, the settle rule, verdict times,
log grouping and the table. Nothing here builds a lab (benchmarks are programs, not tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scale(pytestconfig: pytest.Config) -> ModuleType:
    sys.path.insert(0, str(BENCH))  # as `python bench/scale.py` runs it
    try:
        return _load("scale")
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("_labkit", None)


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return _load("_scale_probe")


def test_parse_metrics_keeps_the_named_families_only(probe: ModuleType) -> None:
    text = ("# HELP hacluster_leader 1 if leader\n# TYPE hacluster_leader gauge\n"
            "hacluster_leader 1.0\n"
            'hacluster_members{state="alive"} 25.0\n'
            'hacluster_members{state="dead"} 0.0\n'
            "hacluster_leader_changes_total 3.0\n"
            'hacluster_check_committed_up{node="n3",check="web"} 1.0\n'
            "process_resident_memory_bytes 8.1e+07\n"
            "hacluster_raft_term NaNx\n")
    got = probe.parse_metrics(text)
    assert got == {"hacluster_leader": 1.0, 'hacluster_members{state="alive"}': 25.0,
                   'hacluster_members{state="dead"}': 0.0,
                   'hacluster_check_committed_up{node="n3",check="web"}': 1.0,
                   "process_resident_memory_bytes": 8.1e7}


def test_the_counting_ruleset_counts_both_ports_both_ways_without_verdicts(scale: ModuleType) -> None:
    rules = scale.counting_ruleset(7101, 7100)
    for name in scale.COUNTERS:
        assert f"counter {name} {{}}" in rules
    assert 'iifname "eth0" tcp dport 7101 counter name gossip_in' in rules
    assert 'oifname "eth0" tcp sport 7100 counter name raft_out' in rules
    assert "drop" not in rules and "accept;" in rules and " accept\n" not in rules


def test_parse_nft_counters(scale: ModuleType) -> None:
    doc = {"nftables": [{"metainfo": {"version": "1.0.6"}},
                        {"counter": {"family": "inet", "name": "gossip_in", "table": "hcscale",
                                     "handle": 1, "packets": 10, "bytes": 1500}},
                        {"counter": {"family": "inet", "name": "raft_out", "table": "hcscale",
                                     "handle": 2, "packets": 1, "bytes": 60}},
                        {"counter": {"family": "inet", "name": "x", "table": "other",
                                     "handle": 3, "packets": 1, "bytes": 7}}]}
    assert scale.parse_nft_counters(json.dumps(doc)) == {"gossip_in": 1500, "raft_out": 60}


def test_proc_parsers(scale: ModuleType) -> None:
    assert scale.parse_schedstat("123456789 2000 17\n") == 123456789
    # a command name with spaces and parentheses; utime=7, stime=5 (fields 14, 15)
    stat = "42 (python (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 9 0 1 2 3"
    assert scale.parse_stat_ticks(stat) == 12
    assert scale.parse_rss_kb("Name:\tpython\nVmRSS:\t   80384 kB\nVmSwap: 0 kB\n") == 80384
    assert scale.parse_rss_kb("Name:\tzombie\n") is None


def test_busy_pct_from_proc_stat(scale: ModuleType) -> None:
    a = scale.parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    b = scale.parse_proc_stat("cpu  250 0 100 1000 50 0 0 0 0 0\n")
    assert a == (150, 1000) and b == (350, 1400)
    assert scale.busy_pct(a, b) == 50.0
    assert scale.busy_pct(b, b) is None


def test_histogram_mean_between_two_scrapes(scale: ModuleType) -> None:
    name = "hacluster_raft_commit_latency_seconds"
    a = {"ok": True, "values": {f"{name}_count": 4.0, f"{name}_sum": 0.2}}
    b = {"ok": True, "values": {f"{name}_count": 14.0, f"{name}_sum": 0.45}}
    assert scale.histogram_mean(a, b) == {"count": 10, "mean_ms": 25.0}
    assert scale.histogram_mean(a, a) == {"count": 0, "mean_ms": None}
    assert scale.histogram_mean(a, {"ok": False}) == {"count": None, "mean_ms": None}


def test_median_and_maximum_skip_missing_values(scale: ModuleType) -> None:
    assert scale.median([3.0, None, 1.0, 2.0]) == 2.0
    assert scale.median([None]) is None
    assert scale.maximum([1.04, None, 0.5], 1) == 1.0


def _scrape(alive: int, leader: bool, up: list[str] | None = None) -> dict:
    values = {'hacluster_members{state="alive"}': float(alive), "hacluster_leader": float(leader)}
    for node in up or []:
        values[f'hacluster_check_committed_up{{node="{node}",check="web"}}'] = 1.0
    return {"ok": True, "values": values}


def test_settled_needs_every_agent_all_alive_one_leader_and_every_backend_up(scale: ModuleType) -> None:
    nodes = ["n1", "n2", "n3"]
    good = {"n1": _scrape(3, True, nodes), "n2": _scrape(3, False), "n3": _scrape(3, False)}
    assert scale.settle_view(good, 3)["settled"] is True

    short = {**good, "n3": _scrape(2, False)}
    view = scale.settle_view(short, 3)
    assert view["settled"] is False and view["alive_short"] == {"n3": 2.0}

    two = {**good, "n2": _scrape(3, True, nodes)}
    assert scale.settle_view(two, 3)["leaders"] == ["n1", "n2"]
    assert scale.settle_view(two, 3)["settled"] is False

    down = {**good, "n1": _scrape(3, True, ["n1", "n2"])}
    assert scale.settle_view(down, 3)["committed_up"] == 2
    assert scale.settle_view(down, 3)["settled"] is False

    gone = {**good, "n2": {"ok": False, "error": "timed out"}}
    assert scale.settle_view(gone, 3)["unreachable"] == ["n2"]
    assert scale.settle_view(gone, 3)["settled"] is False


def test_verdict_times_everywhere_is_the_slowest_and_none_while_one_is_missing(scale: ModuleType) -> None:
    got = scale.verdict_times({"n1": 101.5, "n2": 102.25, "n3": 101.0}, 100.0)
    assert got["everywhere_ms"] == 2250.0 and got["first_ms"] == 1000.0
    assert got["median_ms"] == 1500.0 and got["missing"] == []
    missing = scale.verdict_times({"n1": 101.5, "n2": None}, 100.0)
    assert missing["everywhere_ms"] is None and missing["missing"] == ["n2"]
    assert missing["median_ms"] == 1500.0


def test_group_problems_folds_numbers_and_splits_at_the_first_fault(scale: ModuleType) -> None:
    lines = [
        (10.0, "n4", "2026-12-06 20:10:39,799 CRITICAL pysyncobj.syncobj: truncating already-"
                     "applied log entries from index 20 (last applied: 23)"),
        (11.0, "n5", "2026-12-06 20:10:40,001 CRITICAL pysyncobj.syncobj: truncating already-"
                     "applied log entries from index 31 (last applied: 35)"),
        (30.0, "n12", "2026-12-06 20:11:00,000 WARNING hacluster.gossip: n12 to 10.1.2.3: "
                      "frames that did not authenticate"),
        (31.0, "n2", "2026-12-06 20:11:01,000 INFO hacluster.ha.loop: leader, term 2"),
    ]
    groups = scale.group_problems(lines, split_at=20.0)
    assert len(groups) == 2
    first = groups[0]
    assert first["key"].startswith("CRITICAL pysyncobj.syncobj: truncating already-applied log "
                                   "entries from index # (last applied: #)")
    assert (first["before_faults"], first["after_faults"], first["nodes"]) == (2, 0, ["n4", "n5"])
    assert groups[1]["after_faults"] == 1 and "nX to #:" in groups[1]["key"]


def test_table_has_a_line_per_size_and_says_which_did_not_settle(scale: ModuleType) -> None:
    ok = {"n": 5, "voters": 3, "settled": True, "settle_s": 5.9,
          "idle": {"cpu_pct_median": 3.245, "cpu_pct_max": 4.158, "rss_mb_median": 78.5,
                   "gossip_out_Bps_median": 3080, "gossip_inout_Bps_median": 6174,
                   "raft_out_Bps_leader": 39338},
          "commit": {"median_ms": 37.0}, "member": {"dead": {"everywhere_ms": 3298.8},
                                                    "down_ms": 3646.8},
          "holder": {"claim_ms": 354.5}, "idle_alarms": {"total": 0}}
    bad = {"n": 25, "voters": 3, "settled": False, "holders": [],
           "seen": {"settled": False, "leaders": [], "alive_short": {"n7": 23.0, "n9": 24.0},
                    "committed_up": 0, "unreachable": []}}
    lines = scale.table([ok, bad])
    assert len(lines) == 3
    assert lines[1].split()[:4] == ["5", "3", "5.9", "3.25"]
    assert "3299" in lines[1] and "3647" in lines[1] and "354" in lines[1]
    assert lines[2].split()[:2] == ["25", "3"] and "did not settle" in lines[2]
    assert "VIP holders []" in lines[2] and "leaders []" in lines[2]
    assert "2 agent(s) see fewer than 25 alive (fewest 23)" in lines[2]
    assert "0/25 backends committed up" in lines[2]


def test_main_refuses_a_size_without_a_non_voter(scale: ModuleType) -> None:
    with pytest.raises(SystemExit) as e:
        scale.main(["--sizes", "3", "--voters", "3"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        scale.main(["--sizes", "5,x"])
