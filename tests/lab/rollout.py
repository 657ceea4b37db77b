"""The Ansible rollout lab: three lab servers (network namespaces) running sshd, reached by
ansible-playbook over SSH through the lab's client namespace (ProxyCommand: `ip netns exec
CLIENT nc HOST 22`, a bastion as in a hospital), each with its own install prefix (the
servers share this machine's file system). Agents are installed and started by the role only.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from hacluster.lab.lab import DEFAULT_CHECKS, HTTP_PORT, UDP_PORT, Lab
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.M)


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict[str, dict[str, int]]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    tail = output[output.rfind("PLAY RECAP"):] if "PLAY RECAP" in output else ""
    return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in _RECAP.finditer(tail)}


class RolloutLab:
    """A Lab's network and backends, sshd in each server namespace, no agents: ansible
    installs them. Everything lives under the lab's directory, removed by lab.down()."""

    def __init__(self, lab: Lab, wheelhouse: Path):
        self.lab = lab
        self.dir = lab.dir / "rollout"
        self.wheelhouse = wheelhouse
        self.sshd: list[subprocess.Popen[bytes]] = []
        self.key = self.dir / "id_ed25519"
        self.inventory = self.dir / "hosts.yml"
        self.secret = secrets.token_hex(24)
        self.had_user = _exists("passwd", "hacluster")
        self.had_group = _exists("group", "hacluster")

    def root(self, name: str) -> Path:
        return self.dir / f"root-{name}"

    def up(self) -> None:
        lab = self.lab
        lab._build_network()
        self.dir.mkdir(parents=True)
        # The agents run as the unprivileged user the role creates: it must be able to reach
        # its install prefix (traverse only: the keys in here are 0600 files).
        for d in (self.dir.parent.parent, self.dir.parent, self.dir):
            d.chmod(d.stat().st_mode | 0o711)
        for node in lab.nodes:
            lab.start_backend(node)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key")],
                       check=True)
        shutil.copy(self.key.with_suffix(".pub"), self.dir / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        for node in lab.nodes:
            conf = self.dir / f"sshd-{node.name}.conf"
            conf.write_text("\n".join([
                f"ListenAddress {node.ip}:22", f"HostKey {self.dir / 'host_key'}",
                f"PidFile {self.dir / f'sshd-{node.name}.pid'}",
                f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                "PermitRootLogin prohibit-password", "PasswordAuthentication no",
                "KbdInteractiveAuthentication no", "UsePAM no", "LogLevel ERROR",
                "Subsystem sftp /usr/lib/openssh/sftp-server", ""]))
            self.sshd.append(lab._spawn(node.netns, ["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
                                        self.dir / f"sshd-{node.name}.log"))
        self.write_inventory()
        for node in lab.nodes:  # sshd answers through the bastion before ansible starts
            self.wait_ssh(node.ip)

    def wait_ssh(self, ip: str, timeout: float = 20) -> None:
        wait_until(lambda: subprocess.run(["ip", "netns", "exec", self.lab.client_ns, "nc", "-z", "-w", "1",
                                           ip, "22"], capture_output=True).returncode == 0,
                   timeout, f"sshd at {ip}:22 (log: {self.dir}/sshd-*.log)", interval=0.1)

    def down(self) -> None:
        """The lab's namespaces, processes and files; and the system user and group the role
        created on this machine, if they were not there before."""
        self.lab.down()
        for p in self.sshd:
            p.wait(5)
        if not self.had_user:
            subprocess.run(["userdel", "hacluster"], capture_output=True)
        if not self.had_group:
            subprocess.run(["groupdel", "hacluster"], capture_output=True)

    def write_inventory(self) -> None:
        lab = self.lab
        backends = [{"node": n.name} for n in lab.nodes]
        proxy = f"ip netns exec {lab.client_ns} nc %h %p"
        inv = {"all": {"children": {"hacluster_servers": {"hosts": {
            n.name: {"ansible_host": n.ip, "hacluster_address": n.ip,
                     "hacluster_root": str(self.root(n.name))} for n in lab.nodes}}},
            "vars": {
                "ansible_user": "root",
                "ansible_become": False,  # root already (and no sudo in the lab)
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": f"-o ProxyCommand='{proxy}' -o StrictHostKeyChecking=no "
                                           "-o UserKnownHostsFile=/dev/null",
                "hacluster_cluster_name": lab.prefix,
                "hacluster_secret": self.secret,
                "hacluster_pki_dir": str(self.dir / "pki"),
                "hacluster_wheelhouse_dir": str(self.wheelhouse),
                "hacluster_controller_cli": str(VENV_BIN / "hacluster"),
                "hacluster_service_manager": "daemon",
                # the servers share this machine's packages (scripts/setup.sh installs them):
                # three apt tasks at once would only queue on one dpkg lock (~30 s of CI)
                "hacluster_manage_packages": False,
                "hacluster_healthy_timeout_s": 60,
                "hacluster_vips": [{"address": lab.vip, "prefix": 24}],
                "hacluster_checks": DEFAULT_CHECKS,
                "hacluster_services": [
                    {"name": "web", "vip": lab.vip, "protocol": "tcp", "port": HTTP_PORT,
                     "algorithm": "round-robin", "check": "web", "backends": backends},
                    {"name": "echo", "vip": lab.vip, "protocol": "udp", "port": UDP_PORT,
                     "algorithm": "round-robin", "check": "web", "backends": backends}],
            }}}
        self.inventory.write_text(yaml.safe_dump(inv, sort_keys=False))

    def playbook(self, name: str, *extra: str, timeout: float = 600) -> PlaybookRun:
        env = dict(os.environ,
                   ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
                   ANSIBLE_HOME=str(self.dir / "ansible-home"),
                   ANSIBLE_LOCAL_TEMP=str(self.dir / "ansible-tmp"),
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.dir / "cp"),
                   ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
                   ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_PIPELINING="1",
                   # one SSH connection per server for the whole run; no compression (CPU)
                   ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=600s",
                   PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        try:
            proc = subprocess.run(
                [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory),
                 str(ANSIBLE / "playbooks" / name), *extra],
                capture_output=True, text=True, env=env, timeout=timeout, cwd=ANSIBLE)
        except subprocess.TimeoutExpired as e:
            partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
            raise AssertionError(f"{name} still running after {timeout} s; its output so far:\n"
                                 + "\n".join(partial.splitlines()[-60:])) from None
        out = proc.stdout + proc.stderr
        with (self.dir / f"{name}.log").open("a") as log:
            log.write(out)
        return PlaybookRun(proc.returncode, out, parse_recap(proc.stdout))

    def agent_pid(self, name: str) -> int | None:
        try:
            pid = int((self.root(name) / "run/hacluster/agent.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def cli(self, name: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """The `hacluster` command the role installed on server `name`, run there."""
        node = self.lab.node(name)
        root = self.root(name)
        return subprocess.run(
            ["ip", "netns", "exec", node.netns, str(root / "usr/local/bin/hacluster"), *args,
             "--config", str(root / "etc/hacluster/hacluster.yaml")],
            capture_output=True, text=True, timeout=timeout)


def _exists(db: str, name: str) -> bool:
    return subprocess.run(["getent", db, name], capture_output=True).returncode == 0


def upgraded_source(dest: Path, version: str) -> Path:
    """A copy of the project's source with another version: what a release would be."""
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv", "dist", "build", "*.egg-info", "__pycache__", "tests", "bench",
        "lab-runs", "test-artifacts", "vagrant", "ansible"))
    py = dest / "pyproject.toml"
    text = py.read_text()
    py.write_text(re.sub(r'(?m)^version = "[^"]+"', f'version = "{version}"', text, count=1))
    return dest
