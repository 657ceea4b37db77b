"""Every benchmark program (bench/*.py) still imports, has a main, and answers --help.

Benchmarks are programs, not tests (STYLE.md §12): nothing here builds a lab or measures.
This only catches a program that a change elsewhere broke (a moved helper, a renamed
import) before someone needs it for a figure.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
# bench/*.py starting with "_" are the programs' shared modules, not programs
PROGRAMS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
BENCH_MODULES = {p.stem for p in BENCH.glob("_*.py")}


def test_the_benchmarks_are_found() -> None:
    assert {p.stem for p in PROGRAMS} >= {"dataplane", "detection", "failover", "idle"}


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_imports_and_has_a_main(program: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as `python bench/X.py` runs it: bench/ first on the path, for its shared modules
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{program.stem}", program)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # guarded by __name__ == "__main__": nothing runs
    finally:  # bench's own modules only: the product's stay imported once, as everywhere
        for name in BENCH_MODULES & set(sys.modules):
            del sys.modules[name]
    assert callable(getattr(module, "main", None)), f"{program.name} has no main()"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_help_exits_0(program: Path) -> None:
    proc = subprocess.run([PYTHON, str(program), "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:"), proc.stdout


def test_the_failover_bench_reads_the_sentences_the_agent_logs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/_systems.py waits for every agent's logged sentence to agree on one leader: a
    moved logger or a reworded sentence would make every hacluster trial 'not settle'."""
    import io
    import logging

    from hacluster.ha.decide import Snapshot, VipState, decide
    from hacluster.ha.loop import log as loop_log
    from hacluster.logs import HUMAN_FORMAT
    from hacluster.model import Vip
    from tests.support.raft import leader_view, view

    monkeypatch.syspath_prepend(str(BENCH))
    import _systems

    vip = Vip("10.0.0.100", 24, "eth0")

    def sentence(consensus, present: bool) -> str:
        snap = Snapshot(now=10.0, node="n1", consensus=consensus,
                        vips=(VipState(vip, present),), handoff=False, claimed_at={},
                        announces_sent={}, epoch_asked=(0, 10.0))
        return decide(snap).sentence

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
    loop_log.addHandler(handler)
    old_level = loop_log.level
    loop_log.setLevel(logging.INFO)
    try:
        loop_log.info("%s", sentence(leader_view(term=2), True))
        loop_log.info("%s", sentence(view(leader="n2", term=2), False))
    finally:
        loop_log.removeHandler(handler)
        loop_log.setLevel(old_level)
    leader_line, follower_line = out.getvalue().splitlines()
    lead = _systems._SENTENCE.search(leader_line)
    follow = _systems._SENTENCE.search(follower_line)
    assert lead and follow
    assert _systems._LEADER.match(lead.group("s")).group(1) == "2"
    assert _systems._FOLLOWER.match(follow.group("s")).groups() == ("n2", "2")
