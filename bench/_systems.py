"""The systems under test, behind one small interface the failover benchmark drives.

* HaclusterSystem: the lab's own agents.
* KeepalivedSystem: the same lab (namespaces, bridge, backends, VIP) with the hacluster
  agents stopped right after up() and keepalived 2.2.7 started in every server namespace:
  one VRRP instance for the VIP on eth0, unicast adverts (the partition fault drops IP
  traffic between servers by address; multicast adverts to 224.0.0.18 would slip past it),
  priorities 150/100/50, all `state BACKUP` + `nopreempt` so that, like hacluster, a server
  that comes back never takes the VIP back from a healthy holder (no second move per fault).
  Its "agent" is every keepalived process of the namespace (parent and VRRP child).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from _labkit import POLL_S, BenchError, kill_and_reap, pids_by_comm

from hacluster.ha.loop import log as _loop_log
from hacluster.lab.lab import Lab, LabNode, cli_argv
from hacluster.lab.netns import ip, signal_pids
from hacluster.lab.wait import WaitTimeout, wait_until

# the loop's one-line sentence, as the agent logs it when it changes (named by the logger
# itself: a moved module once made every hacluster trial time out "not settled")
_SENTENCE = re.compile(rf" INFO {re.escape(_loop_log.name)}: "
                       r"(?P<s>(?:leader|follower|candidate)\b.*)$")
_LEADER = re.compile(r"^leader, term (\d+), lease ok, holds ")
_FOLLOWER = re.compile(r"^follower of (\S+), term (\d+),")
_KA_STATE = re.compile(r"\(VI_1\) Entering (MASTER|BACKUP|FAULT) STATE")


def _tail(path: Path, size: int = 16384) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


class System:
    """What the benchmark needs from a system: its agents, and when it is settled."""

    name = "?"
    # Seconds after a fault within which this system is expected to be serving again; the
    # client keeps probing this long after the fault (plus a margin) so recovery is seen.
    expected_recovery_s = 1.0
    settle_stable_s = 0.5

    def __init__(self, lab: Lab):
        self.lab = lab

    def up(self) -> None:
        raise NotImplementedError

    def agent_running(self, node: LabNode) -> bool:
        raise NotImplementedError

    def signal_agent(self, node: LabNode, sig: int) -> None:
        raise NotImplementedError

    def wait_agent_exit(self, node: LabNode, timeout: float) -> None:
        raise NotImplementedError

    def start_agent(self, node: LabNode) -> None:
        raise NotImplementedError

    def power_on(self, node: LabNode) -> None:
        raise NotImplementedError

    def roles_agree(self, holder: str) -> bool:
        """Every agent says `holder` leads (its own logs), so nothing is still moving."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop this system's processes (the lab itself is torn down by the caller)."""

    def settled_holder(self) -> str | None:
        if not all(self.agent_running(n) for n in self.lab.nodes):
            return None
        h = self.lab.holders()
        if len(h) != 1 or not self.roles_agree(h[0]):
            return None
        return h[0]

    def settle(self, timeout: float) -> str:
        """Wait until every agent runs, one server holds the VIP and all agree, and that
        state has held for settle_stable_s; return the holder."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        last: str | None = None
        checks = 0
        while time.monotonic() < deadline and checks < 100_000:
            checks += 1
            h = self.settled_holder()
            if h is None or h != last:
                since = time.monotonic() if h is not None else None
                last = h
            elif since is not None and time.monotonic() - since >= self.settle_stable_s:
                return h
            time.sleep(0.05)
        raise BenchError(f"{self.name}: not settled within {timeout:.0f} s "
                         f"(holders {self.lab.holders()}, agents running "
                         f"{[n.name for n in self.lab.nodes if self.agent_running(n)]}, "
                         f"roles {self.roles()})")

    def roles(self) -> dict[str, str]:
        """Each agent's own last word on its role (for error messages)."""
        return {}


class HaclusterSystem(System):
    name = "hacluster"
    expected_recovery_s = 1.0
    settle_stable_s = 0.5

    def up(self) -> None:
        self.lab.up()

    def agent_running(self, node: LabNode) -> bool:
        return node.agent is not None and node.agent.poll() is None

    def signal_agent(self, node: LabNode, sig: int) -> None:
        self.lab.signal_agent(node, sig)

    def wait_agent_exit(self, node: LabNode, timeout: float) -> None:
        self.lab.wait_agent_exit(node, timeout)

    def start_agent(self, node: LabNode) -> None:
        self.lab.start_agent(node)

    def power_on(self, node: LabNode) -> None:
        self.lab.power_on(node)

    def sentence(self, node: LabNode) -> str:
        for line in reversed(_tail(node.log)):
            m = _SENTENCE.search(line)
            if m:
                return m.group("s")
        return ""

    def roles(self) -> dict[str, str]:
        return {n.name: self.sentence(n) for n in self.lab.nodes}

    def switchover(self, node: LabNode) -> None:
        """`hacluster failover --to` another server, from the holder's namespace, in the
        background (the trial watches the client and the kernels meanwhile)."""
        target = next(n for n in self.lab.nodes if n is not node)
        self._switch = subprocess.Popen(
            cli_argv(node.netns, "failover", "--to", target.name, "--json", "--config",
                     str(node.config), python=self.lab.python),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def switchover_result(self) -> dict[str, object]:
        """What the CLI said (its switch_ms: release to claim, as the agents logged them)."""
        try:
            out, err = self._switch.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._switch.kill()
            raise BenchError("hacluster failover did not return within 30 s") from None
        if self._switch.returncode != 0:
            raise BenchError(f"hacluster failover failed ({self._switch.returncode}): {err.strip()}")
        return json.loads(out)

    def after_switchover(self, node: LabNode) -> None:
        pass  # the old holder is an ordinary follower: nothing to undo

    def roles_agree(self, holder: str) -> bool:
        terms = set()
        for n in self.lab.nodes:
            s = self.sentence(n)
            m = _LEADER.match(s) if n.name == holder else _FOLLOWER.match(s)
            if not m or (n.name != holder and m.group(1) != holder):
                return False
            terms.add(m.groups()[-1])
        return len(terms) == 1


def keepalived_conf(lab: Lab, node: LabNode, priority: int, version: int,
                    advert_int: float) -> str:
    peers = "\n".join(f"        {m.ip}" for m in lab.nodes if m is not node)
    vrid = 1 + int(lab.net.rsplit(".", 1)[1]) % 254  # differs between coexisting labs
    return f"""# generated by bench/failover.py for lab {lab.prefix}
global_defs {{
    router_id {node.name}
    vrrp_version {version}
}}
vrrp_instance VI_1 {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id {vrid}
    priority {priority}
    advert_int {advert_int:g}
    unicast_src_ip {node.ip}
    unicast_peer {{
{peers}
    }}
    virtual_ipaddress {{
        {lab.vip}/24 dev eth0
    }}
}}
"""


class KeepalivedSystem(System):
    PRIORITIES = (150, 100, 50)

    def __init__(self, lab: Lab, variant: str):
        super().__init__(lab)
        if variant == "default":
            self.version, self.advert_int = 2, 1.0
        elif variant == "tuned":
            self.version, self.advert_int = 3, 0.1
        else:
            raise ValueError(variant)
        self.variant = variant
        self.name = f"keepalived-{variant}"
        # Master down interval = 3 x advert + skew (< 1 advert): a backup takes over then.
        self.expected_recovery_s = 4.0 * self.advert_int
        self.settle_stable_s = max(0.5, 1.5 * self.advert_int)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _file(self, node: LabNode, suffix: str) -> Path:
        return self.lab.dir / node.name / f"keepalived-{self.variant}{suffix}"

    def up(self) -> None:
        """Take over a lab that is up: stop its hacluster agents, start keepalived."""
        for n in self.lab.nodes:
            if n.agent is not None and n.agent.poll() is None:
                self.lab.signal_agent(n, signal.SIGKILL)
                self.lab.wait_agent_exit(n, 5)
            self.delete_vip(n)
        for i, n in enumerate(self.lab.nodes):
            prio = self.PRIORITIES[i] if i < len(self.PRIORITIES) else 50 - i
            self._file(n, ".conf").write_text(
                keepalived_conf(self.lab, n, prio, self.version, self.advert_int))
            self.start_agent(n)

    def delete_vip(self, node: LabNode) -> None:
        ip("addr", "del", f"{self.lab.vip}/24", "dev", "eth0", ns=node.netns, check=False)

    def pids(self, node: LabNode) -> list[int]:
        return pids_by_comm(node.netns, "keepalived")

    def agent_running(self, node: LabNode) -> bool:
        p = self.procs.get(node.name)
        return p is not None and p.poll() is None and len(self.pids(node)) >= 2

    def switchover(self, node: LabNode) -> None:
        """keepalived's planned move: stop the master (it sends priority 0 on the way out)."""
        self.signal_agent(node, signal.SIGTERM)

    def switchover_result(self) -> dict[str, object]:
        return {"how": "SIGTERM of the master keepalived"}

    def after_switchover(self, node: LabNode) -> None:
        self.wait_agent_exit(node, 15)
        self.start_agent(node)

    def signal_agent(self, node: LabNode, sig: int) -> None:
        pids = self.pids(node)
        if not pids:
            raise BenchError(f"{node.name}: no keepalived process to signal")
        signal_pids(pids, sig)

    def wait_agent_exit(self, node: LabNode, timeout: float) -> None:
        p = self.procs.get(node.name)
        if p is not None:
            p.wait(timeout)
        wait_until(lambda: not self.pids(node), timeout, f"{node.name}: keepalived exit",
                   interval=POLL_S)

    def start_agent(self, node: LabNode) -> None:
        if self.pids(node):
            raise BenchError(f"{node.name}: keepalived already running {self.pids(node)}")
        old = self.procs.get(node.name)
        if old is not None:
            old.poll()  # reap
        # A keepalived that died without stopping (SIGKILL, power loss) leaves its VIP
        # behind; keepalived removes it at start too, this makes it explicit.
        self.delete_vip(node)
        cmd = ["ip", "netns", "exec", node.netns, "keepalived", "--dont-fork", "--log-console",
               "--log-detail", "--no-syslog", "--vrrp",
               "--use-file", str(self._file(node, ".conf")),
               "--pid", str(self._file(node, ".pid")),
               "--vrrp_pid", str(self._file(node, "-vrrp.pid"))]
        with open(self._file(node, ".log"), "ab") as f:
            self.procs[node.name] = subprocess.Popen(cmd, stdout=f, stderr=f,
                                                     stdin=subprocess.DEVNULL,
                                                     start_new_session=True)
        wait_until(lambda: len(self.pids(node)) >= 2 or self.procs[node.name].poll() is not None,
                   10, f"{node.name}: keepalived VRRP child", interval=POLL_S)
        if self.procs[node.name].poll() is not None:
            raise BenchError(f"{node.name}: keepalived exited at start; see "
                             f"{self._file(node, '.log')}")

    def power_on(self, node: LabNode) -> None:
        self.lab.restore_link(node)
        self.lab.start_backend(node)
        self.start_agent(node)

    def state(self, node: LabNode) -> str:
        for line in reversed(_tail(self._file(node, ".log"))):
            m = _KA_STATE.search(line)
            if m:
                return m.group(1)
        return ""

    def roles(self) -> dict[str, str]:
        return {n.name: self.state(n) for n in self.lab.nodes}

    def roles_agree(self, holder: str) -> bool:
        return all(self.state(n) == ("MASTER" if n.name == holder else "BACKUP")
                   for n in self.lab.nodes)

    def stop(self) -> None:
        """SIGKILL every keepalived of the lab (it would leave its VIP behind: delete it)."""
        for n in self.lab.nodes:
            signal_pids(self.pids(n), signal.SIGKILL)
        kill_and_reap(self.procs.values())
        for n in self.lab.nodes:
            try:
                wait_until(lambda n=n: not self.pids(n), 5, f"{n.name}: keepalived gone",
                           interval=POLL_S)
            except WaitTimeout:
                pass  # teardown kills whatever is left in the namespace
            self.delete_vip(n)
        self.procs.clear()
