"""The Debian package (scripts/build-deb.sh): built once per session (~45 s; or taken from
HACLUSTER_DEB), lintian-clean, and runnable from a throwaway root it is unpacked into.

Two throwaway roots. `dpkg -x` into a temporary directory: the venv's python is a symlink
to /usr/bin/python3 and finds its site-packages from its own path (pyvenv.cfg next to
bin/), so the unpacked tree runs where it lies when the commands are started through it
(their shebangs name /opt/hacluster/venv, the installed path). And `dpkg -i`, maintainer
scripts included, in a chroot onto an overlay of this machine's / in a private mount
namespace (`dpkg --root` would need a whole Debian system in the root for adduser).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
VENV = "opt/hacluster/venv"


@pytest.fixture(scope="session")
def deb(tmp_path_factory) -> Path:
    given = os.environ.get("HACLUSTER_DEB")
    if given:
        return Path(given)
    for tool in ("dpkg-deb", "dpkg-shlibdeps", "help2man"):
        if shutil.which(tool) is None:
            pytest.fail(f"building the package needs `{tool}`: run scripts/setup.sh")
    out = tmp_path_factory.mktemp("deb")
    # LINTIAN=0: the test runs lintian itself, to assert on its output.
    r = subprocess.run(["bash", str(REPO / "scripts/build-deb.sh")], cwd=REPO, capture_output=True,
                       text=True, env={**os.environ, "OUT": str(out), "LINTIAN": "0"}, timeout=600)
    sys.stdout.write(r.stdout)  # the build's progress lines, with their times (pytest -s)
    assert r.returncode == 0, r.stdout + r.stderr
    debs = list(out.glob("hacluster_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="session")
def root(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def _run(root: Path, command: str, *args: str, env: dict[str, str] | None = None) -> str:
    """One of the venv's commands, started through the unpacked venv's python."""
    venv = root / VENV
    r = subprocess.run([str(venv / "bin/python"), str(venv / "bin" / command), *args], capture_output=True,
                       text=True, timeout=60, cwd=root,
                       env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_the_name_and_the_control_fields(deb):
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert deb.name == f"hacluster_{VERSION}_{arch}.deb"
    field = lambda name: subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True,  # noqa: E731
                                        text=True, check=True).stdout.strip()
    assert field("Version") == VERSION
    depends = field("Depends")
    # What the agent runs: nft always; conntrack and conntrackd for connection sync and
    # drains (recommended); no arping (ARP goes out of the agent's own packet socket).
    assert "python3 (>= 3.11)" in depends and "nftables" in depends and "adduser" in depends
    assert "libc6" in depends  # from dpkg-shlibdeps over the wheels' compiled modules
    assert "arping" not in depends + field("Recommends")
    assert {"conntrack", "conntrackd"} <= {p.strip() for p in field("Recommends").split(",")}


def test_lintian_reports_no_errors(deb):
    if shutil.which("lintian") is None:
        pytest.fail("lintian is missing: run scripts/setup.sh")
    r = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)], capture_output=True, text=True,
                       timeout=300)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors)


def test_hacluster_runs_from_the_unpacked_tree(root):
    assert _run(root, "hacluster", "--version").strip() == f"hacluster, version {VERSION}"
    assert _run(root, "hacluster-agent", "--version").strip() == f"hacluster-agent {VERSION}"
    # The agent's whole import graph loads from the bundled dependencies alone.
    venv = root / VENV
    r = subprocess.run([str(venv / "bin/python"), "-I", "-B", "-c",
                        "import hacluster.daemon, hacluster_cli.main, sys; print(hacluster.daemon.__file__)"],
                       capture_output=True, text=True, timeout=60, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(venv / "lib/python3.11/site-packages/hacluster/"))


def test_the_venv_names_its_installed_path_only(root):
    venv = root / VENV
    assert (venv / "bin/python").resolve().is_relative_to("/usr/bin")
    for command in ("hacluster", "hacluster-agent"):
        assert (venv / "bin" / command).read_text().splitlines()[0] == "#!/opt/hacluster/venv/bin/python3"
        assert os.readlink(root / "usr/bin" / command) == f"/opt/hacluster/venv/bin/{command}"
    assert "command = /usr/bin/python3 -m venv /opt/hacluster/venv" in (venv / "pyvenv.cfg").read_text()
    # No byte code (postinst compiles it), no pip.
    assert not list(venv.rglob("*.pyc"))
    assert not (venv / "bin/pip").exists()


def test_the_unit_reloads_and_starts_the_packaged_agent(root):
    unit = (root / "lib/systemd/system/hacluster-agent.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
    start = re.search(r"^ExecStart=(\S+) --config /etc/hacluster/hacluster.yaml$", unit, re.M)
    assert start, unit
    assert (root / start.group(1).lstrip("/")).is_file()  # through the package's `current` link
    assert "\nUser=hacluster\n" in unit and "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW" in unit
    assert "{{" not in unit and "{%" not in unit


def test_man_pages_completion_and_example(root):
    for page in ("usr/share/man/man1/hacluster.1.gz", "usr/share/man/man8/hacluster-agent.8.gz"):
        text = subprocess.run(["zcat", str(root / page)], capture_output=True, text=True, check=True).stdout
        assert text.startswith('.\\" DO NOT MODIFY THIS FILE!'), text[:200]  # help2man's header
        assert "config" in text and VERSION in text
    completion = root / "usr/share/bash-completion/completions/hacluster"
    assert "complete -o nosort -F _hacluster_completion hacluster" in completion.read_text()
    # What the completion function asks the command for, for `hacluster sta<TAB>`.
    out = _run(root, "hacluster", env={"COMP_WORDS": "hacluster sta", "COMP_CWORD": "1",
                                       "_HACLUSTER_COMPLETE": "bash_complete"})
    assert "plain,status" in out.splitlines()
    assert (root / "usr/share/doc/hacluster/examples/hacluster.yaml").is_file()
    assert (root / "usr/share/doc/hacluster/copyright").is_file()


# `dpkg -i` for real, maintainer scripts included, in a chroot whose root is an overlay of
# this machine's (a private mount namespace: nothing reaches the real /, /etc/passwd or dpkg's
# database, and the overlay vanishes with the namespace).
_OVERLAY_INSTALL = r"""
set -e
mount -t tmpfs tmpfs "$OV"
mkdir -p "$OV/upper" "$OV/work" "$OV/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$OV/upper,workdir=$OV/work" "$OV/merged"
mount --bind /proc "$OV/merged/proc"
mount --bind /dev "$OV/merged/dev"
cp "$DEB" "$OV/merged/root/hacluster.deb"
chroot "$OV/merged" /bin/sh -ec '
  dpkg -i /root/hacluster.deb >/dev/null
  getent passwd hacluster | cut -d: -f1,6,7
  stat -c "%U:%G %a" /etc/hacluster
  hacluster --version
  hacluster-agent --version
  test -n "$(find /opt/hacluster/venv -name "*.pyc" | head -1)" && echo compiled
  dpkg -r hacluster >/dev/null
  test ! -e /opt/hacluster && echo removed'
"""


def test_dpkg_installs_and_removes_it_in_an_overlay_chroot(deb, tmp_path):
    ov = tmp_path / "overlay"
    ov.mkdir()
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", _OVERLAY_INSTALL],
                       capture_output=True, text=True, timeout=180,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OV": str(ov), "DEB": str(deb)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "hacluster:/nonexistent:/usr/sbin/nologin",  # postinst's system user
        "root:hacluster 750",  # the config directory: root writes, the agent's group reads
        f"hacluster, version {VERSION}", f"hacluster-agent {VERSION}",  # /usr/bin on the PATH
        "compiled",  # postinst's byte code...
        "removed",  # ...which prerm removes, so that dpkg -r leaves no /opt/hacluster behind
    ], r.stdout + r.stderr
