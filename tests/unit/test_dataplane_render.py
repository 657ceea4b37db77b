"""The nftables renderer (pure) and NftApplier's logic against a fake command runner.

Golden files live in tests/unit/golden/dataplane_*.nft; after an intended change,
regenerate them with `UPDATE_GOLDEN=1 pytest tests/unit/test_dataplane_render.py` and read
the diff. tests/lab/test_dataplane_nft.py checks every golden file with the kernel
(`nft -c`) and runs real traffic through rendered tables.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from hacluster.dataplane.algorithms import FLOW_HASH_SEED, MAX_SLOTS, maglev_size, slot_weights, smooth_order
from hacluster.dataplane.apply import DataplaneError, NftApplier
from hacluster.dataplane.render import counter_name, drop_counter_name, fallback_counter_name, render
from hacluster.dataplane.table import Algorithm, Backend, BackendState, Protocol, Service, Table

GOLDEN = Path(__file__).parent / "golden"
A, D, X = BackendState.ACTIVE, BackendState.DOWN, BackendState.DRAINING


def be(i: int, weight: int = 1, state: BackendState = A, port: int = 0) -> Backend:
    return Backend(f"n{i}", f"10.0.0.{i}", port, weight, state)


def svc(name: str = "web", algorithm: Algorithm = Algorithm.ROUND_ROBIN,
        backends: Sequence[Backend] = (be(1), be(2), be(3)), *, vip: str = "10.0.0.100",
        protocol: Protocol = Protocol.TCP, ports: Sequence[int] = (80,), backend_port: int | None = None,
        fallback: Backend | None = None, snat: bool = True, snat_address: str | None = None) -> Service:
    return Service(name, vip, protocol, tuple(ports), backend_port, algorithm, tuple(backends),
                   fallback, snat, snat_address=snat_address)


SORRY = Backend("10.0.0.60:8080", "10.0.0.60", 8080, 1)

CASES: dict[str, Table] = {
    "rr3": Table(3, (svc(),)),
    "weighted_123": Table(4, (svc(algorithm=Algorithm.WEIGHTED, backends=(be(1, 1), be(2, 2), be(3, 3))),)),
    "source_hash": Table(5, (svc("ris", Algorithm.SOURCE_HASH, (be(1, 1), be(2, 2), be(3, 1, X)),
                                 ports=(443,)),)),
    "maglev": Table(6, (svc("pacs", Algorithm.MAGLEV, (be(1, 1), be(2, 1), be(3, 2)), ports=(104,)),)),
    "udp_multiport": Table(7, (svc("dns", Algorithm.ROUND_ROBIN,
                                   (be(1, port=5300), be(2, port=5300), be(3, state=D, port=5300)),
                                   protocol=Protocol.UDP, ports=(5353, 53), backend_port=5300),)),
    "no_serving_fallback": Table(8, (svc("web", backends=(be(1, state=D), be(2, state=X)),
                                         ports=(80, 443), backend_port=8080,
                                         fallback=SORRY),)),
    "no_serving_reject": Table(9, (svc("web", backends=(be(1, state=D), be(2, state=BackendState.DISABLED)),
                                       ports=(80, 443)),
                                   svc("syslog", backends=(be(4, state=D),), protocol=Protocol.UDP,
                                       ports=(514,), vip="10.0.0.101"))),
    "two_services": Table(10, (svc("web", ports=(80, 443)),
                               svc("dicom", Algorithm.SOURCE_HASH, (be(4), be(5)), ports=(104,),
                                   vip="10.0.0.101", snat=False))),
    "snat_address": Table(11, (svc("web", ports=(80, 443), snat_address="10.0.1.100"),
                               svc("dns", backends=(be(1), be(2)), protocol=Protocol.UDP, ports=(53,)),
                               svc("gw", vip="10.0.0.101", snat=False))),
    "empty": Table(1),
}


# ------------------------------------------------------------------ golden files


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    path = GOLDEN / f"dataplane_{name}.nft"
    text = render(CASES[name])
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"render({name}) differs from {path.name}"


def test_golden_dir_has_no_strays():
    assert {p.name for p in GOLDEN.glob("dataplane_*.nft")} == {f"dataplane_{n}.nft" for n in CASES}


# ----------------------------------------------------------------- the script's shape


@pytest.mark.parametrize("name", sorted(CASES))
def test_replaces_only_our_table_in_one_file(name):
    text = render(CASES[name])
    lines = text.splitlines()
    assert lines[0] == f"# generation {CASES[name].generation}"
    assert lines[1:4] == ["table inet hacluster {}", "delete table inet hacluster", "table inet hacluster {"]
    assert text.endswith("}\n")
    # Every mention of a table is ours, and no other command than table/delete at top level.
    assert set(re.findall(r"\btable\s+(\S+\s+\S+)", text)) == {"inet hacluster"}
    assert [ln for ln in lines if ln and not ln.startswith(("\t", " ", "#", "}"))] == lines[1:4]
    assert f'comment "hacluster generation {CASES[name].generation}"' in text
    assert "flush ruleset" not in text


def test_deterministic_whatever_the_input_order():
    t = CASES["two_services"]
    shuffled = Table(t.generation, tuple(
        Service(s.name, s.vip, s.protocol, tuple(reversed(s.ports)), s.backend_port, s.algorithm,
                tuple(reversed(s.backends)), s.fallback, s.snat) for s in reversed(t.services)))
    assert render(shuffled) == render(t)


def test_empty_table_is_just_the_table():
    body = render(Table(1)).splitlines()[4:]
    assert body == ['\tcomment "hacluster generation 1"', "}"]


def map_elements(text: str, name_part: str) -> list[str]:
    """Targets of a slot map, in slot order."""
    m = re.search(r"map (m_" + name_part + r"_\w+) \{\n\t\ttypeof [^\n]*\n(.*?)\n\t\}", text, re.S)
    assert m, f"no map for {name_part}"
    items = re.findall(r"(\d+) : ([\d.]+(?: \. \d+)?)", m.group(2))
    assert [int(i) for i, _ in items] == list(range(len(items)))
    return [t for _, t in items]


# --------------------------------------------------------------------- algorithms


def test_round_robin_numgen_over_serving_only():
    text = render(Table(1, (svc(backends=(be(1), be(2, state=X), be(3), be(4, state=D))),)))
    assert re.search(r"ip daddr 10\.0\.0\.100 tcp dport 80 dnat ip to numgen inc mod 2 map @m_web_\w+", text)
    assert map_elements(text, "web") == ["10.0.0.1", "10.0.0.3"]
    # Draining/down backends keep their counters (their established flows still count).
    for i in (1, 2, 3, 4):
        assert f"counter {counter_name('web', f'n{i}')} {{}}" in text


def test_weighted_slots_follow_weights_and_interleave():
    text = render(CASES["weighted_123"])
    slots = map_elements(text, "web")
    assert Counter(slots) == {"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 3}
    assert "numgen inc mod 6 map" in text
    assert slots[0] == "10.0.0.3" and slots[1] != slots[0]  # smooth, not blocks


def test_weights_reduced_by_gcd():
    text = render(Table(1, (svc(algorithm=Algorithm.WEIGHTED, backends=(be(1, 200), be(2, 400))),)))
    assert Counter(map_elements(text, "web")) == {"10.0.0.1": 1, "10.0.0.2": 2}


def test_slot_weights_cap_and_rounding():
    assert slot_weights([2, 4, 6]) == [1, 2, 3]
    assert slot_weights([5]) == [1]
    rnd = random.Random(3)
    for _ in range(20):
        weights = [rnd.randint(1, 1000) for _ in range(rnd.randint(2, 40))]
        slots = slot_weights(weights)
        total = sum(slots)
        assert total <= MAX_SLOTS + len(weights)
        assert all(s >= 1 for s in slots)
        for w, s in zip(weights, slots, strict=True):
            assert abs(s / total - w / sum(weights)) <= 2 / min(total, MAX_SLOTS) + 1e-9
    # Many tiny weights next to a huge one: each keeps a slot (documented overshoot).
    assert slot_weights([1000] + [1] * 5) == [995, 1, 1, 1, 1, 1]
    assert slot_weights([1000, 1000, 1, 1, 1]) == [499, 499, 1, 1, 1]  # 1001 slots: 1 over the cap


def test_smooth_order():
    assert Counter(smooth_order([1, 2, 3])) == {0: 1, 1: 2, 2: 3}
    assert smooth_order([1, 1, 1]) == [0, 1, 2]
    seq = smooth_order([1, 5])
    assert seq.count(0) == 1 and len(seq) == 6


def test_source_hash_jhash_saddr_with_fixed_seed_and_weights():
    text = render(CASES["source_hash"])
    assert f"jhash ip saddr mod 3 seed {FLOW_HASH_SEED:#010x} map @m_ris_" in text
    assert Counter(map_elements(text, "ris")) == {"10.0.0.1": 1, "10.0.0.2": 2}  # n3 drains


def test_maglev_map_and_hash():
    text = render(CASES["maglev"])
    size = maglev_size(3)
    assert size == 1021
    assert (f"dnat ip to jhash ip saddr . tcp sport . ip daddr . tcp dport mod {size} "
            f"seed {FLOW_HASH_SEED:#010x} map @m_pacs_") in text
    slots = map_elements(text, "pacs")
    assert len(slots) == size
    shares = Counter(slots)
    for addr, want in (("10.0.0.1", 0.25), ("10.0.0.2", 0.25), ("10.0.0.3", 0.5)):
        assert abs(shares[addr] / size - want) <= 0.01


def test_maglev_same_map_on_every_node_and_small_change_on_down():
    t = CASES["maglev"]
    other_node = Table(t.generation, (Service(*[getattr(t.services[0], f) for f in (
        "name", "vip", "protocol", "ports", "backend_port", "algorithm")],
        tuple(reversed(t.services[0].backends))),))
    assert map_elements(render(t), "pacs") == map_elements(render(other_node), "pacs")
    down = Table(7, (svc("pacs", Algorithm.MAGLEV, (be(1, 1), be(2, 1, D), be(3, 2)), ports=(104,)),))
    before, after = map_elements(render(t), "pacs"), map_elements(render(down), "pacs")
    assert len(after) == len(before)  # M depends on the configured backends, not on health
    moved = sum(a != b and a != "10.0.0.2" for a, b in zip(before, after, strict=True)) / len(before)
    assert "10.0.0.2" not in after and moved <= 0.03


def test_maglev_size_ladder():
    assert [maglev_size(n) for n in (1, 10, 11, 40, 41, 256)] == [1021, 1021, 4093, 4093, 16381, 16381]


# ------------------------------------------------------------------ targets and ports


def test_backend_port_gives_addr_dot_port_and_udp_multi_port():
    text = render(CASES["udp_multiport"])
    assert re.search(r"ip daddr 10\.0\.0\.100 udp dport \{ 53, 5353 \} dnat ip addr \. port to "
                     r"numgen inc mod 2 map @m_dns_\w+", text)
    assert map_elements(text, "dns") == ["10.0.0.1 . 5300", "10.0.0.2 . 5300"]
    assert "typeof numgen inc mod 2 : ip daddr . udp dport" in text


def test_without_backend_port_the_client_port_is_kept():
    text = render(CASES["rr3"])
    assert "dnat ip to numgen" in text and "typeof numgen inc mod 3 : ip daddr\n" in text


def test_mixed_backend_ports_get_one_map_per_vip_port():
    t = Table(1, (svc(backends=(be(1), be(2, port=9000)), ports=(80, 81)),))
    text = render(t)
    assert len(re.findall(r"^\tmap m_web_", text, re.M)) == 2
    assert "0 : 10.0.0.1 . 80, 1 : 10.0.0.2 . 9000" in text
    assert "0 : 10.0.0.1 . 81, 1 : 10.0.0.2 . 9000" in text


# --------------------------------------------------------------- no serving backend


def test_no_serving_backend_with_fallback_dnats_to_it():
    text = render(CASES["no_serving_fallback"])
    assert "ip daddr 10.0.0.100 tcp dport { 80, 443 } dnat ip to 10.0.0.60:8080" in text
    assert "reject" not in text
    fb = fallback_counter_name("web", SORRY.id)
    assert f'10.0.0.100 . tcp . 80 . 10.0.0.60 . 8080 : "{fb}"' in text


def test_no_serving_backend_without_fallback_rejects_and_counts():
    text = render(CASES["no_serving_reject"])
    assert "dnat" not in text.split("chain services {")[1].split("}")[0]
    assert (f'ip daddr 10.0.0.100 tcp dport {{ 80, 443 }} ct state new counter name '
            f'"{drop_counter_name("web")}" reject with tcp reset') in text
    assert (f'ip daddr 10.0.0.101 udp dport 514 ct state new counter name '
            f'"{drop_counter_name("syslog")}" reject with icmp type port-unreachable') in text
    assert "type filter hook input priority filter - 10" in text


# ------------------------------------------------------------------- snat, counters


def _block(text: str, head: str) -> str:
    return text.split(head + " {")[1].split("}")[0]


def test_snat_to_the_vip_or_the_snat_address_and_only_for_services_that_ask():
    text = render(CASES["snat_address"])
    snat = _block(text, "map snat_addresses")
    assert "type ipv4_addr . inet_proto . inet_service : ipv4_addr" in snat
    assert "10.0.0.100 . tcp . 80 : 10.0.1.100" in snat and "10.0.0.100 . tcp . 443 : 10.0.1.100" in snat
    assert "10.0.0.100 . udp . 53 : 10.0.0.100" in snat  # no snat_address: the VIP itself
    assert "10.0.0.101" not in snat  # gateway mode
    assert "elements = { 10.0.0.100, 10.0.1.100 " in _block(text, "set floating_addresses")
    rule = ("ct status dnat meta l4proto {} snat ip to ct original ip daddr . meta l4proto . "
            "ct original proto-dst map @snat_addresses")
    for chain, hook in (("nat_postrouting", "type nat hook postrouting priority srcnat"),
                        ("nat_input", "type nat hook input priority 100")):
        body = _block(text, f"chain {chain}")
        assert hook in body and rule.format("tcp") in body and rule.format("udp") in body, body
    assert "masquerade" not in text


def test_backends_leave_balanced_flows_untracked():
    text = render(CASES["rr3"])
    pre, out = _block(text, "chain raw_prerouting"), _block(text, "chain raw_output")
    assert "type filter hook prerouting priority raw;" in pre
    assert 'iifname != "lo" ip saddr @floating_addresses notrack' in pre
    assert "type filter hook output priority raw;" in out
    assert "ip daddr @floating_addresses fib daddr type != local notrack" in out


def test_gateway_mode_has_no_snat_and_tracks_everything():
    text = render(Table(1, (svc(snat=False),)))
    for gone in ("snat", "masquerade", "floating_addresses", "nat_input", "notrack", "raw_"):
        assert gone not in text, gone


def test_counter_map_covers_every_backend_and_port():
    text = render(CASES["udp_multiport"])
    for port in (53, 5353):
        for i in (1, 2, 3):
            assert f'10.0.0.100 . udp . {port} . 10.0.0.{i} . 5300 : "{counter_name("dns", f"n{i}")}"' in text
    assert "chain count_prerouting {\n\t\ttype filter hook prerouting priority dstnat + 10" in text
    assert "chain count_output {\n\t\ttype filter hook output priority -90" in text


def test_counter_names_are_safe_bounded_and_unique():
    pairs = [("web", "n1"), ("a-b", "n1"), ("a_b", "n1"), ("web", "10.0.0.5:8080"),
             ("x" * 32, "y" * 200), ("x" * 32, "y" * 199 + "z"), ("counter", "table")]
    names = [counter_name(s, b) for s, b in pairs]
    names += [drop_counter_name("a-b"), drop_counter_name("a_b"), fallback_counter_name("web", "n1")]
    assert len(set(names)) == len(names)
    for n in names:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) and len(n) <= 64, n
    assert counter_name("web", "n1") == counter_name("web", "n1")
    assert counter_name("web", "n1").startswith("b_web_n1_")


def test_counters_carry_over():
    name = counter_name("web", "n1")
    text = render(CASES["rr3"], {name: (5, 700), "b_gone_1234": (1, 1)})
    assert f"counter {name} {{ packets 5 bytes 700 }}" in text
    assert "b_gone_1234" not in text


def test_duplicate_backend_ids_refused():
    with pytest.raises(ValueError):
        render(Table(1, (svc(backends=(be(1), be(1))),)))


# --------------------------------------------------- NftApplier against a fake runner


class FakeRunner:
    """Answers nft/conntrack commands from a script of (predicate, result) pairs."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.answers: list[tuple[str, int, str, str]] = []  # (substring of cmd, rc, stdout, stderr)

    def answer(self, contains: str, rc: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.answers.insert(0, (contains, rc, stdout, stderr))

    def __call__(self, args, stdin, timeout):
        cmd = list(args)
        self.calls.append((cmd, stdin))
        joined = " ".join(cmd)
        for contains, rc, out, err in self.answers:
            if contains in joined:
                return subprocess.CompletedProcess(cmd, rc, out, err)
        return subprocess.CompletedProcess(cmd, 0, "", "")


NO_TABLE = "Error: No such file or directory\nlist table inet hacluster\n                 ^^^^^^^^^"


def test_applier_applies_via_stdin_in_the_netns_and_remembers():
    run = FakeRunner()
    run.answer("list counters", 1, "", NO_TABLE)
    a = NftApplier("ns1", run=run)
    a.apply(CASES["rr3"])
    cmd, stdin = run.calls[-1]
    assert cmd == ["ip", "netns", "exec", "ns1", "nft", "-f", "-"]
    assert stdin == render(CASES["rr3"])
    assert a.last_applied == 3


def test_applier_failure_raises_with_stderr_and_generation_and_keeps_last():
    run = FakeRunner()
    a = NftApplier(run=run)
    a.apply(CASES["rr3"])
    run.answer("-f -", 1, "", "Error: syntax error, unexpected junk")
    with pytest.raises(DataplaneError) as e:
        a.apply(CASES["weighted_123"])
    assert e.value.generation == 4 and "unexpected junk" in e.value.stderr
    assert "kept generation 3" in str(e.value)
    assert a.last_applied == 3


def test_applier_carries_counters_into_the_next_generation():
    run = FakeRunner()
    name = counter_name("web", "n2")
    listing = {"nftables": [{"metainfo": {}}, {"counter": {"family": "inet", "table": "hacluster",
                                                           "name": name, "packets": 9, "bytes": 900}}]}
    run.answer("list counters", 0, json.dumps(listing))
    a = NftApplier(run=run)
    assert a.counters() == {name: (9, 900)}
    a.apply(CASES["rr3"])
    assert f"counter {name} {{ packets 9 bytes 900 }}" in run.calls[-1][1]


def test_applied_generation_reads_the_table_comment():
    run = FakeRunner()
    a = NftApplier(run=run)
    listing = 'table inet hacluster {\n\tcomment "hacluster generation 42"\n\tchain x {\n}\n'
    run.answer("list table", 0, listing)
    assert a.applied_generation() == 42
    run.answer("list table", 0, "table inet hacluster {\n}\n")
    assert a.applied_generation() is None
    run.answer("list table", 1, "", NO_TABLE)
    assert a.applied_generation() is None
    run.answer("list table", 1, "", 'Cannot open network namespace "x": No such file or directory')
    with pytest.raises(DataplaneError):
        a.applied_generation()


def test_remove_is_idempotent_script():
    run = FakeRunner()
    NftApplier(run=run).remove()
    assert run.calls[-1][1] == "table inet hacluster {}\ndelete table inet hacluster\n"


def test_remove_forgets_the_flows_balanced_here_with_snat():
    run = FakeRunner()
    a = NftApplier("ns1", conntrack="true", run=run)  # any installed binary stands in for conntrack
    a.apply(CASES["snat_address"])
    run.answer("true -D", 1, "", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.")
    a.remove()
    deletes = [c for c, _ in run.calls if "-D" in c]
    # 10.0.0.101's service is in gateway mode: no SNAT, no clash to prevent.
    assert deletes == [["ip", "netns", "exec", "ns1", "true", "-D", "--dst-nat", "-d", "10.0.0.100"]]
    run.calls.clear()
    a.remove()  # nothing applied since: the table alone
    assert [c for c, _ in run.calls if "-D" in c] == []


def test_remove_says_when_the_flows_stay_tracked():
    run = FakeRunner()
    a = NftApplier(conntrack="no-such-conntrack-tool", run=run)
    a.apply(CASES["rr3"])
    with pytest.raises(DataplaneError, match="not installed.*stay tracked"):
        a.remove()
    assert run.calls[-1][1] == "table inet hacluster {}\ndelete table inet hacluster\n"
    assert a.last_applied is None


def test_flush_backend_uses_conntrack_dst_nat():
    run = FakeRunner()
    a = NftApplier("ns1", conntrack="true", run=run)  # any installed binary stands in for conntrack
    run.answer("true -D", 1, "", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.")
    ok, why = a.flush_backend("10.0.0.2", 8080, Protocol.TCP)
    assert ok, why
    assert run.calls[-1][0] == ["ip", "netns", "exec", "ns1", "true", "-D", "-p", "tcp", "--dst-nat",
                                "--reply-src", "10.0.0.2", "--reply-port-src", "8080"]
    assert a.flush_backend("10.0.0.2", None, "udp")[0]
    assert "--reply-port-src" not in run.calls[-1][0]
    run.answer("true -D", 2, "", "conntrack: bad option")
    assert a.flush_backend("10.0.0.2", 80, "tcp") == (False, "conntrack failed (2): conntrack: bad option")


def test_forget_stale_deletes_closed_and_unanswered_tcp_entries_dnated_to_the_backend():
    run = FakeRunner()
    a = NftApplier("ns1", conntrack="true", run=run)
    run.answer("true -D", 1, "", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.")
    assert a.forget_stale("10.0.0.2", 8080, Protocol.TCP) == (True, "forgotten")
    base = ["ip", "netns", "exec", "ns1", "true", "-D", "-p", "tcp", "--dst-nat", "--reply-src", "10.0.0.2",
            "--reply-port-src", "8080", "--state"]
    assert [c[0] for c in run.calls[-3:]] == [base + ["TIME_WAIT"], base + ["CLOSE"], base + ["SYN_SENT"]]
    calls = len(run.calls)
    assert a.forget_stale("10.0.0.2", 53, "udp") == (True, "not TCP") and len(run.calls) == calls
    run.answer("true -D", 2, "", "conntrack: bad option")
    ok, why = a.forget_stale("10.0.0.2", None, "tcp")
    assert not ok and why.startswith("conntrack failed: TIME_WAIT: conntrack: bad option")


def test_flush_backend_without_conntrack():
    applier = NftApplier(conntrack="no-such-conntrack-tool", run=FakeRunner())
    ok, why = applier.flush_backend("10.0.0.2", 80, "tcp")
    assert not ok and "not installed" in why


def test_available_reports_why_not():
    run = FakeRunner()
    run.answer("-c", 1, "", "Error: Could not process rule: Operation not permitted")
    ok, why = NftApplier(nft="true", run=run).available()
    assert not ok and "Operation not permitted" in why
    assert NftApplier(nft="no-such-nft", run=run).available()[0] is False
