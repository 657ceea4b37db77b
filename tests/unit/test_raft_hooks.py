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
