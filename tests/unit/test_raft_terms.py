"""Pre-vote passes are bound to their term; a leader told of a higher term steps down.

These drive RaftNode's hooks with a stand-in for pysyncobj's object (the attributes the hooks
read, under their name-mangled names), on an injected clock.
"""

from __future__ import annotations

from hacluster.consensus import raft as raft_mod
from hacluster.consensus.raft import STALE_TERM_S, RaftNode

from .fakes import Clock, config


class Node:
    def __init__(self, address: str) -> None:
        self.address = address


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def send(self, node, message) -> None:
        self.sent.append((getattr(node, "address", str(node)), message))


class FakeSync:
    """Just enough of a pysyncobj SyncObj for the hooks in RaftNode."""

    def __init__(self, term: int = 1, leader: bool = False) -> None:
        self.raftCurrentTerm = term
        self.leader = leader
        self.otherNodes = [Node("10.0.0.12:7100"), Node("10.0.0.13:7100")]
        self._SyncObj__raftElectionDeadline = 0.0
        self._SyncObj__transferInProgress = False
        self._SyncObj__transport = FakeTransport()
        self._SyncObj__raftLeader = "someone"
        self.state = 2 if leader else 0

    def _isLeader(self) -> bool:
        return self.state == 2

    def _SyncObj__getCurrentLogIndex(self) -> int:
        return 10

    def _SyncObj__getCurrentLogTerm(self) -> int:
        return 1

    def _SyncObj__setCurrentTerm(self, term: int, voted) -> None:
        self.raftCurrentTerm = term

    def _SyncObj__setState(self, state: int) -> None:
        self.state = state


def _node(monkeypatch, sync: FakeSync) -> tuple[RaftNode, Clock]:
    clock = Clock(1000.0)
    monkeypatch.setattr(raft_mod, "_now", clock)
    node = RaftNode(config(), "s" * 32)
    node._sync = sync  # type: ignore[assignment]
    return node, clock


def _grant_all(node: RaftNode, sync: FakeSync) -> None:
    for addr in ("10.0.0.12:7100", "10.0.0.13:7100"):
        node.intercept(Node(addr), {"type": "hc_prevote_resp", "round": node._prevote_round,
                                    "granted": True})


def test_a_pre_vote_pass_lets_exactly_its_own_term_run(monkeypatch):
    sync = FakeSync(term=1)
    node, clock = _node(monkeypatch, sync)
    node._gate_election(clock())  # timer expired: a pre-vote round for term 2
    assert sync._SyncObj__transport.sent[-1][1]["term"] == 2
    _grant_all(node, sync)
    assert sync._SyncObj__raftElectionDeadline == 0  # pysyncobj may elect now
    node._gate_election(clock())
    assert sync._SyncObj__raftElectionDeadline == 0  # not pushed back: the election runs


def test_a_pass_gone_stale_by_a_term_change_asks_again(monkeypatch):
    sync = FakeSync(term=1)
    node, clock = _node(monkeypatch, sync)
    node._gate_election(clock())
    _grant_all(node, sync)
    # before our election starts, another candidate's vote request moves us to term 2
    sync.raftCurrentTerm = 2
    sent = len(sync._SyncObj__transport.sent)
    node._gate_election(clock())
    assert sync._SyncObj__raftElectionDeadline > clock()  # held back, not an election for 3
    new = sync._SyncObj__transport.sent[sent:]
    assert new and all(m["type"] == "hc_prevote" and m["term"] == 3 for _, m in new)


def test_lower_term_leader_is_told_only_after_a_while(monkeypatch):
    sync = FakeSync(term=5)
    node, clock = _node(monkeypatch, sync)
    leader = Node("10.0.0.13:7100")
    node.intercept(leader, {"type": "append_entries", "term": 4})
    assert sync._SyncObj__transport.sent == []
    clock.advance(STALE_TERM_S + 0.1)
    node.intercept(leader, {"type": "append_entries", "term": 4})
    assert sync._SyncObj__transport.sent == [("10.0.0.13:7100", {"type": "hc_higher_term", "term": 5})]
    # a heartbeat at our own term clears it
    node.intercept(leader, {"type": "append_entries", "term": 5})
    clock.advance(STALE_TERM_S + 0.1)
    node.intercept(leader, {"type": "append_entries", "term": 4})
    assert len(sync._SyncObj__transport.sent) == 1


def test_leader_steps_down_for_a_higher_term_only(monkeypatch):
    sync = FakeSync(term=4, leader=True)
    node, _ = _node(monkeypatch, sync)
    peer = Node("10.0.0.12:7100")
    assert node.intercept(peer, {"type": "hc_higher_term", "term": 4}) is True
    assert sync._isLeader() and sync.raftCurrentTerm == 4
    node.intercept(peer, {"type": "hc_higher_term", "term": "9"})  # malformed: ignored
    assert sync._isLeader()
    node.intercept(peer, {"type": "hc_higher_term", "term": 5})
    assert not sync._isLeader() and sync.raftCurrentTerm == 5
    assert sync._SyncObj__raftLeader is None


def test_a_live_leader_voids_a_pass_that_has_not_been_used(monkeypatch):
    sync = FakeSync(term=1)
    node, clock = _node(monkeypatch, sync)
    node._gate_election(clock())
    _grant_all(node, sync)
    node.intercept(Node("10.0.0.13:7100"), {"type": "append_entries", "term": 1})
    sync._SyncObj__raftElectionDeadline = 0.0  # later, its election timer expires again
    node._gate_election(clock())
    assert sync._SyncObj__raftElectionDeadline > clock()  # a fresh pre-vote, not an election


class _ApplyRecorder(FakeSync):
    def __init__(self, term: int, leader: bool) -> None:
        super().__init__(term=term, leader=leader)
        self.applied: list[tuple[bytes, object]] = []

    def apply(self, data: bytes, callback=None) -> None:
        self.applied.append((data, callback))


def test_an_epoch_is_proposed_only_by_the_leader_of_that_very_term(monkeypatch):
    # the agent's view was torn while this node was deposed: "leader" yet already term 6;
    # proposing epoch 6 in our name would be forwarded to the real leader of 6 and block it
    sync = _ApplyRecorder(term=6, leader=False)
    node, _ = _node(monkeypatch, sync)
    node.register_epoch(6)
    node.before_tick()  # runs on pysyncobj's thread
    assert sync.applied == []
    sync.state = 2  # leader of 5 asking for 6: no either
    sync.raftCurrentTerm = 5
    node.register_epoch(6)
    node.before_tick()
    assert sync.applied == []
    node.register_epoch(5)
    node.before_tick()
    assert len(sync.applied) == 1


def test_a_leader_whose_term_is_recorded_for_another_node_goes_silent(monkeypatch):
    from hacluster.consensus.state import Result
    sync = _ApplyRecorder(term=7, leader=True)
    node, clock = _node(monkeypatch, sync)
    node.agent_alive()
    node.register_epoch(7)
    node.before_tick()
    _, callback = sync.applied[0]
    callback(Result(False, "term 7 already belongs to 'n2'", 40), 0)
    node._check_agent(clock())
    assert node.mute_heartbeats  # followers time out and elect a new leader, in term 8
