"""Program the balancing table into the kernel with `nft` (DESIGN.md §6).

One `nft -f -` per generation: render.py's script replaces `table inet hacluster` in a
single transaction, so the kernel holds either the previous generation or the new one,
never a mix, and a rejected script leaves the previous generation in force.

`NftApplier(netns="x")` runs every command as `ip netns exec x ...` (lab and tests). The
command runner is injectable (`run=`), so the agent's tests can use a fake instead of
patching subprocess.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence

from hacluster.dataplane.render import FAMILY, GENERATION_COMMENT, TABLE, counter_name, render
from hacluster.dataplane.table import Algorithm, Backend, BackendState, Protocol, Service, Table

Runner = Callable[[Sequence[str], str | None, float], subprocess.CompletedProcess[str]]

_GENERATION = re.compile(r'^\s*comment "' + GENERATION_COMMENT.format(r"(\d+)") + '"', re.M)


def _absent(proc: subprocess.CompletedProcess[str]) -> bool:
    """nft's answer for a table that does not exist (not: a missing netns or nft binary)."""
    return proc.returncode == 1 and proc.stderr.lstrip().startswith("Error: No such file or directory")


# What available() asks the kernel to check, in check mode (nothing is committed): a table
# that uses every feature render() emits (nat, numgen, jhash, maps, named counters, reject,
# tcp and udp), so a kernel without nf_nat or nft_numgen shows at start-up, and the agent
# can fall back to the userspace proxy instead of failing on its first apply.
def _probe_table() -> Table:
    def backends(n: int) -> tuple[Backend, ...]:
        return tuple(Backend(f"p{i}", f"192.0.2.{i}", 0, i) for i in range(1, n + 1))
    down = (Backend("p9", "192.0.2.9", 0, 1, BackendState.DOWN),)
    sorry = Backend("sorry", "192.0.2.60", 8080, 1)
    return Table(0, tuple(
        Service(f"probe{i}", "192.0.2.100", proto, (10 + i, 20 + i), port, algo, bs, fb)
        for i, (proto, port, algo, bs, fb) in enumerate([
            (Protocol.TCP, None, Algorithm.ROUND_ROBIN, backends(2), None),
            (Protocol.UDP, 8080, Algorithm.WEIGHTED, backends(3), None),
            (Protocol.TCP, None, Algorithm.SOURCE_HASH, backends(2), None),
            (Protocol.UDP, None, Algorithm.MAGLEV, backends(3), None),
            (Protocol.TCP, 8080, Algorithm.ROUND_ROBIN, down, sorry),
            (Protocol.TCP, None, Algorithm.ROUND_ROBIN, down, None),
            (Protocol.UDP, None, Algorithm.ROUND_ROBIN, down, None)])))


# conntrack states whose entries carry no flow (NftApplier.forget_stale)
STALE_TCP_STATES = ("TIME_WAIT", "CLOSE", "SYN_SENT")


def _dnat_to(address: str, port: int | None, protocol: Protocol) -> list[str]:
    """`conntrack -D` of the flows this node DNATed to address[:port] (--dst-nat spares its
    own connections to that address: gossip, Raft, health checks)."""
    args = ["-D", "-p", protocol.value, "--dst-nat", "--reply-src", address]
    return args + ["--reply-port-src", str(port)] if port else args


def _conntrack_ok(returncode: int, text: str) -> bool:
    """`conntrack -D` succeeded; it exits 1 when nothing matched ("0 flow entries have been
    deleted"), which is no failure for us."""
    return returncode == 0 or " 0 flow entries" in f" {text}"


class DataplaneError(RuntimeError):
    def __init__(self, message: str, generation: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.generation = generation
        self.stderr = stderr


def _subprocess_runner(args: Sequence[str], stdin: str | None,
                       timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=timeout)


class NftApplier:
    """Applies tables to `table inet hacluster` in this network namespace (or `netns`)."""

    def __init__(self, netns: str | None = None, *, nft: str = "nft", conntrack: str = "conntrack",
                 timeout_s: float = 10.0, run: Runner | None = None):
        self.netns = netns
        self._nft = nft
        self._conntrack = conntrack
        self._timeout = timeout_s
        self._run = run or _subprocess_runner
        self._last: int | None = None
        self._table: Table | None = None

    # ------------------------------------------------------------------ plumbing

    def _exec(self, tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd = [*prefix, tool, *args]
        try:
            return self._run(cmd, stdin, self._timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"`{' '.join(cmd)}` timed out after "
                                                               f"{self._timeout} s")
        except OSError as e:  # the tool (or `ip`) is missing
            return subprocess.CompletedProcess(cmd, 127, "", f"`{' '.join(cmd)}`: {e}")

    def _nft_cmd(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self._exec(self._nft, *args, stdin=stdin)

    # ------------------------------------------------------------------ the API

    @property
    def last_applied(self) -> int | None:
        """The generation this applier last applied successfully (in memory)."""
        return self._last

    def available(self) -> tuple[bool, str]:
        """Whether nft is installed and the kernel here accepts what render() emits
        (checked with `nft -c`, which commits nothing); the reason when not."""
        for tool in (self._nft, *(("ip",) if self.netns else ())):
            if shutil.which(tool) is None:
                return False, f"`{tool}` is not installed (Debian: apt install nftables iproute2)"
        proc = self._nft_cmd("-c", "-f", "-", stdin=render(_probe_table()))
        if proc.returncode != 0:
            return False, f"nft cannot program NAT tables here: {proc.stderr.strip()[:500]}"
        return True, "nftables ok"

    def apply(self, table: Table) -> None:
        """Replace our table by `table`'s generation in one transaction. Counters of
        backends that exist before and after carry their values over (a packet counted
        between reading and committing them is lost: a few at most per generation)."""
        try:
            carry = self.counters()
        except DataplaneError:
            carry = {}
        script = render(table, carry)
        proc = self._nft_cmd("-f", "-", stdin=script)
        if proc.returncode != 0:
            err = proc.stderr.strip()
            raise DataplaneError(f"nft refused generation {table.generation} (kept generation "
                                 f"{self._last}): {err[:2000]}", table.generation, err)
        self._last = table.generation
        self._table = table

    def applied_generation(self) -> int | None:
        """The generation in the kernel, from our table's comment; None when our table is
        absent (or carries no generation: not written by render()). Reading the kernel,
        not memory, lets the reconcile loop see a table that someone deleted or that a
        `nft flush ruleset` (a firewall reload) wiped."""
        proc = self._nft_cmd("-t", "list", "table", FAMILY, TABLE)  # -t: without map elements
        if proc.returncode != 0:
            if _absent(proc):
                return None
            raise DataplaneError(f"cannot read table {FAMILY} {TABLE}: {proc.stderr.strip()}")
        m = _GENERATION.search(proc.stdout)
        return int(m.group(1)) if m else None

    def counters(self) -> dict[str, tuple[int, int]]:
        """Counter name -> (packets, bytes) for every counter of our table (backend,
        fallback and drop counters; names from render.counter_name & co.). Empty when the
        table is absent."""
        proc = self._nft_cmd("-j", "list", "counters", "table", FAMILY, TABLE)
        if proc.returncode != 0:
            if _absent(proc):
                return {}
            raise DataplaneError(f"cannot list counters: {proc.stderr.strip()}")
        try:
            items = json.loads(proc.stdout)["nftables"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataplaneError(f"unreadable `nft -j list counters` output: {e}") from None
        out: dict[str, tuple[int, int]] = {}
        for item in items:
            c = item.get("counter") if isinstance(item, dict) else None
            if c and c.get("table") == TABLE and c.get("family") == FAMILY:
                out[c["name"]] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
        return out

    def backend_counters(self) -> dict[str, tuple[int, int]]:
        """'<service>/<backend id>' -> (packets, bytes) for the last table applied here."""
        if self._table is None:
            return {}
        raw = self.counters()
        out = {}
        for svc in self._table.services:
            for b in svc.backends + ((svc.fallback,) if svc.fallback else ()):
                name = counter_name(svc.name, b.id)
                if name in raw:
                    out[f"{svc.name}/{b.id}"] = raw[name]
        return out

    def remove(self) -> None:
        """Delete our table (nothing to do if it is absent), then forget the flows it
        balanced here with SNAT: their conntrack entries (DNATed, to a VIP of the last table
        applied). This node no longer holds those VIPs; if its kernel tracks on (a host
        firewall keeps conntrack on), an entry left behind would clash on its reply tuple
        (`me:port -> VIP:x`) with this node's own backend's flow once the next holder
        carries it (`VIP:x -> me:port`), and those flows would stall (docs/snat.md).
        DataplaneError if either step fails; the table is gone by the second."""
        proc = self._nft_cmd("-f", "-", stdin=f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")
        if proc.returncode != 0:
            raise DataplaneError(f"cannot delete table {FAMILY} {TABLE}: {proc.stderr.strip()}")
        self._last = None
        table, self._table = self._table, None
        vips = sorted({s.vip for s in table.services if s.snat_to is not None}) if table else []
        failed = [why for ok, why in map(self._forget_flows, vips) if not ok]
        if failed:
            raise DataplaneError("; ".join(failed))

    def _forget_flows(self, vip: str) -> tuple[bool, str]:
        if shutil.which(self._conntrack) is None:
            return False, (f"`{self._conntrack}` is not installed (Debian: apt install conntrack): the "
                           f"flows balanced to {vip} stay tracked here")
        proc = self._exec(self._conntrack, "-D", "--dst-nat", "-d", vip)
        text = (proc.stderr + proc.stdout).strip()
        if _conntrack_ok(proc.returncode, text):
            return True, text
        return False, f"conntrack -D -d {vip} failed ({proc.returncode}): {text}"

    def forget_stale(self, address: str, port: int | None, protocol: Protocol | str) -> tuple[bool, str]:
        """Delete the entries of TCP flows DNATed to address[:port] that carry nothing any
        more: closed (TIME_WAIT, CLOSE) and never answered (SYN_SENT). Called when that
        backend leaves the table or goes down. A closed entry (some came from the previous
        holder through conntrackd) would take a new connection from a reused source port to
        the old backend (the kernel reopens only the entries it saw close itself), and an
        unanswered one would take the client's SYN retransmissions there: both are
        balanced afresh once the entry is gone. Established flows are left alone."""
        if Protocol(protocol) is not Protocol.TCP:
            return True, "not TCP"
        if shutil.which(self._conntrack) is None:
            return False, f"`{self._conntrack}` is not installed (Debian: apt install conntrack)"
        base = _dnat_to(address, port, Protocol.TCP)
        failed = []
        for state in STALE_TCP_STATES:
            proc = self._exec(self._conntrack, *base, "--state", state)
            text = (proc.stderr + proc.stdout).strip()
            if not _conntrack_ok(proc.returncode, text):
                failed.append(f"{state}: {text or proc.returncode}")
        return (False, "conntrack failed: " + "; ".join(failed)) if failed else (True, "forgotten")

    def flush_backend(self, address: str, port: int | None, protocol: Protocol | str) -> tuple[bool, str]:
        """Cut the established flows DNATed to a backend (after its drain timeout):
        `conntrack -D --dst-nat` of the entries whose reply comes from address[:port].
        --dst-nat spares this node's own connections to that address (gossip, Raft,
        health checks). Without conntrack-tools the flows run on until they end or time
        out: (False, reason)."""
        if shutil.which(self._conntrack) is None:
            return False, (f"`{self._conntrack}` is not installed (Debian: apt install conntrack); "
                           f"established flows to {address} end on their own")
        proc = self._exec(self._conntrack, *_dnat_to(address, port, Protocol(protocol)))
        text = (proc.stderr + proc.stdout).strip()
        if _conntrack_ok(proc.returncode, text):
            return True, text or "flushed"
        return False, f"conntrack failed ({proc.returncode}): {text}"
