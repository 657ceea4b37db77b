"""The Raft guard's renderer (pure) and RaftGuard's logic against a fake command runner.

tests/lab/test_raft_guard.py loads the same scripts into a real kernel and sends traffic.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence

import pytest

from hacluster.dataplane.guard import COUNTER, TABLE, GuardError, RaftGuard, conn_limit, render_guard

MEMBERS = [("n3", "10.0.0.13"), ("n1", "10.0.0.11"), ("n2", "10.0.0.12")]


def lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines()]


# ------------------------------------------------------------------------ render


def test_script_replaces_the_table_atomically_and_names_no_other():
    script = render_guard(MEMBERS, 7100, "10.0.0.11")
    assert script.splitlines()[1:4] == [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}",
                                        f"table inet {TABLE} {{"]
    assert script.endswith("}\n")
    tables = set(re.findall(r"^(?:delete )?table (\S+ \S+)", script, re.M))
    assert tables == {f"inet {TABLE}"}, "the guard must never touch the balancing table (or any other)"


def test_members_sorted_with_their_ids_and_a_header_comment():
    out = lines(render_guard(MEMBERS, 7100, "10.0.0.11"))
    assert out[0] == "# raft guard: port 7100 from members n1, n2, n3 (self 10.0.0.11)"
    assert 'elements = { 10.0.0.11 comment "n1",' in out
    i = out.index('elements = { 10.0.0.11 comment "n1",')
    assert out[i + 1:i + 3] == ['10.0.0.12 comment "n2",', '10.0.0.13 comment "n3" }']


def test_input_chain_lets_loopback_and_members_on_to_the_limit_then_counts_and_drops():
    out = lines(render_guard(MEMBERS, 7100, "10.0.0.11"))
    chain = out[out.index("chain raft_input {") + 1:]
    assert chain[:6] == ["type filter hook input priority filter - 5; policy accept;",
                         "tcp dport 7100 iif lo jump raft_conns",
                         "tcp dport 7100 ip saddr @members jump raft_conns",
                         "tcp dport 7100 ip6 saddr @members6 jump raft_conns",
                         f'tcp dport 7100 counter name "{COUNTER}" drop',
                         "}"]
    # Stateless on purpose: only the connection limit reads conntrack (the module docstring).
    assert not any(" ct " in f" {line} " for line in chain[:6])


def test_the_connection_limit_counts_per_source_what_the_input_chain_let_through():
    out = lines(render_guard(MEMBERS, 7100, "10.0.0.11"))
    limit = conn_limit(MEMBERS)
    assert limit == 10  # 2 for the one member at an address, 8 for strangers and closing ones
    chain = out[out.index("chain raft_conns {") + 1:]
    assert chain[:4] == [f"ct state new add @conns {{ ip saddr ct count over {limit} }} counter drop",
                         f"ct state new add @conns6 {{ ip6 saddr ct count over {limit} }} counter drop",
                         "accept", "}"]
    for name, kind in (("conns", "ipv4_addr"), ("conns6", "ipv6_addr")):
        i = out.index(f"set {name} {{")
        assert out[i + 1:i + 5] == [f"type {kind}", "size 65535", "flags dynamic", "}"]
    # several members on one address (a test host): room for each of them
    shared = lines(render_guard([("a", "10.0.0.1"), ("b", "10.0.0.1"), ("c", "10.0.0.2")], 7100,
                                "10.0.0.1"))
    assert "ct state new add @conns { ip saddr ct count over 12 } counter drop" in shared


def test_ipv6_members_go_to_their_own_set():
    script = render_guard([("a", "10.0.0.1"), ("b", "fd00::2"), ("c", "::ffff:10.0.0.3"),
                           ("d", "fe80::4%eth0")], 7100, "10.0.0.1")
    out = lines(script)
    v4 = out[out.index("set members {"):out.index("set members6 {")]
    v6 = out[out.index("set members6 {"):out.index("chain raft_input {")]
    assert "type ipv4_addr" in v4 and "type ipv6_addr" in v6
    # An IPv4-mapped address arrives as IPv4; the scope of a link-local one is dropped.
    assert any('10.0.0.3 comment "c"' in line for line in v4)
    assert any('fd00::2 comment "b"' in line for line in v6)
    assert any('fe80::4 comment "d"' in line for line in v6)
    assert "%" not in script


def test_an_empty_family_declares_an_empty_set():
    out = lines(render_guard(MEMBERS, 7100, "10.0.0.11"))
    assert out[out.index("set members6 {") + 1:out.index("set members6 {") + 3] == ["type ipv6_addr", "}"]


def test_members_sharing_an_address_make_one_element():
    out = lines(render_guard([("b", "10.0.0.1"), ("a", "10.0.0.1")], 7100, "10.0.0.1"))
    assert 'elements = { 10.0.0.1 comment "a,b" }' in out


def test_deterministic_whatever_the_input_order():
    a = render_guard(MEMBERS, 7100, "10.0.0.11")
    assert render_guard(list(reversed(MEMBERS)), 7100, "10.0.0.11") == a
    assert render_guard(MEMBERS, 7100, "10.0.0.12") != a  # the header names self


def test_counter_carried_and_digest_independent_of_it():
    fresh = render_guard(MEMBERS, 7100, "10.0.0.11")
    carried = render_guard(MEMBERS, 7100, "10.0.0.11", carry=(7, 420))
    assert f"counter {COUNTER} {{ packets 0 bytes 0 }}" in lines(fresh)
    assert f"counter {COUNTER} {{ packets 7 bytes 420 }}" in lines(carried)

    def comment(s: str) -> str:
        return next(line for line in lines(s) if line.startswith("comment "))

    assert comment(fresh) == comment(carried)
    assert comment(fresh) != comment(render_guard(MEMBERS, 7101, "10.0.0.11"))
    assert comment(fresh) != comment(render_guard(MEMBERS[:2], 7100, "10.0.0.11"))


@pytest.mark.parametrize(("members", "port", "me", "message"), [
    ([], 7100, "10.0.0.11", "members: empty"),
    (MEMBERS, 0, "10.0.0.11", "raft_port: must be 1-65535, got 0"),
    (MEMBERS, 65536, "10.0.0.11", "raft_port: must be 1-65535, got 65536"),
    (MEMBERS, True, "10.0.0.11", "raft_port: must be 1-65535, got True"),
    (MEMBERS, "7100", "10.0.0.11", "raft_port: must be 1-65535, got '7100'"),
    ([("n1", "10.0.0.11"), ("n2", "db2.ward")], 7100, "10.0.0.11",
     "members[1] (n2).address: must be an IP address, got 'db2.ward'"),
    ([("n1", "10.0.0.11"), ("n2", "10.0.0.12/24")], 7100, "10.0.0.11", "members[1] (n2).address"),
    (MEMBERS, 7100, "localhost", "self_address: must be an IP address, got 'localhost'"),
    (MEMBERS, 7100, "10.0.0.99", "self_address: 10.0.0.99 is not a member address (10.0.0.11, "
                                 "10.0.0.12, 10.0.0.13)"),
    ([("n1", "10.0.0.11"), ('x" accept #', "10.0.0.12")], 7100, "10.0.0.11", "members[1].id: must match"),
    ([("n1\n", "10.0.0.11")], 7100, "10.0.0.11", "members[0].id"),
])
def test_bad_input_is_refused_with_a_clear_message(members, port, me, message):
    with pytest.raises(ValueError) as e:
        render_guard(members, port, me)
    assert message in str(e.value)


# ------------------------------------------------------------------- RaftGuard


class FakeNft:
    """Answers nft commands from a script of (returncode, stdout, stderr) per verb."""

    def __init__(self, **answers: tuple[int, str, str]):
        self.answers = answers
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, args: Sequence[str], stdin: str | None, timeout: float):
        args = list(args)
        self.calls.append((args, stdin))
        verb = "counter" if "counter" in args else "list" if "list" in args else "load"
        rc, out, err = self.answers.get(verb, (0, "", ""))
        return subprocess.CompletedProcess(args, rc, out, err)


ABSENT = (1, "", "Error: No such file or directory; did you mean table 'hacluster' in family inet?\n")


def counter_json(packets: int, nbytes: int) -> str:
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {
        "family": "inet", "name": COUNTER, "table": TABLE, "handle": 2, "packets": packets,
        "bytes": nbytes}}]})


def test_apply_is_one_transaction_carrying_the_counter():
    nft = FakeNft(counter=(0, counter_json(5, 300), ""))
    RaftGuard(("ip", "netns", "exec", "x"), run=nft).apply(MEMBERS, 7100, "10.0.0.11")
    loads = [(a, s) for a, s in nft.calls if a[-2:] == ["-f", "-"]]
    assert len(loads) == 1
    args, script = loads[0]
    assert args == ["ip", "netns", "exec", "x", "nft", "-f", "-"]
    assert script == render_guard(MEMBERS, 7100, "10.0.0.11", carry=(5, 300))


def test_apply_without_a_guard_in_force_starts_the_counter_at_zero():
    nft = FakeNft(counter=ABSENT)
    RaftGuard(run=nft).apply(MEMBERS, 7100, "10.0.0.11")
    assert nft.calls[-1][1] == render_guard(MEMBERS, 7100, "10.0.0.11")


def test_apply_refused_by_nft_raises_with_its_stderr():
    nft = FakeNft(counter=ABSENT, load=(1, "", "Error: Could not process rule: Operation not permitted\n"))
    with pytest.raises(GuardError) as e:
        RaftGuard(run=nft).apply(MEMBERS, 7100, "10.0.0.11")
    assert "Operation not permitted" in str(e.value) and "Operation not permitted" in e.value.stderr


def test_apply_with_bad_input_runs_nothing():
    nft = FakeNft()
    with pytest.raises(ValueError):
        RaftGuard(run=nft).apply([], 7100, "10.0.0.11")
    assert nft.calls == []


def test_missing_nft_is_a_guard_error_not_a_crash():
    def missing(args, stdin, timeout):
        raise FileNotFoundError(2, "No such file or directory", args[0])

    with pytest.raises(GuardError, match="nft"):
        RaftGuard(run=missing).apply(MEMBERS, 7100, "10.0.0.11")
    assert RaftGuard(nft="/nonexistent/nft", run=missing).check() == (
        False, "`/nonexistent/nft` is not installed (Debian: apt install nftables)")
    assert not RaftGuard(nft="/nonexistent/nft", run=missing).available()


def test_remove_uses_the_idiom_that_tolerates_an_absent_table():
    nft = FakeNft()
    RaftGuard(run=nft).remove()
    (args, script), = nft.calls
    assert args == ["nft", "-f", "-"]
    assert script == f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"


def test_refused_reads_the_counter_and_an_absent_guard_is_an_error():
    assert RaftGuard(run=FakeNft(counter=(0, counter_json(12, 720), ""))).refused() == 12
    with pytest.raises(GuardError, match="not in force"):
        RaftGuard(run=FakeNft(counter=ABSENT)).refused()
    with pytest.raises(GuardError, match="unreadable"):
        RaftGuard(run=FakeNft(counter=(0, "not json", ""))).refused()


def test_ensure_applies_only_when_the_kernel_holds_another_guard():
    script = render_guard(MEMBERS, 7100, "10.0.0.11")
    listing = next(line for line in script.splitlines() if line.strip().startswith("comment "))
    same = FakeNft(list=(0, f"table inet {TABLE} {{\n{listing}\n}}\n", ""))
    assert RaftGuard(run=same).ensure(MEMBERS, 7100, "10.0.0.11") is False
    assert not any(a[-2:] == ["-f", "-"] for a, _ in same.calls)
    gone = FakeNft(list=ABSENT, counter=ABSENT)
    assert RaftGuard(run=gone).ensure(MEMBERS, 7100, "10.0.0.11") is True
    assert gone.calls[-1][1] == script
