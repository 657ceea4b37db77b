"""How a command finds its agent: the config lookup, the admin address and the credentials.

The config is, in this order: --config FILE; else the file $HACLUSTER_CONFIG names; else
/etc/hacluster/hacluster.yaml, the file the Ansible role writes on every server (so on a
server no flag is needed). --admin HOST:PORT asks another agent with that config's
credentials; --admin with --ca, --cert and --key needs no config at all. Every problem
here is a usage or config error (exit 2), saying what to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc

from hacluster.config import ConfigError, load_config
from hacluster.endpoints import parse_hostport
from hacluster.model import TlsFiles
from hacluster.tls import TlsError, load_tls
from hacluster_cli.client import AdminCallError, TlsFailed, grpc_target, target_from_config
from hacluster_cli.safe_text import CliError

EXIT_USAGE = 2
CONFIG_ENV = "HACLUSTER_CONFIG"
DEFAULT_CONFIG = "/etc/hacluster/hacluster.yaml"  # what the Ansible role writes


@dataclass(frozen=True)
class AgentRef:
    """The agent a command asks, and with what."""

    target: str  # HOST:PORT of its admin API
    creds: grpc.ChannelCredentials
    files: TlsFiles  # the CA and certificate behind `creds`: named when the handshake fails

    def error(self, e: AdminCallError) -> CliError:
        """A failed call as the CLI prints it; a failed TLS handshake names our CA file."""
        text = e.line(str(self.files.ca_file)) if isinstance(e, TlsFailed) else str(e)
        return CliError(text, e.exit_code)


def resolve_agent(conn: dict[str, Any]) -> AgentRef:
    """The agent the options (config_path, admin, ca, cert, key) name; CliError (exit 2)
    or click's usage errors otherwise."""
    config_path, admin, ca, cert, key = (conn[k] for k in ("config_path", "admin", "ca", "cert", "key"))
    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key go together")
    if not config_path and not (admin and ca and cert):
        config_path = find_config()
    cluster = None
    try:
        if config_path:
            cfg = load_config(config_path)
            target = target_from_config(cfg)
            cluster = cfg.cluster
            files = cfg.cli_tls
            if cert and key:
                files = TlsFiles(Path(ca) if ca else cfg.tls.ca_file, Path(cert), Path(key))
            if files is None:
                raise click.UsageError(f"{config_path} names no CLI certificate (tls.cli_cert_file): "
                                       "pass --cert and --key")
        else:
            target = ""
            files = TlsFiles(Path(ca or ""), Path(cert or ""), Path(key or ""))
    except ConfigError as e:
        lines = [f"{e.source}: {len(e.errors)} error(s)"] + [f"  {msg}" for msg in e.errors]
        raise CliError("\n".join(lines), EXIT_USAGE) from None
    if admin:
        try:
            host, port = parse_hostport(admin, min_port=1)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--admin") from None
        target = grpc_target(host, port)
    try:
        tls = load_tls(files, cluster or _cluster_of(files), ("admin", "reader", "node"))
    except TlsError as e:
        raise CliError(f"cannot use the certificate: {e}", EXIT_USAGE) from None
    return AgentRef(target, tls.channel_credentials(), files)


def find_config() -> str:
    """The config to use when no --config is given: $HACLUSTER_CONFIG, else DEFAULT_CONFIG;
    a usage error (exit 2) saying where it looked and how to fix it when there is none."""
    named = os.environ.get(CONFIG_ENV, "")
    if named:
        if not Path(named).exists():
            raise CliError(f"{CONFIG_ENV}={named}: no such file. Fix: point {CONFIG_ENV} at this "
                           "server's hacluster config, unset it to use "
                           f"{DEFAULT_CONFIG}, or pass --config FILE", EXIT_USAGE)
        return named
    if Path(DEFAULT_CONFIG).exists():
        return DEFAULT_CONFIG
    raise CliError(
        f"no hacluster config found: tried --config (not given), ${CONFIG_ENV} (not set) and "
        f"{DEFAULT_CONFIG} (no such file).\n"
        "  Fix: run this on a cluster server (the Ansible role writes "
        f"{DEFAULT_CONFIG}), or pass --config FILE or set {CONFIG_ENV}=FILE (a server's "
        "hacluster config), or give --admin HOST:PORT with --ca, --cert and --key", EXIT_USAGE)


def _cluster_of(files: TlsFiles) -> str:
    """Without a config, the cluster is the one the certificate names."""
    from hacluster.certs import CertError, identity_from_cert
    try:
        return identity_from_cert(files.cert_file.read_bytes()).cluster
    except (OSError, CertError) as e:
        raise CliError(f"cannot use the certificate {files.cert_file}: {e}", EXIT_USAGE) from None
