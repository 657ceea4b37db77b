"""The status page in a real headless browser (Debian's chromium) against a live lab: it
loads, shows the leader and the VIP holder, and follows a failover. Chromium runs in the lab
client's namespace, as an operator's browser on the management network would, and keeps a
screenshot of each step in test-artifacts/ (git-ignored) for people to look at."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from hacluster.lab.lab import METRICS_PORT
from tests.support.wait import wait_until

from .conftest import all_healthy
from .test_operate import cli

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BROWSER_TIMEOUT_S = 60  # one chromium run; a wedged one is killed with its whole process group
VIRTUAL_TIME_MS = 5000  # virtual time for the page's first fetches (it polls every 2 s)


class Browser:
    """Headless chromium runs in one namespace, each with a throwaway profile."""

    def __init__(self, netns: str, scratch: Path):
        self.exe = shutil.which("chromium")
        if self.exe is None:
            pytest.fail("the status page test needs Debian's chromium: run scripts/setup.sh")
        self.netns = netns
        self.scratch = scratch
        self.runs = 0

    def _run(self, url: str, *args: str) -> str:
        self.runs += 1
        cmd = ["ip", "netns", "exec", self.netns, str(self.exe), "--headless=new", "--no-sandbox",
               "--disable-gpu", "--no-first-run", "--no-proxy-server", "--disable-extensions",
               f"--user-data-dir={self.scratch / f'profile-{self.runs}'}",
               f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args, url]
        # its own session: chromium forks renderers and helpers, and a timeout must end them all
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"chromium took over {BROWSER_TIMEOUT_S} s on {url}") from None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # helpers left behind by this run, if any
            except ProcessLookupError:
                pass
        assert proc.returncode == 0, f"chromium failed on {url}: {err[-2000:]}"
        return out

    def dom(self, url: str) -> str:
        """The DOM after the page's scripts ran."""
        return self._run(url, "--dump-dom")

    def screenshot(self, url: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._run(url, f"--screenshot={path}", "--window-size=1280,900")
        assert path.exists() and path.stat().st_size > 0, f"no screenshot at {path}"
        return path


def page_url(lab, name: str) -> str:
    return f"http://{lab.node(name).ip}:{METRICS_PORT}/"


def shown(dom: str) -> dict[str, object]:
    """What the rendered page says: the connection state, the leader, and each VIP's row."""
    conn = re.search(r'id="conn"[^>]*data-state="([^"]*)"', dom)
    leader = re.search(r'id="leader"[^>]*>([^<]*)<', dom)
    vips = {m.group(1): {"holder": m.group(2), "held": m.group(3) == "true"} for m in re.finditer(
        r'<tr data-vip="([^"]*)" data-holder="([^"]*)" data-held="([^"]*)"', dom)}
    return {"conn": conn and conn.group(1), "leader": leader and leader.group(1).strip(), "vips": vips,
            "members": set(re.findall(r'data-member="([^"]*)"', dom)),
            "failovers": len(re.findall(r'data-kind="failover"', dom)),
            "durations": len(re.findall(r'data-duration-ms="', dom))}


def wait_shown(browser: Browser, url: str, want, what: str) -> dict[str, object]:
    """Re-render until the page shows what we want: a page fetched mid-election may lag."""
    last: dict[str, object] = {}

    def ok() -> bool:
        nonlocal last
        last = shown(browser.dom(url))
        return bool(want(last))

    try:
        wait_until(ok, 60, what, interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}; the page showed {last}") from None
    return last


def test_the_status_page_shows_the_leader_and_follows_a_failover(lab, tmp_path):
    browser = Browser(lab.client_ns, tmp_path)
    wait_until(lambda: all_healthy(lab), 30, "every member alive and healthy")
    old = lab.holders()[0]
    target = next(n.name for n in lab.nodes if n.name != old)
    names = {n.name for n in lab.nodes}

    before = wait_shown(browser, page_url(lab, old), lambda s: s["leader"] == old and s["conn"] == "ok"
                        and s["members"] == names, f"{old}'s page showing itself as leader")
    assert before["vips"] == {lab.vip: {"holder": old, "held": True}}, before
    # a follower's page names the leader as holder, and says it does not hold the VIP itself
    other = next(n for n in names if n not in (old, target))
    seen = wait_shown(browser, page_url(lab, other), lambda s: s["leader"] == old, f"{other}'s page")
    assert seen["vips"] == {lab.vip: {"holder": old, "held": False}}, seen
    browser.screenshot(page_url(lab, old), ARTIFACTS / "status-page-before.png")

    done = cli(lab, old, "failover", "--to", target)
    assert done.returncode == 0, done.stderr
    after = wait_shown(browser, page_url(lab, target), lambda s: s["leader"] == target
                       and s["vips"].get(lab.vip, {}).get("held"), f"{target}'s page showing it leads")
    assert after["vips"] == {lab.vip: {"holder": target, "held": True}} and after["conn"] == "ok", after
    # the old leader's page follows too, with the failover and how long the handover took
    old_page = wait_shown(browser, page_url(lab, old), lambda s: s["leader"] == target,
                          f"{old}'s page showing {target} as leader")
    assert old_page["vips"] == {lab.vip: {"holder": target, "held": False}}, old_page
    assert old_page["failovers"] >= 1 and old_page["durations"] >= 1, old_page
    browser.screenshot(page_url(lab, target), ARTIFACTS / "status-page-after.png")
