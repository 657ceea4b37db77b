"""RaftNode's transport hooks (pysyncobj_compat.Hooks): what reaches pysyncobj and what leaves.

Driven with the seam stand-in of test_raft_terms.py, on an injected clock.
"""

from __future__ import annotations

from .test_raft_terms import FakeSeam, Node, _node


def test_a_heartbeat_send_time_rides_back_on_the_answer_sent_while_handling_it(monkeypatch):
    node, clock = _node(monkeypatch, FakeSeam(term=3))
    answers = []
    heartbeat = {"type": "append_entries", "term": 3, "hc_ts": 123.5}
    node.on_message(Node("10.0.0.12:7100"), heartbeat,
                    lambda: answers.append(node.on_send({"type": "next_node_idx", "term": 3})))
    assert answers == [{"type": "next_node_idx", "term": 3, "hc_ts": 123.5}]
    # after the heartbeat, an answer carries no stale send time
    assert node.on_send({"type": "next_node_idx", "term": 3}) == {"type": "next_node_idx", "term": 3}


def test_outgoing_heartbeats_carry_their_send_time(monkeypatch):
    node, clock = _node(monkeypatch, FakeSeam(term=3, leader=True))
    assert node.on_send({"type": "append_entries", "term": 3}) == {
        "type": "append_entries", "term": 3, "hc_ts": clock()}


def test_messages_for_us_alone_never_reach_pysyncobj(monkeypatch):
    node, _ = _node(monkeypatch, FakeSeam(term=3))
    delivered = []
    for message in ({"type": "hc_ping"}, {"type": "hc_prevote", "round": 1, "term": 4}):
        node.on_message(Node("10.0.0.12:7100"), message, lambda: delivered.append(True))
    assert delivered == []


def test_a_muted_leader_sends_no_heartbeat_but_still_answers(monkeypatch):
    node, _ = _node(monkeypatch, FakeSeam(term=3, leader=True))
    node.mute_heartbeats = True
    assert node.on_send({"type": "append_entries", "term": 3}) is None  # dropped
    assert node.on_send({"type": "response_vote", "term": 3}) == {"type": "response_vote", "term": 3}


class _HoldingDisk:
    """DiskGuard's face to on_send: every promise made while a message is handled waits for
    a flush (the journal has something to flush)."""

    def __init__(self) -> None:
        self.peer = None
        self.held: list[dict] = []

    def may_send(self, message: dict) -> bool:
        if message.get("type") == "next_node_idx" and message.get("success") and self.peer is not None:
            self.held.append(message)
            return False
        return True


def test_an_ack_held_for_the_flush_is_answered_at_receipt_with_a_promise_of_nothing(monkeypatch):
    seam = FakeSeam(term=3)
    node, _ = _node(monkeypatch, seam)
    node._disk = disk = _HoldingDisk()
    leader = Node("10.0.0.12:7100")
    ack = {"type": "next_node_idx", "term": 3, "next_node_idx": 8, "success": True, "reset": False}
    heartbeat = {"type": "append_entries", "term": 3, "hc_ts": 123.5, "entries": ["x"]}
    node.on_message(leader, heartbeat, lambda: node.on_send(dict(ack)))
    # the ack itself waits for the journal's flush; the leader hears the receipt at once:
    # its send time (the lease), and nothing pysyncobj would count (no success, no reset)
    assert disk.held == [{**ack, "hc_ts": 123.5}]
    assert seam.sent == [(leader.address, {**ack, "hc_ts": 123.5, "success": False, "reset": False,
                                              "hc_receipt": True})]
    # an ack sent at once (nothing to flush) needs no receipt
    seam.sent.clear()
    node._disk = _HoldingDisk()
    node.on_message(leader, {**heartbeat, "hc_ts": 124.0}, lambda: node.on_send({**ack, "success": False}))
    assert seam.sent == []


def test_a_receipt_extends_the_leaders_lease_as_an_ack_does_and_reaches_pysyncobj(monkeypatch):
    seam = FakeSeam(term=3, leader=True)
    node, clock = _node(monkeypatch, seam)
    node.leader_since = clock()
    sent_at = clock()
    clock.advance(0.03)
    receipt = {"type": "next_node_idx", "term": 3, "next_node_idx": 8, "success": False,
               "reset": False, "hc_ts": sent_at, "hc_receipt": True}
    delivered = []
    node.on_message(Node("10.0.0.12:7100"), receipt, lambda: delivered.append(True))
    assert node.lease_expiry == sent_at + node.lease_s  # one of two others: a majority of 3
    assert delivered == [True]  # pysyncobj notes the answer (its leader fallback timer)
