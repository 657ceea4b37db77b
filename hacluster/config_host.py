"""What a valid config refers to on this host: the files it names, the commands of its exec
checks, and the subnets of the interfaces its VIPs go on (`hacluster config validate`).

These are findings about the host, not about the file, so they are warnings (exit 0) and
notes, never errors: a config is validated before its certificates are copied, or on
another machine (a template in CI, the controller). `config validate --strict` makes the
warnings fail. The agent does not run these checks; it refuses to start by itself without
what it cannot run without (config.read_secret, tls.load_tls: errors with the same paths),
and an interface may come up after it starts (a bond, a VLAN), so a VIP's subnet is checked
here only, where the interface is present.

Readability is judged as the user who runs the check (root under Ansible), which may not
be the agent's user: a key the agent's user cannot read still fails at start.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hacluster.config import Config, ConfigError, read_secret
from hacluster.health.exec_check import DEFAULT_PATH
from hacluster.health.spec import ExecCheck

IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class InterfaceUnreadable(Exception):
    """The interface exists, but its addresses cannot be read (the reason is the message)."""


class Interfaces(Protocol):
    def addresses(self, name: str) -> list[IpInterface] | None:
        """The interface's addresses with their prefixes; None when there is no such
        interface on this host. Raises InterfaceUnreadable when it cannot tell."""


class LocalInterfaces:
    """This host's interfaces: present when the kernel knows the name, addresses from
    `ip -j addr show dev NAME` (iproute2: every address, secondary and IPv6 ones too)."""

    def __init__(self, run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run):
        self._run = run

    def addresses(self, name: str) -> list[IpInterface] | None:
        try:
            socket.if_nametoindex(name)
        except OSError:
            return None
        ip = shutil.which("ip", path=DEFAULT_PATH)
        if ip is None:
            raise InterfaceUnreadable("no `ip` command (iproute2)")
        try:
            proc = self._run([ip, "-j", "addr", "show", "dev", name], capture_output=True, text=True,
                             timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InterfaceUnreadable(f"ip addr show: {e}") from None
        if proc.returncode != 0:
            raise InterfaceUnreadable(f"ip addr show: {proc.stderr.strip() or proc.returncode}")
        try:
            return [ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
                    for link in json.loads(proc.stdout) for a in link.get("addr_info", ())
                    if a.get("family") in ("inet", "inet6")]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InterfaceUnreadable(f"unexpected output of ip -j addr show ({e})") from None


@dataclass
class HostFindings:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked here, and why


def host_findings(cfg: Config, interfaces: Interfaces | None = None) -> HostFindings:
    """Every finding about this host for a valid config, each with its dotted path."""
    out = HostFindings()
    _secret(cfg, out)
    _tls(cfg, out)
    _exec_commands(cfg, out)
    _vip_subnets(cfg, LocalInterfaces() if interfaces is None else interfaces, out)
    return out


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a file by this user ("is missing", "is a directory",
    "is not readable (...)"), or None when it can."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "is missing"
    except NotADirectoryError:
        return "is missing (a parent is not a directory)"
    except PermissionError:
        return "is not readable (permission denied on a directory above it)"
    except OSError as e:
        return f"cannot be checked ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"is not readable ({(e.strerror or str(e)).lower()}; mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _secret(cfg: Config, out: HostFindings) -> None:
    problem = file_problem(cfg.secret_file)
    if problem:
        out.warnings.append(f"secret_file: {cfg.secret_file} {problem}: the agent refuses to start "
                            "without the cluster secret")
        return
    try:
        read_secret(cfg.secret_file)  # its mode and length; the secret itself is never shown
    except ConfigError as e:
        out.warnings += e.errors


def _tls(cfg: Config, out: HostFindings) -> None:
    files = {"ca_file": cfg.tls.ca_file, "cert_file": cfg.tls.cert_file, "key_file": cfg.tls.key_file}
    missing = False
    for key, path in files.items():
        problem = file_problem(path)
        if problem:
            missing = True
            out.warnings.append(f"tls.{key}: {path} {problem}: the agent refuses to start without it")
    if not missing:
        from hacluster.tls import TlsError, load_tls  # grpc: only when there is something to load

        try:  # what the agent checks at start: the CA's signature, cluster, role, name, dates
            load_tls(cfg.tls, cfg.cluster, ("node",), cfg.node_id)
        except TlsError as e:
            out.warnings.append(f"tls.{e}: the agent refuses to start with it")
    if cfg.cli_tls is not None:
        for key, path in (("cli_cert_file", cfg.cli_tls.cert_file), ("cli_key_file", cfg.cli_tls.key_file)):
            problem = file_problem(path)
            if problem:
                out.warnings.append(f"tls.{key}: {path} {problem}: `hacluster --config` on this server "
                                    "cannot use it (pass --cert and --key)")


def _exec_commands(cfg: Config, out: HostFindings) -> None:
    # The configured checks come first in cfg.checks (derived ones, never exec, follow), so
    # the index is the file's.
    for i, check in enumerate(cfg.checks):
        if not isinstance(check, ExecCheck):
            continue
        where, command = f"checks[{i}].command[0]", check.command[0]
        if "/" in command and not command.startswith("/"):
            out.warnings.append(f"{where}: {command} is a relative path: the agent runs it from its own "
                                f"working directory (/ under systemd), not this one; give it in full")
        elif "/" in command:
            path = Path(command)
            problem = file_problem(path)
            if problem is None and not os.access(path, os.X_OK):
                problem = "is not executable"
            if problem:
                out.warnings.append(f"{where}: {command} {problem}: check {check.name} fails until it is")
        else:
            search = check.env.get("PATH", DEFAULT_PATH)
            if shutil.which(command, path=search) is None:
                out.warnings.append(f"{where}: {command} is not found on the check's PATH ({search}): "
                                    f"check {check.name} fails until it is installed")


def _vip_subnets(cfg: Config, interfaces: Interfaces, out: HostFindings) -> None:
    seen: dict[str, list[IpInterface] | None | str] = {}
    for i, vip in enumerate(cfg.vips):
        name = vip.interface
        if name not in seen:
            try:
                seen[name] = interfaces.addresses(name)
            except InterfaceUnreadable as e:
                seen[name] = str(e)
        found = seen[name]
        if found is None:
            out.notes.append(f"vips[{i}].interface: interface {name} not present here: subnet not checked")
            continue
        if isinstance(found, str):
            out.notes.append(f"vips[{i}].interface: cannot read {name}'s addresses ({found}): "
                             "subnet not checked")
            continue
        address = ipaddress.ip_address(vip.address)
        # the VIP itself is on the interface while this server holds it: not a subnet of its own
        own = [a for a in found if a.version == address.version and a.ip != address]
        family = f"IPv{address.version}"
        if not own:
            out.warnings.append(f"vips[{i}].address: {name} has no {family} address here: hosts on "
                                f"its network cannot be told where {address} is; check vips[{i}].interface")
        elif not any(address in a.network for a in own):
            nets = ", ".join(sorted({str(a.network) for a in own}))
            out.warnings.append(f"vips[{i}].address: {address} is outside {name}'s subnets here ({nets}): "
                                f"clients on them would not find it by ARP; check the address or "
                                f"vips[{i}].interface")
