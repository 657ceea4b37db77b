"""LoadSampler on a fake /proc and on the real one."""

from __future__ import annotations

from hacluster.health.load import LoadSampler


def write(proc, user, idle, avail_kb):
    (proc / "stat").write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\n")
    (proc / "meminfo").write_text(f"MemTotal:       1000 kB\nMemFree:         100 kB\n"
                                  f"MemAvailable:    {avail_kb} kB\n")


def test_cpu_since_last_sample_and_memory(tmp_path):
    write(tmp_path, user=100, idle=900, avail_kb=750)
    s = LoadSampler(tmp_path)
    write(tmp_path, user=130, idle=970, avail_kb=750)  # 30 busy of 100 jiffies
    load = s.sample()
    assert (load.cpu_percent, load.mem_percent) == (30.0, 25.0)
    write(tmp_path, user=130, idle=970, avail_kb=400)  # no tick elapsed: keep the last figure
    assert s.sample().cpu_percent == 30.0 and s.sample().mem_percent == 60.0


def test_missing_proc_gives_zeroes(tmp_path):
    load = LoadSampler(tmp_path / "nothing").sample()
    assert (load.cpu_percent, load.mem_percent) == (0.0, 0.0)


def test_real_proc():
    load = LoadSampler().sample()
    assert 0.0 <= load.cpu_percent <= 100.0
    assert 0.0 < load.mem_percent <= 100.0
