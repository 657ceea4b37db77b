"""The Raft guard: only members may reach this node's Raft port (DESIGN.md §4).

pysyncobj's wire format is pickle behind the cluster secret; the secret stops a stranger
from running code, the guard stops a stranger from talking to the parser at all. It is
`table inet hacluster_guard`, a table of its own beside the balancing table: render.py and
NftApplier replace `inet hacluster` every generation and must not carry (or be able to
drop) the guard, and the guard must not wait for a balancing table to exist.

What the table does, on the input hook at priority filter - 5 (policy accept: every other
port is left alone):

- `tcp dport RAFT_PORT` from `iif lo` goes on to the connection limit: this node's own
  tools and peers that share the host (tests) arrive on loopback, whatever the address
  they dial.
- from a member address (named set `members` for IPv4, `members6` for IPv6; the config
  allows both) it goes on to the connection limit.
- every other packet to the Raft port is counted (`counter raft_refused`) and dropped.
- the connection limit (chain `raft_conns`; issue 15): a new connection from an address
  that already holds `conn_limit()` connections to the Raft port is dropped (`ct count`,
  per address in the dynamic sets `conns`/`conns6`), anything else accepted. It keeps one
  process on a member's host (or this one) from taking the agent's descriptors or its
  accept loop; the agent's transport caps the unauthenticated ones further (4 per
  address) and resets those it closes, which leave conntrack's count at once. Strangers
  never reach it: their packets are dropped first, and fill no set.

The member rules are stateless on purpose, not `ct state new ... drop`: dropping every
non-member packet is simpler and stronger. It does not depend on conntrack; a flow that a
removed member (or a stranger, before the guard was applied) had established is cut too,
not left to live on its conntrack entry; out-of-window and scan packets never reach the TCP
stack. Only the connection limit reads conntrack (`ct state new`, `ct count`): conntrack
counts a source's connections that are not closed (not TIME_WAIT or CLOSE). Replies to
this node's own connections to other members are untouched: their destination port is our
ephemeral port, not the Raft port. Drop, not reject: a stranger learns nothing, and the
balancing table's reasoning for reject (a client should fail over fast) does not apply.
The counter therefore counts packets (a SYN and its retransmissions), not connections.

The match is on the port alone, not on this node's address: pysyncobj binds one address,
but the guard then holds whatever Raft is bound to (a wildcard bind, a second address).

Addresses: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) goes into `members`, because a
dual-stack socket receives that peer's traffic as IPv4; an IPv6 scope (fe80::1%eth0) is
dropped, because nft matches addresses, not zones. A member whose traffic leaves its host
from another address than the configured one (multi-homed, NAT) is refused: pysyncobj
does not bind its outgoing connections to its own address.

The script replaces the table in one transaction (the idiom of render.py), so the kernel
holds the old guard or the new one, never none in between. The table's comment carries a
digest of the rules, so `ensure()` can tell a guard in force from a stale or missing one
(a firewall reload that runs `nft flush ruleset` wipes it).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from hacluster.dataplane.apply import Runner

TABLE = "hacluster_guard"
FAMILY = "inet"
COUNTER = "raft_refused"
CHAIN = "raft_input"
CONNS_CHAIN = "raft_conns"  # the connection limit, for what raft_input lets through
PRIORITY = "filter - 5"
COMMENT = "hacluster raft guard {}"

# The same pattern as config.MemberSpec.id: member ids go into quoted nft comments, so a
# quote or a newline must never reach the script.
_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DIGEST = re.compile(r'^\s*comment "' + COMMENT.format(r"([0-9a-f]{16})") + '"', re.M)

_COMMENT_MAX = 127

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class GuardError(RuntimeError):
    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


# ------------------------------------------------------------------------ render


def _address(text: str, where: str) -> Address:
    """The address nft must match for `text`: IPv4-mapped IPv6 as IPv4, without a scope."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{where}: must be an IP address, got {text!r}") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            return ipaddress.IPv6Address(addr.packed)
    return addr


def _members(members: Iterable[tuple[str, str]]) -> dict[Address, list[str]]:
    """Address -> sorted ids of the members there (several may share a host)."""
    by_address: dict[Address, list[str]] = {}
    for i, (member_id, address) in enumerate(members):
        if not isinstance(member_id, str) or not _MEMBER_ID.fullmatch(member_id):
            raise ValueError(f"members[{i}].id: must match {_MEMBER_ID.pattern}, got {member_id!r}")
        by_address.setdefault(_address(address, f"members[{i}] ({member_id}).address"), []).append(member_id)
    if not by_address:
        raise ValueError("members: empty; the guard would refuse Raft from every peer")
    return {a: sorted(ids) for a, ids in by_address.items()}


def _order(a: Address) -> tuple[int, int]:
    return a.version, int(a)


def _label(ids: list[str]) -> str:
    """The element's comment: nft keeps at most 128 bytes (many members on one host)."""
    text = ",".join(ids)
    return text if len(text) <= _COMMENT_MAX else text[:_COMMENT_MAX - 3] + "..."


def _set(name: str, kind: str, members: dict[Address, list[str]]) -> list[str]:
    items = [f'{a} comment "{_label(members[a])}"' for a in sorted(members, key=_order)]
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if items:
        lines.append("\t\telements = { " + ",\n\t\t             ".join(items) + " }")
    return [*lines, "\t}"]


def _conn_set(name: str, kind: str) -> list[str]:
    """A set the kernel fills: one element per source address with connections counted."""
    return [f"\tset {name} {{", f"\t\ttype {kind}", "\t\tsize 65535", "\t\tflags dynamic", "\t}"]


def render_guard(members: Sequence[tuple[str, str]], raft_port: int, self_address: str, *,
                 carry: tuple[int, int] | None = None) -> str:
    """The nft script that (re)creates the guard for `members` ((id, address) pairs, this
    node among them) on `raft_port` (see the module docstring). `carry` (packets, bytes)
    seeds the refused counter, so that re-applying does not reset it. Deterministic:
    addresses sorted (IPv4 before IPv6, numerically), ids sorted per address. Raises
    ValueError for input that would make a guard that is wrong or not a guard at all."""
    if isinstance(raft_port, bool) or not isinstance(raft_port, int) or not 1 <= raft_port <= 65535:
        raise ValueError(f"raft_port: must be 1-65535, got {raft_port!r}")
    by_address = _members(members)
    me = _address(self_address, "self_address")
    if me not in by_address:
        raise ValueError(f"self_address: {self_address} is not a member address "
                         f"({', '.join(str(a) for a in sorted(by_address, key=_order))}); wrong member list?")
    v4 = {a: ids for a, ids in by_address.items() if a.version == 4}
    v6 = {a: ids for a, ids in by_address.items() if a.version == 6}
    match = f"tcp dport {raft_port}"
    limit = conn_limit(members)
    body = [*_set("members", "ipv4_addr", v4), "", *_set("members6", "ipv6_addr", v6), "",
            *_conn_set("conns", "ipv4_addr"), "", *_conn_set("conns6", "ipv6_addr"), "",
            f"\tchain {CHAIN} {{",
            f"\t\ttype filter hook input priority {PRIORITY}; policy accept;",
            f"\t\t{match} iif lo jump {CONNS_CHAIN}",
            f"\t\t{match} ip saddr @members jump {CONNS_CHAIN}",
            f"\t\t{match} ip6 saddr @members6 jump {CONNS_CHAIN}",
            f'\t\t{match} counter name "{COUNTER}" drop',
            "\t}", "",
            f"\tchain {CONNS_CHAIN} {{",
            f"\t\tct state new add @conns {{ ip saddr ct count over {limit} }} counter drop",
            f"\t\tct state new add @conns6 {{ ip6 saddr ct count over {limit} }} counter drop",
            "\t\taccept",
            "\t}"]
    packets, nbytes = carry or (0, 0)
    ids = sorted(i for group in by_address.values() for i in group)
    return "\n".join([
        f"# raft guard: port {raft_port} from members {', '.join(ids)} (self {me})",
        f"table {FAMILY} {TABLE} {{}}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        f'\tcomment "{COMMENT.format(guard_digest(body))}"',
        f"\tcounter {COUNTER} {{ packets {packets} bytes {nbytes} }}",
        "", *body, "}"]) + "\n"


def conn_limit(members: Sequence[tuple[str, str]]) -> int:
    """Connections to the Raft port one address may hold: two for each member there (its
    link to us, and the next one while a broken link is re-established), plus 8 for the
    transport's unauthenticated ones (4 per address) and connections being closed."""
    return 8 + 2 * max(len(ids) for ids in _members(members).values())


def guard_digest(body: Sequence[str]) -> str:
    """16 hex digits of the rules and sets: equal digests, equal guards (counters aside)."""
    return hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]


def _digest_of(script: str) -> str:
    m = _DIGEST.search(script)
    if m is None:  # cannot happen: render_guard always writes the comment
        raise AssertionError("rendered guard without a digest comment")
    return m.group(1)


# ------------------------------------------------------------------------ apply


def _subprocess_runner(args: Sequence[str], stdin: str | None,
                       timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=timeout)


def _absent(proc: subprocess.CompletedProcess[str]) -> bool:
    """nft's answer for a missing table (not: a missing netns or nft binary)."""
    return proc.returncode == 1 and proc.stderr.lstrip().startswith("Error: No such file or directory")


class RaftGuard:
    """Programs `table inet hacluster_guard` with `nft`. `command_prefix` is put before
    every command (the lab: `("ip", "netns", "exec", NS)`); `run` replaces subprocess in
    tests."""

    def __init__(self, command_prefix: Sequence[str] | None = None, *, nft: str = "nft",
                 timeout_s: float = 10.0, run: Runner | None = None):
        self._prefix = list(command_prefix or ())
        self._nft = nft
        self._timeout = timeout_s
        self._run = run or _subprocess_runner

    def _nft_cmd(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [*self._prefix, self._nft, *args]
        try:
            return self._run(cmd, stdin, self._timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"`{' '.join(cmd)}` timed out after "
                                                               f"{self._timeout} s")
        except OSError as e:  # nft (or the prefix's tool) is missing
            return subprocess.CompletedProcess(cmd, 127, "", f"`{' '.join(cmd)}`: {e}")

    def check(self) -> tuple[bool, str]:
        """Whether nft is installed and may program a guard here (`nft -c`: the kernel
        checks a guard with IPv4 and IPv6 members, nothing is committed); why not."""
        for tool in (self._nft, *self._prefix[:1]):
            if shutil.which(tool) is None:
                return False, f"`{tool}` is not installed (Debian: apt install nftables)"
        probe = render_guard([("probe4", "192.0.2.1"), ("probe6", "2001:db8::1")], 9, "192.0.2.1")
        proc = self._nft_cmd("-c", "-f", "-", stdin=probe)
        if proc.returncode != 0:
            return False, f"nft cannot program the Raft guard here: {proc.stderr.strip()[:500]}"
        return True, "nftables ok"

    def available(self) -> bool:
        return self.check()[0]

    def apply(self, members: Sequence[tuple[str, str]], raft_port: int, self_address: str) -> None:
        """Replace the guard in one transaction; the refused counter keeps its value.
        ValueError for bad input (nothing is run), GuardError when nft refuses (the guard
        in force, if any, stays)."""
        render_guard(members, raft_port, self_address)  # bad input fails before nft is run
        try:
            carry = self._counter()
        except GuardError:
            carry = None
        script = render_guard(members, raft_port, self_address, carry=carry)
        proc = self._nft_cmd("-f", "-", stdin=script)
        if proc.returncode != 0:
            err = proc.stderr.strip()
            raise GuardError(f"nft refused the Raft guard (port {raft_port}): {err[:2000]}", err)

    def ensure(self, members: Sequence[tuple[str, str]], raft_port: int, self_address: str) -> bool:
        """Apply the guard unless the kernel already holds exactly this one; True when it
        had to (missing after a firewall reload, or other members). For a periodic check."""
        want = _digest_of(render_guard(members, raft_port, self_address))
        if self.applied_digest() == want:
            return False
        self.apply(members, raft_port, self_address)
        return True

    def applied_digest(self) -> str | None:
        """The digest in the kernel's guard table; None when the table is absent."""
        proc = self._nft_cmd("-t", "list", "table", FAMILY, TABLE)
        if proc.returncode != 0:
            if _absent(proc):
                return None
            raise GuardError(f"cannot read table {FAMILY} {TABLE}: {proc.stderr.strip()}", proc.stderr)
        m = _DIGEST.search(proc.stdout)
        return m.group(1) if m else None

    def remove(self) -> None:
        """Delete the guard; nothing to do if it is absent."""
        proc = self._nft_cmd("-f", "-", stdin=f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")
        if proc.returncode != 0:
            raise GuardError(f"cannot delete table {FAMILY} {TABLE}: {proc.stderr.strip()}", proc.stderr)

    def refused(self) -> int:
        """Packets to the Raft port dropped since the guard was first applied. GuardError
        when the guard is absent: a missing guard must not read as "nothing refused"."""
        return self._counter()[0]

    def _counter(self) -> tuple[int, int]:
        proc = self._nft_cmd("-j", "list", "counter", FAMILY, TABLE, COUNTER)
        if proc.returncode != 0:
            what = "the Raft guard is not in force" if _absent(proc) else "cannot read the refused counter"
            raise GuardError(f"{what}: {proc.stderr.strip()}", proc.stderr)
        try:
            for item in json.loads(proc.stdout)["nftables"]:
                c = item.get("counter") if isinstance(item, dict) else None
                if c and c.get("table") == TABLE and c.get("name") == COUNTER:
                    return int(c.get("packets", 0)), int(c.get("bytes", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise GuardError(f"unreadable `nft -j list counter` output: {e}") from None
        raise GuardError(f"`nft -j list counter` did not list {COUNTER}")
