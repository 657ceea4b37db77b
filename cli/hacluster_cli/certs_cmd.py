"""`hacluster certs init|issue|show`: the cluster CA and the mutual-TLS certificates.

Registered in main.py with `cli.add_command(certs)`. It must not import hacluster_cli.main
(main imports this module); its errors are safe_text.CliError, as main's are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hacluster import certs as lib
from hacluster_cli.safe_text import CliError, scrub

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


CertsCliError = CliError  # printed as 'Error: ...' (escaped); exits with `exit_code`


def _cli_error(e: lib.CertError) -> CertsCliError:
    # A bad argument value is a usage error (2); a refusal (exists, key mode, wrong CA) is 1.
    return CertsCliError(str(e), EXIT_USAGE if isinstance(e, lib.CertInputError) else EXIT_INVALID)


def _mode(path: Path) -> str:
    return f"{path.stat().st_mode & 0o7777:04o}"


@click.group()
def certs() -> None:
    """The cluster CA and the certificates agents and the CLI use for mutual TLS.

    One CA per cluster. Every agent gets a node certificate (server and client), operators
    an admin certificate, monitoring a reader certificate. The identity is the URI in the
    certificate: hacluster://CLUSTER/node|admin|reader/NAME. Keep ca.key off the servers.

    \b
    Examples:
      hacluster certs init --dir ./pki --cluster prod
      hacluster certs issue n1 --address 10.0.0.11 --dir ./pki --out ./pki/n1
      hacluster certs issue --admin alice --dir ./pki
      hacluster certs show ./pki/n1/n1.crt --ca ./pki/ca.crt
    """


_dir_option = click.option("--dir", "ca_dir", required=True, metavar="DIR",
                           type=click.Path(file_okay=False, path_type=Path),
                           help="The CA directory (holds ca.crt and ca.key).")
_force_option = click.option("--force", is_flag=True,
                             help="Replace existing files (a new CA invalidates every issued certificate).")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print one JSON object with the written paths instead of text.")


@certs.command()
@_dir_option
@click.option("--cluster", required=True, metavar="NAME",
              help="The cluster name, as `cluster:` in the config (letters, digits, _ . -).")
@click.option("--days", type=int, default=lib.CA_DAYS, show_default=True,
              help=f"CA lifetime in days (1-{lib.CA_MAX_DAYS}).")
@_force_option
@_json_option
def init(ca_dir: Path, cluster: str, days: int, force: bool, as_json: bool) -> None:
    """Create the cluster CA: DIR/ca.crt (0644, copy to every server) and DIR/ca.key (0600).

    Refuses to replace an existing CA unless --force: every certificate it signed would
    stop working at once.

    \b
    Example:
      hacluster certs init --dir /root/hacluster-pki --cluster prod
    """
    try:
        ca = lib.init_ca(ca_dir, cluster, days=days, force=force)
    except lib.CertError as e:
        raise _cli_error(e) from None
    if as_json:
        click.echo(json.dumps({"cluster": ca.cluster, "cert": str(ca.cert), "key": str(ca.key),
                               "cert_mode": _mode(ca.cert), "key_mode": _mode(ca.key),
                               "not_after": ca.not_after.isoformat(),
                               "fingerprint_sha256": ca.fingerprint_sha256}))
        return
    click.echo(f"wrote {ca.cert} (mode {_mode(ca.cert)}): CA of cluster {ca.cluster}, "
               f"valid until {ca.not_after.date()}")
    click.echo(f"wrote {ca.key} (mode {_mode(ca.key)}): keep it secret, ideally offline")
    click.echo(f"  sha256 {ca.fingerprint_sha256}")


@certs.command()
@click.argument("node", required=False, metavar="[NODE]")
@click.option("--admin", "admin_name", metavar="NAME", help="Issue an admin (operator CLI) certificate.")
@click.option("--reader", "reader_name", metavar="NAME", help="Issue a read-only monitoring certificate.")
@click.option("--address", "addresses", multiple=True, metavar="IP",
              help="The node's IP address (repeatable; required for a node).")
@_dir_option
@click.option("--out", "out_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write NAME.crt and NAME.key (default: the CA directory).")
@click.option("--days", type=int, default=None,
              help=f"Lifetime in days (1-{lib.LEAF_MAX_DAYS}; default {lib.NODE_DAYS} for nodes, "
                   f"{lib.ADMIN_DAYS} for admin and reader).")
@_force_option
@_json_option
def issue(node: str | None, admin_name: str | None, reader_name: str | None, addresses: tuple[str, ...],
          ca_dir: Path, out_dir: Path | None, days: int | None, force: bool, as_json: bool) -> None:
    """Sign a certificate for NODE (an agent), --admin NAME or --reader NAME.

    Writes OUT/NAME.crt (0644) and OUT/NAME.key (0600, never readable by others, not even
    while being written). A node certificate names the node id and its --address IPs, and
    works as both TLS server and client; admin and reader certificates are client-only.

    \b
    Examples:
      hacluster certs issue n1 --address 10.0.0.11 --dir ./pki --out ./pki/n1
      hacluster certs issue n2 --address 10.0.0.12 --address fd00::12 --dir ./pki --out ./pki/n2
      hacluster certs issue --admin alice --dir ./pki --out ~/.config/hacluster
      hacluster certs issue --reader prometheus --dir ./pki --days 90
    """
    chosen = [(role, name) for role, name in (("node", node), ("admin", admin_name),
                                              ("reader", reader_name)) if name is not None]
    if len(chosen) != 1:
        raise click.UsageError("say what to issue: exactly one of NODE, --admin NAME or --reader NAME")
    role, name = chosen[0]
    if role != "node" and addresses:
        raise click.UsageError(f"--address is for node certificates, not --{role}")
    try:
        issued = lib.issue(ca_dir, out_dir or ca_dir, role, name,  # type: ignore[arg-type]
                           addresses=addresses, days=days, force=force)
    except lib.CertError as e:
        raise _cli_error(e) from None
    if as_json:
        click.echo(json.dumps({"identity": issued.identity.uri, "role": role, "name": name,
                               "addresses": list(issued.addresses), "cert": str(issued.cert),
                               "key": str(issued.key), "cert_mode": _mode(issued.cert),
                               "key_mode": _mode(issued.key), "not_after": issued.not_after.isoformat(),
                               "fingerprint_sha256": issued.fingerprint_sha256}))
        return
    extra = f", addresses {', '.join(issued.addresses)}" if issued.addresses else ""
    click.echo(f"wrote {issued.cert} (mode {_mode(issued.cert)}): {issued.identity.uri}{extra}, "
               f"valid until {issued.not_after.date()}")
    click.echo(f"wrote {issued.key} (mode {_mode(issued.key)}): private key, copy it only to its owner")


@certs.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ca", "ca_file", metavar="CA.crt", type=click.Path(dir_okay=False, path_type=Path),
              help="Also check that this CA signed FILE and that both are valid now.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def show(file: Path, ca_file: Path | None, as_json: bool) -> None:
    """Show a certificate: identity, subject, validity, days left, SANs, fingerprint.

    With --ca, also verify it against the cluster CA; exits 1 when that fails (the details
    are still printed).

    \b
    Examples:
      hacluster certs show /etc/hacluster/tls/node.crt
      hacluster certs show /etc/hacluster/tls/node.crt --ca /etc/hacluster/tls/ca.crt --json
    """
    try:
        info = lib.describe(file)
    except lib.CertError as e:
        raise _cli_error(e) from None
    chain_error = None
    if ca_file is not None:
        try:
            lib.verify_chain(file, ca_file)
        except lib.CertError as e:
            chain_error = str(e)
        info["chain"] = {"ca": str(ca_file), "ok": chain_error is None, "error": chain_error}
    # a certificate's subject and names are whatever its maker wrote: escaped for people
    click.echo(json.dumps(info) if as_json else _render(file, scrub(info)))
    if chain_error is not None:
        raise CertsCliError(f"{file}: {chain_error}", EXIT_INVALID)


def _render(file: Path, info: dict[str, Any]) -> str:
    ident = info["identity"]
    who = ident["uri"] if ident else ("(a CA certificate)" if info["is_ca"] else
                                      f"(none: {info['identity_error']})")
    state = "EXPIRED" if info["expired"] else f"{info['days_left']} days left"
    lines = [f"{file}",
             f"  identity     {who}",
             f"  subject      {info['subject']}",
             f"  issuer       {info['issuer']}",
             f"  valid        {info['not_before']} .. {info['not_after']} ({state})"]
    if info["dns_names"] or info["ip_addresses"]:
        lines.append(f"  names        {', '.join(info['dns_names'] + info['ip_addresses'])}")
    if info["extended_key_usage"]:
        lines.append(f"  usage        {', '.join(info['extended_key_usage'])}")
    lines.append(f"  sha256       {info['fingerprint_sha256']}")
    if "chain" in info:
        chain = info["chain"]
        lines.append(f"  chain        {'ok, signed by ' + chain['ca'] if chain['ok'] else 'FAILED'}")
    return "\n".join(lines)
