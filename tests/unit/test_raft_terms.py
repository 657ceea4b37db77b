"""Pre-vote passes are bound to their term; a leader told of a higher term steps down.

These drive RaftNode's hooks with a stand-in for the pysyncobj seam (pysyncobj_compat's
SyncObjSeam: the same method names, no pysyncobj underneath), on an injected clock.
test_pysyncobj_compat.py checks that the real seam does what this stand-in does.
"""

from __future__ import annotations

from hacluster.consensus import raft as raft_mod
from hacluster.consensus.pysyncobj_compat import FOLLOWER, LEADER
from hacluster.consensus.raft import STALE_TERM_S, RaftNode
from tests.support.clock import FakeClock as Clock
from tests.support.config import config


class Node:
    def __init__(self, address: str) -> None:
        self.address = address


class FakeSeam:
    """Just enough of SyncObjSeam for the hooks in RaftNode; records what they ask of it."""

    def __init__(self, term: int = 1, leader: bool = False) -> None:
        self.term = term
        self.state = LEADER if leader else FOLLOWER
        self.nodes = [Node("10.0.0.12:7100"), Node("10.0.0.13:7100")]
        self.deadline = 0.0  # the election deadline pysyncobj would act on
        self.transferring = False
        self.leader: str | None = "someone"
        self.sent: list[tuple[str, dict]] = []
        self.stepped_down: list[int] = []
        self.obj = self  # the SyncObj itself: its replicated apply() (see _ApplyRecorder)
        self.tcp: dict[str, float | None] = {}  # peer address -> what tcp_silence() says

    def is_leader(self) -> bool:
        return self.state == LEADER

    def other_nodes(self) -> list[Node]:
        return list(self.nodes)

    def election_deadline(self) -> float:
        return self.deadline

    def wake(self) -> None:  # call_soon ends the tick thread's poll: counted
        self.woken = getattr(self, "woken", 0) + 1

    def next_heartbeat_at(self) -> float:
        return getattr(self, "heartbeat_at", 0.0)

    def set_election_deadline(self, deadline: float) -> None:
        self.deadline = deadline

    def transfer_in_progress(self) -> bool:
        return self.transferring

    def skip_held_entries(self, message) -> int:
        return 0

    def last_log(self) -> tuple[int, int]:
        return 10, 1

    mark: tuple | None = (1, 0, None, 10)  # quiet_mark(): what a quiet wake-up must find unchanged

    def quiet_mark(self) -> tuple | None:
        return self.mark

    def tcp_silence(self, node) -> float | None:
        return self.tcp.get(getattr(node, "address", node))

    readonly: dict = {}  # read-only node -> the IP it connected from (set one per test)

    def readonly_nodes(self) -> set:
        return set(self.readonly)

    def source_of(self, node) -> str | None:
        return self.readonly.get(node)

    # what view() reads
    commit_index = last_applied = 0

    def raft_state(self) -> int:
        return self.state

    def leader_address(self) -> str | None:
        return self.leader if self.leader != "someone" else None

    def is_connected(self, node) -> bool:
        return True

    def send(self, node, message) -> None:
        self.sent.append((getattr(node, "address", str(node)), message))

    def step_down(self, term: int) -> None:
        self.stepped_down.append(term)
        self.term = term
        self.leader = None
        self.state = FOLLOWER


def _node(monkeypatch, seam: FakeSeam) -> tuple[RaftNode, Clock]:
    clock = Clock(1000.0)
    monkeypatch.setattr(raft_mod, "_now", clock)
    node = RaftNode(config(), "s" * 32)
    node._sync = seam  # type: ignore[assignment]
    return node, clock


def _grant_all(node: RaftNode, seam: FakeSeam) -> None:
    for addr in ("10.0.0.12:7100", "10.0.0.13:7100"):
        node.intercept(Node(addr), {"type": "hc_prevote_resp", "round": node._prevote_round,
                                    "granted": True})


def test_a_pre_vote_pass_lets_exactly_its_own_term_run(monkeypatch):
    seam = FakeSeam(term=1)
    node, clock = _node(monkeypatch, seam)
    node._gate_election(clock())  # timer expired: a pre-vote round for term 2
    assert seam.sent[-1][1]["term"] == 2
    _grant_all(node, seam)
    assert seam.deadline == 0  # pysyncobj may elect now
    node._gate_election(clock())
    assert seam.deadline == 0  # not pushed back: the election runs


def test_a_pass_gone_stale_by_a_term_change_asks_again(monkeypatch):
    seam = FakeSeam(term=1)
    node, clock = _node(monkeypatch, seam)
    node._gate_election(clock())
    _grant_all(node, seam)
    # before our election starts, another candidate's vote request moves us to term 2
    seam.term = 2
    sent = len(seam.sent)
    node._gate_election(clock())
    assert seam.deadline > clock()  # held back, not an election for 3
    new = seam.sent[sent:]
    assert new and all(m["type"] == "hc_prevote" and m["term"] == 3 for _, m in new)


def test_lower_term_leader_is_told_only_after_a_while(monkeypatch):
    seam = FakeSeam(term=5)
    node, clock = _node(monkeypatch, seam)
    leader = Node("10.0.0.13:7100")
    node.intercept(leader, {"type": "append_entries", "term": 4})
    assert seam.sent == []
    clock.advance(STALE_TERM_S + 0.1)
    node.intercept(leader, {"type": "append_entries", "term": 4})
    assert seam.sent == [("10.0.0.13:7100", {"type": "hc_higher_term", "term": 5})]
    # a heartbeat at our own term clears it
    node.intercept(leader, {"type": "append_entries", "term": 5})
    clock.advance(STALE_TERM_S + 0.1)
    node.intercept(leader, {"type": "append_entries", "term": 4})
    assert len(seam.sent) == 1


def test_leader_steps_down_for_a_higher_term_only(monkeypatch):
    seam = FakeSeam(term=4, leader=True)
    node, _ = _node(monkeypatch, seam)
    peer = Node("10.0.0.12:7100")
    assert node.intercept(peer, {"type": "hc_higher_term", "term": 4}) is True
    assert seam.is_leader() and seam.term == 4
    node.intercept(peer, {"type": "hc_higher_term", "term": "9"})  # malformed: ignored
    assert seam.is_leader()
    node.intercept(peer, {"type": "hc_higher_term", "term": 5})
    assert not seam.is_leader() and seam.term == 5
    assert seam.stepped_down == [5] and seam.leader is None


def test_a_live_leader_voids_a_pass_that_has_not_been_used(monkeypatch):
    seam = FakeSeam(term=1)
    node, clock = _node(monkeypatch, seam)
    node._gate_election(clock())
    _grant_all(node, seam)
    node.intercept(Node("10.0.0.13:7100"), {"type": "append_entries", "term": 1})
    seam.deadline = 0.0  # later, its election timer expires again
    node._gate_election(clock())
    assert seam.deadline > clock()  # a fresh pre-vote, not an election


class _ApplyRecorder(FakeSeam):
    def __init__(self, term: int, leader: bool) -> None:
        super().__init__(term=term, leader=leader)
        self.applied: list[tuple[bytes, object]] = []

    def apply(self, data: bytes, callback=None) -> None:
        self.applied.append((data, callback))


def test_an_epoch_is_proposed_only_by_the_leader_of_that_very_term(monkeypatch):
    # the agent's view was torn while this node was deposed: "leader" yet already term 6;
    # proposing epoch 6 in our name would be forwarded to the real leader of 6 and block it
    seam = _ApplyRecorder(term=6, leader=False)
    node, _ = _node(monkeypatch, seam)
    node.register_epoch(6)
    node.before_tick()  # runs on pysyncobj's thread
    assert seam.applied == []
    seam.state = LEADER  # leader of 5 asking for 6: no either
    seam.term = 5
    node.register_epoch(6)
    node.before_tick()
    assert seam.applied == []
    node.register_epoch(5)
    node.before_tick()
    assert len(seam.applied) == 1


def test_a_leader_whose_term_is_recorded_for_another_node_goes_silent(monkeypatch):
    from hacluster.consensus.state import Result
    seam = _ApplyRecorder(term=7, leader=True)
    node, clock = _node(monkeypatch, seam)
    node.agent_alive()
    node.register_epoch(7)
    node.before_tick()
    _, callback = seam.applied[0]
    callback(Result(False, "term 7 already belongs to 'n2'", 40), 0)
    node._check_agent(clock())
    assert node.mute_heartbeats  # followers time out and elect a new leader, in term 8


def test_a_tick_that_runs_late_never_lets_pysyncobj_elect_on_its_own(monkeypatch):
    """A CPU-starved process can be descheduled between the gate and pysyncobj's own
    deadline check: the deadline pysyncobj sees is parked out of reach, whatever the pause."""
    seam = FakeSeam(term=4)
    node, clock = _node(monkeypatch, seam)
    seam.deadline = clock() + 0.1  # pysyncobj armed its timer (a heartbeat came in)
    node._gate_election(clock())
    assert seam.deadline == raft_mod.HELD  # taken over by the gate
    clock.advance(5.0)  # descheduled right after the hook: pysyncobj's check sees...
    assert not seam.deadline < clock()  # ...no expired deadline, so no ungated election
    node._gate_election(clock())  # the next tick: due, but only a pre-vote round starts
    assert seam.deadline == raft_mod.HELD and seam.term == 4
    assert seam.sent and all(m["type"] == "hc_prevote" and m["term"] == 5 for _, m in seam.sent)


def test_a_heartbeat_rearms_the_gate_timer(monkeypatch):
    seam = FakeSeam(term=4)
    node, clock = _node(monkeypatch, seam)
    seam.deadline = clock() + 0.3
    node._gate_election(clock())
    clock.advance(0.2)
    seam.deadline = clock() + 0.3  # pysyncobj re-armed it on a heartbeat
    node._gate_election(clock())
    clock.advance(0.2)
    node._gate_election(clock())  # 0.4 s after the first deadline was armed: not due yet
    assert seam.sent == []


def test_a_transfer_may_elect_at_once(monkeypatch):
    seam = FakeSeam(term=4)
    node, clock = _node(monkeypatch, seam)
    seam.transferring = True
    seam.deadline = 0  # pysyncobj's timeout_now handler
    node._gate_election(clock())
    assert seam.deadline == 0 and node._transfer_pending


def test_the_leaders_view_carries_each_peers_tcp_silence(monkeypatch):
    seam = FakeSeam(term=3, leader=True)
    seam.tcp = {"10.0.0.12:7100": 0.004, "10.0.0.13:7100": None}
    node, clock = _node(monkeypatch, seam)
    node.leader_since = clock()
    node.before_tick()
    assert {p.tcp_silent_s for p in node.view().peers} == {None}  # acks on time: not read
    clock.advance(0.2)  # no ack from either for 4 heartbeats
    node.before_tick()  # read on pysyncobj's thread, which owns the sockets
    by_id = {p.id: p.tcp_silent_s for p in node.view().peers}
    assert by_id == {"n2": 0.004, "n3": None}
    seam.state = FOLLOWER  # a follower judges nobody
    node.before_tick()
    assert {p.tcp_silent_s for p in node.view().peers} == {None}


def test_a_retired_member_never_stands_nor_deposes_the_leader(monkeypatch):
    # CI: a demoted voter, cut off by the leader before its agent restarted as a non-voter,
    # stood for election, bumped its term and, as a non-voter, deposed the leader
    seam = FakeSeam(term=5)
    node, clock = _node(monkeypatch, seam)
    node.retire()
    for _ in range(3):
        node._gate_election(clock())
        clock.advance(1.0)
    assert seam.sent == [] and seam.deadline == raft_mod.HELD
    leader = Node("10.0.0.13:7100")
    node.intercept(leader, {"type": "append_entries", "term": 4})
    clock.advance(STALE_TERM_S + 0.1)
    node.intercept(leader, {"type": "append_entries", "term": 4})
    assert seam.sent == []


def test_a_non_voter_has_no_listener_to_report_and_keeps_its_built_role(monkeypatch):
    # a read-only node dials out and never listens: the guard loop called that "RAFT PORT
    # NOT LISTENING" every 30 s; and a demotion committed while it runs must not make a
    # voter's SyncObj look read-only to the election gate
    members = [{"id": f"n{i}", "address": f"10.0.0.1{i}", "raft_port": 7100, "grpc_port": 7101,
                **({"voter": False} if i == 4 else {})} for i in (1, 2, 3, 4)]
    seam = FakeSeam(term=1)
    seam.listener_up = lambda: False  # type: ignore[attr-defined]
    node = RaftNode(config(node_id="n4", members=members), "s" * 32)
    node._sync = seam  # type: ignore[assignment]
    assert node.readonly and node.listener_up() is None
    voter = RaftNode(config(), "s" * 32)
    voter._sync = seam  # type: ignore[assignment]
    voter._built_readonly = False  # as start() records it
    voter.config.update_live(members=tuple(
        m if m.id != "n1" else type(m)(m.id, m.address, m.raft_port, m.grpc_port, False)
        for m in voter.config.members))
    assert not voter.readonly and voter.listener_up() is False


class ReadOnly:
    """pysyncobj's read-only node: a counter for its name, no address."""

    def __init__(self, nid: str) -> None:
        self.id = nid

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other) -> bool:
        return isinstance(other, ReadOnly) and other.id == self.id


def _leader_with_non_voters(monkeypatch, *addresses: str):
    members = [{"id": f"n{i}", "address": f"10.0.0.1{i}", "raft_port": 7100, "grpc_port": 7101}
               for i in (1, 2, 3)]
    members += [{"id": f"n{i}", "address": a, "raft_port": 7100 + i, "grpc_port": 7200 + i,
                 "voter": False} for i, a in enumerate(addresses, start=4)]
    seam = FakeSeam(term=3, leader=True)
    clock = Clock(1000.0)
    monkeypatch.setattr(raft_mod, "_now", clock)
    node = RaftNode(config(members=members), "s" * 32)
    node._sync = seam  # type: ignore[assignment]
    node.leader_since = clock()
    return node, seam, clock


def test_the_leader_knows_a_non_voter_by_the_ip_it_connects_from_and_times_its_silence(monkeypatch):
    # pysyncobj names a read-only node "0", "1", ...: before, the leader could not tell which
    # member it was, and a powered-off non-voter's backends waited for gossip's DEAD verdict
    node, seam, clock = _leader_with_non_voters(monkeypatch, "10.0.0.14", "10.0.0.15")
    n4, n5, stranger = ReadOnly("0"), ReadOnly("1"), ReadOnly("2")
    seam.readonly = {n4: "10.0.0.14", n5: "::ffff:10.0.0.15", stranger: "10.0.0.99"}
    clock.advance(0.05)
    node.intercept(n4, {"type": "next_node_idx", "hc_ts": clock()})
    node.intercept(n5, {"type": "next_node_idx", "hc_ts": clock()})
    node.intercept(stranger, {"type": "next_node_idx", "hc_ts": clock()})
    assert node._peer_of(stranger) == "" and "" not in node.observers()
    clock.advance(0.6)  # n5 answers on, n4 has gone silent
    node.intercept(n5, {"type": "next_node_idx", "hc_ts": clock()})
    seam.tcp = {n4: 0.6, n5: 0.0}  # n4's kernel no longer acks either
    node.before_tick()
    view = node.view()
    links = {p.id: p for p in view.observers}
    assert set(links) == {"n4", "n5"} and links["n4"].connected and links["n5"].connected
    # the gap paced heartbeats allow (links.py) is not silence: 0.6 s less 0.25 - 0.05
    assert abs(links["n4"].last_ack_age_s - 0.4) < 1e-6 and links["n5"].last_ack_age_s == 0.0
    assert links["n4"].tcp_silent_s == 0.6 and links["n5"].tcp_silent_s is None  # read if late only
    # no vote: the lease counts the voters' acks alone, and the voters' links are as before
    assert node._acks == {} and {p.id for p in view.peers} == {"n2", "n3"}
    # one that is gone from pysyncobj's read-only nodes is no longer connected, its silence grows
    seam.readonly = {n5: "10.0.0.15"}
    clock.advance(1.0)
    node.before_tick()
    links = {p.id: p for p in node.view().observers}
    assert not links["n4"].connected and abs(links["n4"].last_ack_age_s - 1.4) < 1e-6
    assert links["n4"].tcp_silent_s is None  # no socket: unknown, which counts as no kernel ack


def test_two_non_voters_on_one_address_are_not_told_apart(monkeypatch):
    node, seam, clock = _leader_with_non_voters(monkeypatch, "10.0.0.14", "10.0.0.14")
    ro = ReadOnly("0")
    seam.readonly = {ro: "10.0.0.14"}
    assert node._peer_of(ro) == ""
    node.intercept(ro, {"type": "next_node_idx", "hc_ts": clock()})
    assert "" not in {p.id for p in node.view().observers}


def test_a_membership_change_forgets_which_read_only_node_is_whom(monkeypatch):
    node, seam, _ = _leader_with_non_voters(monkeypatch, "10.0.0.14")
    ro = ReadOnly("0")
    seam.readonly = {ro: "10.0.0.14"}
    assert node._peer_of(ro) == "n4"
    node.config.update_live(members=tuple(m for m in node.config.members if m.id != "n4"))
    assert node._peer_of(ro) == "" and node.view().observers == ()


def test_a_non_voter_gets_an_empty_heartbeat_a_quarter_second_and_everything_else_at_once(monkeypatch):
    # pysyncobj sends every member 20 heartbeats a second; a non-voter never votes or stands:
    # at 25 servers the leader sent 480 a second for nothing (links.py)
    node, seam, clock = _leader_with_non_voters(monkeypatch, "10.0.0.14")
    ro, voter = ReadOnly("0"), Node("10.0.0.12:7100")

    def beat(commit=7, **more):
        return {"type": "append_entries", "term": 3, "commit_index": commit, "entries": [], **more}
    assert node.on_send(beat(), ro) is not None  # the first goes
    clock.advance(0.05)
    assert node.on_send(beat(), ro) is None  # held back: nothing new for it
    assert node.on_send(beat(), voter) is not None  # a voter's: always (its lease, elections)
    assert node.on_send(beat(8), ro) is not None  # a new commit index: at once
    clock.advance(0.05)
    assert node.on_send(beat(8), ro) is None
    assert node.on_send(beat(entries=[(b"x", 9, 3)]), ro) is not None  # entries: at once
    assert node.on_send({**beat(8), "serialized": None}, ro) is not None  # a snapshot's part
    assert node.on_send({"type": "next_node_idx", "term": 3}, ro) is not None
    clock.advance(0.25)
    assert node.on_send(beat(8), ro) is not None  # OBSERVER_PERIOD_S later, an empty one too


def test_a_lost_lease_is_said_once_with_each_voters_newest_ack(monkeypatch, caplog):
    seam = FakeSeam(term=2, leader=True)
    node, clock = _node(monkeypatch, seam)
    node.leader_since = clock()
    for addr in ("10.0.0.12:7100", "10.0.0.13:7100"):
        node.intercept(Node(addr), {"type": "next_node_idx", "hc_ts": clock()})
    assert node.view().lease_ok
    clock.advance(0.1)
    node.intercept(Node("10.0.0.12:7100"), {"type": "next_node_idx", "hc_ts": clock()})
    clock.advance(0.25)  # the newest acks were sent 250 and 350 ms ago: past lease_ms (200)
    caplog.clear()
    assert not node.view().lease_ok and not node.view().lease_ok
    said = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
    assert said == ["lease lost (term 2): the newest heartbeat each voter acked was sent n2 250 ms, "
                    "n3 350 ms ago; a majority within lease_ms (200 ms) keeps it"]


def test_a_non_voter_pings_its_idle_links_once_a_second_a_voter_four_times(monkeypatch):
    # 22 non-voters pinging each follower voter 4 times a second doubled the voters' CPU at 25
    from hacluster.consensus.links import OBSERVER_PING_S, PING_PERIOD_S
    members = [{"id": f"n{i}", "address": f"10.0.0.1{i}", "raft_port": 7100, "grpc_port": 7101,
                **({"voter": False} if i == 4 else {})} for i in (1, 2, 3, 4)]
    for node_id, period in (("n1", PING_PERIOD_S), ("n4", OBSERVER_PING_S)):
        seam = FakeSeam(term=1)
        seam.leader = "10.0.0.12:7100"
        node, clock = _node(monkeypatch, seam)
        node.config = config(node_id=node_id, members=members)
        pings = []
        for _ in range(200):  # 2 s of 10 ms ticks
            node.before_tick()
            pings += [to for to, m in seam.sent if m["type"] == "hc_ping"]
            seam.sent.clear()
            clock.advance(0.01)
        assert pings and set(pings) == {"10.0.0.13:7100"}  # the idle link only, not the leader's
        assert abs(len(pings) - 2.0 / period) <= 1, (node_id, len(pings))
