"""CPU starvation for lab servers: a cgroup with a CPU quota (v2 `cpu.max`, else v1 CFS).

Used by the lab test that starves a server for a minute and checks that gossip does not
declare it dead (Lifeguard's reason to exist). Groups are named after the lab prefix so that
teardown removes what a crashed test left behind.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator
from pathlib import Path

from hacluster.lab.netns import LabError

V2_ROOT = Path("/sys/fs/cgroup")
V2_UNIFIED = Path("/sys/fs/cgroup/unified")  # hybrid hierarchy (v1 controllers + v2 tree)
V1_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
REMOVE_TRIES = 20


def _v2_root() -> Path | None:
    for root in (V2_ROOT, V2_UNIFIED):
        controllers = root / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return root
    return None


def group_name(prefix: str, node: str) -> str:
    return f"hacluster-lab-{prefix}-{node}"


@contextlib.contextmanager
def cpu_limited(prefix: str, node: str, pids: list[int], percent: float) -> Iterator[Path]:
    """Run `pids` under a quota of `percent` of one CPU until the block ends."""
    if not pids:
        raise LabError(f"{node}: no processes to starve")
    quota = max(1000, int(PERIOD_US * percent / 100))
    v2 = _v2_root()
    if v2 is not None:
        group = v2 / group_name(prefix, node)
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
        parent_procs = v2 / "cgroup.procs"
    elif (V1_CPU / "cpu.cfs_quota_us").exists():
        group = V1_CPU / group_name(prefix, node)
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        (group / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        parent_procs = V1_CPU / "cgroup.procs"
    else:
        raise LabError("no cgroup CPU controller (neither v2 cpu.max nor v1 cpu.cfs_quota_us) "
                       "is available on this machine")
    try:
        for pid in pids:
            _move(pid, group / "cgroup.procs")
        yield group
    finally:
        _empty_and_remove(group, parent_procs)


def _empty_and_remove(group: Path, parent_procs: Path) -> None:
    """Move every process back and remove the group. A thread or child started while the
    processes were being moved lands in the group after our read of it (EBUSY on rmdir):
    read again and retry, a bounded number of times."""
    for attempt in range(REMOVE_TRIES):
        for pid in _procs(group):
            _move(pid, parent_procs)
        try:
            group.rmdir()
            return
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == REMOVE_TRIES - 1:
                raise
            time.sleep(0.05)


def remove_groups(prefix: str) -> None:
    """Teardown: release and remove every group of lab `prefix` (after a crashed test)."""
    for root, parent in ((_v2_root(), None), (V1_CPU, None)):
        if root is None or not root.exists():
            continue
        for group in root.glob(f"hacluster-lab-{prefix}-*"):
            for pid in _procs(group):
                _move(pid, parent or root / "cgroup.procs")
            with contextlib.suppress(OSError):
                group.rmdir()


def _procs(group: Path) -> list[int]:
    """The group's processes; on cgroup v1 also every thread listed in `tasks` (a thread
    group is moved whole through cgroup.procs, but one caught mid-move shows up there)."""
    out: list[int] = []
    for name in ("cgroup.procs", "tasks"):
        try:
            out += [int(p) for p in (group / name).read_text().split() if int(p) not in out]
        except OSError:
            pass
    return out


def _move(pid: int, procs_file: Path) -> None:
    try:
        procs_file.write_text(f"{pid}\n")
    except ProcessLookupError:
        pass  # exited meanwhile
    except OSError as e:
        if e.errno != 3:  # ESRCH
            raise LabError(f"cannot move pid {pid} to {procs_file}: {e}") from None


__all__ = ["cpu_limited", "group_name", "remove_groups"]
