"""bench/proc.py: the /proc parsers and the figures bench/idle.py reports, from sample text.

Benchmarks are programs, not tests; these check only the arithmetic their figures rest on
(a field miscounted in /proc/PID/stat, or the main thread's schedstat taken for the whole
process, would print plausible and wrong numbers).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def proc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))  # bench/ is a directory of programs, not a package
    import _proc

    yield _proc
    sys.modules.pop("_proc", None)

# A python agent whose command name holds spaces and a ')': utime 1234, stime 567.
STAT = ("4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 9000 0 3 0 1234 567 0 0 20 0 7 0 "
        "123456 250000000 12000 18446744073709551615 1 1 0 0 0 0 0 16781312 17922 0 0 0 17 "
        "1 0 0 0 0 0\n")
STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
PPid:\t4200
VmPeak:\t  300000 kB
VmRSS:\t   51200 kB
RssAnon:\t   40000 kB
Threads:\t7
SigQ:\t0/95000
"""


def fake_proc(root: Path, pid: int, ticks: tuple[int, int], tasks: dict[int, tuple[str, int]],
              rss_kb: int = 51200) -> None:
    base = root / str(pid)
    (base / "task").mkdir(parents=True, exist_ok=True)
    for old in (base / "task").iterdir():  # a thread that exited
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    (base / "stat").write_text(STAT.replace("1234 567", f"{ticks[0]} {ticks[1]}"))
    (base / "status").write_text(STATUS.replace("51200", str(rss_kb))
                                 .replace("Threads:\t7", f"Threads:\t{len(tasks)}"))
    for tid, (comm, ns) in tasks.items():
        (base / "task" / str(tid)).mkdir()
        (base / "task" / str(tid) / "schedstat").write_text(f"{ns} 99999 42\n")
        (base / "task" / str(tid) / "comm").write_text(comm + "\n")


def test_stat_fields_are_counted_after_the_last_parenthesis(proc) -> None:
    assert proc.parse_stat(STAT) == (1234, 567)


def test_schedstat_is_the_first_field_in_ns(proc) -> None:
    assert proc.parse_schedstat("123456789 555 12\n") == 123456789


def test_status_threads_and_rss(proc) -> None:
    assert proc.parse_status(STATUS) == {"threads": 7, "rss_kb": 51200,
                                          "ppid": 4200}
    # a zombie has no VmRSS line
    assert proc.parse_status("Name:\tx\nThreads:\t1\n") == {"threads": 1, "rss_kb": None,
                                                                "ppid": None}


def test_a_window_sums_every_thread_not_just_the_main_one(proc, tmp_path: Path) -> None:
    fake_proc(tmp_path, 4242, (100, 50), {4242: ("python", 1_000_000_000),
                                          4243: ("grpc_global_tim", 0),
                                          4244: ("python", 500_000_000)})
    before = proc.read_sample(4242, 10.0, tmp_path)
    # 10 s later: the main thread ran 0.1 s, 4243 0.2 s, 4244 exited, 4245 is new (0.05 s);
    # the stat ticks (whole group, exited threads included) grew by 40
    fake_proc(tmp_path, 4242, (130, 60), {4242: ("python", 1_100_000_000),
                                          4243: ("grpc_global_tim", 200_000_000),
                                          4245: ("python", 50_000_000)}, rss_kb=61440)
    after = proc.read_sample(4242, 20.0, tmp_path)
    w = proc.window(before, after, clk_tck=100)
    assert w["cpu_pct"] == pytest.approx(3.5)  # (0.1 + 0.2 + 0.05) s / 10 s
    assert w["cpu_pct_ticks"] == pytest.approx(4.0)  # 40 ticks / 100 Hz / 10 s
    assert w["rss_mb"] == 60.0
    assert w["threads"] == 3
    assert w["threads_exited"] == 1


def test_thread_breakdown_names_each_thread_busiest_first(proc, tmp_path: Path) -> None:
    fake_proc(tmp_path, 7, (0, 0), {7: ("python", 0), 8: ("grpc_global_tim", 0)})
    before = proc.read_sample(7, 0.0, tmp_path, comms=True)
    fake_proc(tmp_path, 7, (0, 0), {7: ("python", 20_000_000), 8: ("grpc_global_tim", 80_000_000),
                                    9: ("python", 10_000_000)})
    after = proc.read_sample(7, 2.0, tmp_path, comms=True)
    rows = proc.thread_breakdown(before, after)
    assert [(r["tid"], r["comm"], r["cpu_pct"], r["new"]) for r in rows] == [
        (8, "grpc_global_tim", 4.0, False), (7, "python", 1.0, False), (9, "python", 0.5, True)]


def test_a_vanished_process_raises(proc, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        proc.read_sample(99, 0.0, tmp_path)


def test_an_empty_window_is_refused(proc) -> None:
    s = proc.Sample(5.0, 0, {}, 1, 1)
    with pytest.raises(ValueError):
        proc.window(s, s)


def _w(cpu: float | None, rss: float | None = 50.0, threads: int = 10) -> dict[str, object]:
    return {"seconds": 10.0, "cpu_pct": cpu, "cpu_pct_ticks": cpu, "rss_mb": rss,
            "threads": threads, "threads_exited": 0}


def test_combine_adds_a_nodes_processes(proc) -> None:
    # keepalived: parent + VRRP child
    c = proc.combine([_w(0.1, 3.0, 1), _w(0.4, 4.0, 1)])
    assert (c["cpu_pct"], c["rss_mb"], c["threads"], c["processes"]) == (0.5, 7.0, 2, 2)
    assert proc.combine([_w(0.1, None), _w(0.2)])["rss_mb"] is None


def test_summary_is_the_median_per_node_then_over_nodes(proc) -> None:
    s = proc.summarize({"n1": [_w(1.0), _w(9.0), _w(2.0)],
                         "n2": [_w(4.0), _w(4.0), _w(5.0)],
                         "n3": [_w(0.5), _w(0.7), _w(0.6)]})
    assert {k: v["cpu_pct"] for k, v in s["nodes"].items()} == {"n1": 2.0, "n2": 4.0, "n3": 0.6}
    assert s["cpu_pct_median"] == 2.0
    assert s["cpu_pct_max_node"] == 4.0
    assert s["rss_mb_median"] == 50.0


def test_ratio_and_the_table(proc) -> None:
    assert proc.ratio(3.0, 0.5) == 6.0
    assert proc.ratio(3.0, 0.0) is None
    assert proc.ratio(None, 1.0) is None
    hc = proc.summarize({"n1": [_w(3.0)]})
    text = proc.cpu_table({"hacluster": hc, "keepalived-tuned": {"installed": False}}, None)
    assert "keepalived-tuned: not installed" in text
    assert "hacluster              n1" in text and "3.00" in text
    assert text.splitlines()[-2].endswith(": -")
