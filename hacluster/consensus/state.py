"""The replicated state machine: pure, deterministic, no I/O, no clock.

Every command is a JSON object `{"v": 1, "type": "...", ...}` encoded to bytes. pysyncobj
replicates exactly one method, `apply(payload)`, so adding command types never renumbers
pysyncobj's method ids (which come from sorted method names) and rolling upgrades keep
working. Unknown types are refused loudly unless the command says `"ignorable": true`.

Invariant I3: terms and generations only go forward. A leader_epoch with a term lower than
the recorded one, or a compare-and-set on a stale generation, is refused and changes nothing.

Suspect by election (DESIGN.md §6): a leader_epoch marked `by_election` (its leader won
because the previous one went silent, not by a graceful transfer) takes the previous epoch's
owner, the VIP holder that fell silent, out of service in the same entry: its committed
health verdicts turn down, it is recorded in `suspects`, and the balancing table moves on
one generation with its backends DOWN. The first table the new holder applies, before it
claims the VIPs, therefore sends no new flow to a server that is most likely dead; the
leader's verdicts (ha/verdicts.py) clear the suspicion once gossip has seen it alive again.
Decided here, at apply time, from the recorded epoch owner: a proposer whose own state
lagged cannot name the wrong server.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hacluster.model import maintenance_on

COMMAND_VERSION = 1
MAX_PAYLOAD = 64 * 1024
MAX_HEALTH_KEYS = 1024
MAX_REJOINED = 64
_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # config_spec.MemberSpec.id


class CommandError(ValueError):
    """A command that cannot be decoded or applied; the state is unchanged."""


def encode(command: dict[str, Any]) -> bytes:
    """Encode a command for the Raft log (compact, sorted keys: byte-identical everywhere)."""
    doc = {"v": COMMAND_VERSION, **command}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(payload: bytes) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray):
        raise CommandError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandError(f"payload is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise CommandError("command must be an object with a string 'type'")
    if doc.get("v") != COMMAND_VERSION:
        raise CommandError(f"unsupported command version {doc.get('v')!r} (this node speaks "
                           f"{COMMAND_VERSION})")
    return doc


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str
    generation: int


@dataclass
class ReplicatedState:
    """What the cluster agrees on. Plain data only: pysyncobj pickles it into its dump file."""

    epoch_term: int = 0  # highest term whose leader registered itself
    epoch_node: str = ""
    epochs: int = 0  # number of leader_epoch entries accepted, ever
    generation: int = 0  # bumped by every accepted state change
    flags: dict[str, str] = field(default_factory=dict)  # admin flags (maintenance, drain...)
    refused: int = 0  # commands refused by apply(), for the status view
    # "node/check" -> healthy, as the leader committed it from the gossiped view (§5).
    health: dict[str, bool] = field(default_factory=dict)
    # The balancing table (dataplane.table.table_to_doc form) and its generation (§6).
    table: dict[str, Any] | None = None
    table_generation: int = 0
    # Members suspected by election -> the term whose epoch suspected them: their backends
    # are DOWN in every table until a health command lists them as rejoined.
    suspects: dict[str, int] = field(default_factory=dict)
    # The committed membership (issue 16): id -> {address, raft_port, grpc_port, voter}.
    # Empty until the first leader seeds it from its config file (members_seed); from then on
    # only member_set / member_del change it. members_generation counts those changes.
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    members_generation: int = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A dump written by an older version lacks the newer fields: give them defaults
        # instead of failing on the first access after an upgrade.
        fresh = ReplicatedState()
        self.__dict__.update({**fresh.__dict__, **state})

    def snapshot(self) -> dict[str, Any]:
        return {"epoch_term": self.epoch_term, "epoch_node": self.epoch_node,
                "epochs": self.epochs, "generation": self.generation,
                "flags": dict(self.flags), "refused": self.refused, "health": dict(self.health),
                "table_generation": self.table_generation, "suspects": dict(self.suspects),
                "members": {k: dict(v) for k, v in self.members.items()},
                "members_generation": self.members_generation}

    def apply(self, payload: bytes) -> Result:
        try:
            cmd = decode(payload)
            handler = _HANDLERS.get(cmd["type"])
            if handler is None:
                if cmd.get("ignorable") is True:
                    return Result(True, f"ignored unknown ignorable command {cmd['type']!r}",
                                  self.generation)
                raise CommandError(f"unknown command type {cmd['type']!r}")
            return handler(self, cmd)
        except CommandError as e:
            self.refused += 1
            return Result(False, str(e), self.generation)

    # -- handlers: validate everything first, then mutate (a refusal changes nothing) --

    def _leader_epoch(self, cmd: dict[str, Any]) -> Result:
        term, node = _int(cmd, "term"), _str(cmd, "node")
        by_election = cmd.get("by_election", False)
        if not isinstance(by_election, bool):
            raise CommandError(f"leader_epoch.by_election must be true or false, got {by_election!r}")
        if term < self.epoch_term:
            raise CommandError(f"leader_epoch term {term} is older than recorded term "
                               f"{self.epoch_term}")
        if term == self.epoch_term and node == self.epoch_node:
            return Result(True, "epoch already recorded", self.generation)  # idempotent retry
        if term == self.epoch_term:
            raise CommandError(f"term {term} already belongs to {self.epoch_node!r}")
        previous = self.epoch_node
        self.epoch_term, self.epoch_node = term, node
        self.epochs += 1
        self.generation += 1
        detail = f"epoch {term} for {node}"
        self.suspects.pop(node, None)  # it just won an election: it is alive
        if by_election and previous and previous != node:
            detail += "; " + self._suspect(previous, term)
        return Result(True, detail, self.generation)

    def _suspect(self, node: str, term: int) -> str:
        """Take `node`, the previous epoch's silent owner, out of service (see the module
        docstring). Its verdicts go down, not away: the leader's verdicts put them back."""
        self.suspects[node] = term
        downs = sorted(k for k, v in self.health.items() if k.startswith(node + "/") and v)
        for key in downs:
            self.health[key] = False
        words = f"{node} suspect by election"
        if downs:
            words += ": " + ", ".join(f"{k}=down" for k in downs)
        if self.table is not None and not maintenance_on(self.flags):
            table = suspects_down(self.table, self.suspects)
            if table != self.table:
                self.table_generation += 1
                self.table = {**table, "generation": self.table_generation}
                words += f"; table generation {self.table_generation}"
        return words

    def _set_flag(self, cmd: dict[str, Any]) -> Result:
        name, value, expect = _str(cmd, "name"), cmd.get("value"), _int(cmd, "expect_generation")
        if value is not None and not isinstance(value, str):
            raise CommandError("'value' must be a string or null")
        if expect != self.generation:
            raise CommandError(f"stale generation {expect}, current is {self.generation}")
        if value is None:
            self.flags.pop(name, None)
        else:
            self.flags[name] = value
        self.generation += 1
        return Result(True, f"flag {name}={value}", self.generation)


    def _health(self, cmd: dict[str, Any]) -> Result:
        """Backend health verdicts from the leader of `term`; only real changes count.

        The term must be the recorded epoch: a deposed leader's queued command, forwarded
        by pysyncobj to the new leader, is refused whether it lands before or after the new
        leader's epoch (the leader only proposes once its own epoch is applied). A null
        value forgets the key (a check or member that no longer exists).
        """
        term, changes, rejoined = _int(cmd, "term"), cmd.get("changes"), cmd.get("rejoined", [])
        if term != self.epoch_term:
            raise CommandError(f"health from term {term}, but term {self.epoch_term} is current")
        if not isinstance(rejoined, list) or len(rejoined) > MAX_REJOINED \
                or not all(isinstance(n, str) and 0 < len(n) <= 256 for n in rejoined):
            raise CommandError(f"health.rejoined must be a list of at most {MAX_REJOINED} member "
                               f"names")
        if not isinstance(changes, dict) or not (changes or rejoined) \
                or len(changes) > MAX_HEALTH_KEYS:
            raise CommandError(f"health.changes must be an object of at most {MAX_HEALTH_KEYS} "
                               f"entries, non-empty unless members rejoined")
        for key, healthy in changes.items():
            node, sep, check = key.partition("/")
            if not sep or not node or not check or len(key) > 256:
                raise CommandError(f"health key must be 'node/check', got {key!r}")
            if healthy is not None and not isinstance(healthy, bool):
                raise CommandError(f"health[{key!r}] must be true, false or null, got {healthy!r}")
        real = {k: v for k, v in changes.items()
                if (k in self.health if v is None else self.health.get(k) is not v)}
        back = sorted(n for n in set(rejoined) if n in self.suspects)
        if not real and not back:
            return Result(True, "health unchanged", self.generation)
        for k, v in real.items():
            if v is None:
                del self.health[k]
            else:
                self.health[k] = v
        for n in back:
            del self.suspects[n]
        self.generation += 1
        words = {True: "up", False: "down", None: "forgotten"}
        parts = [f"{k}={words[v]}" for k, v in sorted(real.items())]
        parts += [f"{n} rejoined (no longer suspect by election)" for n in back]
        return Result(True, "health " + ", ".join(parts), self.generation)


    def _table(self, cmd: dict[str, Any]) -> Result:
        """A new balancing table from the leader of `term`, compare-and-set on its generation.

        The table must carry generation expect_generation + 1. A retry of the command that
        already went in (same table at the current generation) is accepted as a no-op, so
        a leader that lost the answer can simply send it again.
        """
        term, expect, table = _int(cmd, "term"), _int(cmd, "expect_generation"), cmd.get("table")
        if term != self.epoch_term:
            raise CommandError(f"table from term {term}, but term {self.epoch_term} is current")
        if not isinstance(table, dict) or not isinstance(table.get("services"), list):
            raise CommandError("table.table must be an object with a 'services' list")
        if table.get("generation") != expect + 1:
            raise CommandError(f"table generation {table.get('generation')!r} must be "
                               f"expect_generation + 1 ({expect + 1})")
        if expect + 1 == self.table_generation and table == self.table:
            return Result(True, "table already committed", self.generation)
        if expect != self.table_generation:
            raise CommandError(f"stale table generation {expect}, current is {self.table_generation}")
        self.table, self.table_generation = table, expect + 1
        self.generation += 1
        return Result(True, f"table generation {self.table_generation}", self.generation)


    def _members_seed(self, cmd: dict[str, Any]) -> Result:
        """The config file's members, once: only while no membership was ever committed."""
        members = cmd.get("members")
        if self.members_generation:
            return Result(True, "membership already seeded", self.generation)
        if not isinstance(members, dict) or not members or len(members) > MAX_MEMBERS:
            raise CommandError(f"members_seed.members must be an object of 1-{MAX_MEMBERS} members")
        checked = {node: member_record(node, m) for node, m in members.items()}
        no_clash(checked)
        self.members = checked
        self.members_generation += 1
        self.generation += 1
        return Result(True, f"membership seeded: {', '.join(sorted(checked))}", self.generation)

    def _member_set(self, cmd: dict[str, Any]) -> Result:
        """Add a member or change one (its voter flag), compare-and-set on members_generation."""
        node, expect = _str(cmd, "node"), _int(cmd, "expect_members_generation")
        if expect != self.members_generation:
            raise CommandError(f"stale membership generation {expect}, current is "
                               f"{self.members_generation}")
        record = member_record(node, cmd.get("member"))
        if node not in self.members and len(self.members) >= MAX_MEMBERS:
            raise CommandError(f"a cluster has at most {MAX_MEMBERS} members")
        no_clash({**self.members, node: record})
        old = self.members.get(node)
        self.members = {**self.members, node: record}
        self.members_generation += 1
        self.generation += 1
        what = "added" if old is None else ("changed" if old != record else "unchanged")
        kind = "voter" if record["voter"] else "non-voter"
        return Result(True, f"member {node} {what} ({kind}, {record['address']})", self.generation)

    def _member_del(self, cmd: dict[str, Any]) -> Result:
        node, expect = _str(cmd, "node"), _int(cmd, "expect_members_generation")
        if expect != self.members_generation:
            raise CommandError(f"stale membership generation {expect}, current is "
                               f"{self.members_generation}")
        if node not in self.members:
            raise CommandError(f"{node!r} is not a member")
        if sum(1 for n, m in self.members.items() if m["voter"] and n != node) == 0:
            raise CommandError(f"{node} is the last voter")
        self.members = {n: m for n, m in self.members.items() if n != node}
        # its verdicts and suspicion go with it
        self.health = {k: v for k, v in self.health.items() if not k.startswith(node + "/")}
        self.suspects.pop(node, None)
        self.members_generation += 1
        self.generation += 1
        return Result(True, f"member {node} removed", self.generation)


MAX_MEMBERS = 256


def member_record(node: str, m: Any) -> dict[str, Any]:
    """One member's committed record, checked: {address, raft_port, grpc_port, voter}."""
    if not isinstance(node, str) or not _MEMBER_ID.fullmatch(node):
        raise CommandError(f"member id {node!r} must be 1-63 of A-Z a-z 0-9 _ . - (not first)")
    if not isinstance(m, dict):
        raise CommandError(f"member {node}: must be an object")
    address, voter = m.get("address"), m.get("voter", True)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise CommandError(f"member {node}: address must be an IP address, got {address!r}") from None
    ports = []
    for key in ("raft_port", "grpc_port"):
        v = m.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
            raise CommandError(f"member {node}: {key} must be 1-65535, got {v!r}")
        ports.append(v)
    if ports[0] == ports[1]:
        raise CommandError(f"member {node}: raft_port and grpc_port must differ")
    if not isinstance(voter, bool):
        raise CommandError(f"member {node}: voter must be true or false")
    return {"address": address, "raft_port": ports[0], "grpc_port": ports[1], "voter": voter}


def no_clash(members: Mapping[str, Mapping[str, Any]]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for node, m in sorted(members.items()):
        for key in ("raft_port", "grpc_port"):
            endpoint = (str(ipaddress.ip_address(m["address"])), m[key])
            if endpoint in seen and seen[endpoint] != node:
                raise CommandError(f"{endpoint[0]}:{endpoint[1]} is already used by member "
                                   f"{seen[endpoint]}")
            seen[endpoint] = node
    if not any(m["voter"] for m in members.values()):
        raise CommandError("a cluster needs at least one voter")


def suspects_down(table: dict[str, Any], suspects: Mapping[str, Any]) -> dict[str, Any]:
    """The table document (dataplane.table.table_to_doc form) with every ACTIVE backend of a
    suspected member DOWN, in every service, whether or not it has a health check. A member's
    backends carry its id; an external host's id is "address:port", never a member's name.
    One rule for both places that need it: the state machine at the epoch, the leader when
    it builds a table (ha/leader.py)."""
    if not suspects:
        return table

    def one(b: Any) -> Any:
        if isinstance(b, dict) and b.get("id") in suspects and b.get("state") == "active":
            return {**b, "state": "down"}
        return b

    return {**table, "services": [
        {**s, "backends": [one(b) for b in s["backends"]]}
        if isinstance(s, dict) and isinstance(s.get("backends"), list) else s
        for s in table["services"]]}


def _int(cmd: dict[str, Any], key: str) -> int:
    v = cmd.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise CommandError(f"{cmd['type']}.{key} must be a non-negative integer, got {v!r}")
    return v


def _str(cmd: dict[str, Any], key: str) -> str:
    v = cmd.get(key)
    if not isinstance(v, str) or not v or len(v) > 256:
        raise CommandError(f"{cmd['type']}.{key} must be a non-empty string, got {v!r}")
    return v


_HANDLERS: dict[str, Callable[[ReplicatedState, dict[str, Any]], Result]] = {
    "leader_epoch": ReplicatedState._leader_epoch,
    "set_flag": ReplicatedState._set_flag,
    "health": ReplicatedState._health,
    "table": ReplicatedState._table,
    "members_seed": ReplicatedState._members_seed,
    "member_set": ReplicatedState._member_set,
    "member_del": ReplicatedState._member_del,
}
