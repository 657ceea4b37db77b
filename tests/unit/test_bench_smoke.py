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
