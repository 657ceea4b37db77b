"""RaftNode satisfies consensus.protocol.Consensus, member by member and signature by signature;
the unit tests' FakeRaft offers every member too (so a fake cannot drift from the contract)."""

from __future__ import annotations

import inspect

from hacluster.consensus.protocol import Consensus
from hacluster.consensus.raft import RaftNode
from tests.support.config import config


def _members() -> tuple[list[str], list[str], list[str]]:
    methods = [n for n, v in vars(Consensus).items()
               if not n.startswith("_") and inspect.isfunction(v)]
    properties = [n for n, v in vars(Consensus).items() if isinstance(v, property)]
    attributes = list(Consensus.__annotations__)
    return methods, properties, attributes


def test_the_protocol_names_what_the_agent_uses():
    methods, properties, attributes = _members()
    assert sorted(methods) == ["agent_alive", "caught_up", "lease_deadline", "lease_ok_now",
                               "register_epoch", "start", "stop", "submit",
                               "transfer_leadership", "view"]
    assert properties == ["state"] and attributes == ["silent_before_leading"]


def test_raft_node_has_every_method_with_the_same_parameters():
    methods, _, _ = _members()
    for name in methods:
        ours = inspect.signature(getattr(RaftNode, name))
        contract = inspect.signature(getattr(Consensus, name))
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in contract.parameters.values()], name
        assert str(ours.return_annotation) == str(contract.return_annotation), name


def test_raft_node_has_the_state_property_and_the_attribute():
    _, properties, attributes = _members()
    for name in properties:
        assert isinstance(inspect.getattr_static(RaftNode, name), property), name
    node = RaftNode(config(), "s" * 32)
    for name in attributes:
        assert name in vars(node), name
    assert node.silent_before_leading is None  # until it first leads


def test_the_fake_raft_of_the_tests_offers_every_member():
    from tests.support.raft import FakeRaft

    methods, properties, attributes = _members()
    fake = FakeRaft()
    for name in methods:
        params = list(inspect.signature(getattr(fake, name)).parameters)
        contract = [p for p in inspect.signature(getattr(Consensus, name)).parameters if p != "self"]
        assert params == contract, name
    for name in properties + attributes:
        assert hasattr(fake, name), name
