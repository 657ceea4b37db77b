"""Names that gossip carries are names (issue 15, finding 5): a check's name becomes half of
a committed health key ("node/check"), so one with '/', control characters or a page of
text is refused at the wire, before any engine or verdict sees it."""

from __future__ import annotations

import pytest

from hacluster.api import gossip_pb2 as pb
from hacluster.dataplane.spec import external_check_name
from hacluster.gossip import wire
from hacluster.gossip.membership import Membership
from hacluster.gossip.types import GossipState, NodeRecord
from hacluster.ha.verdicts import Observed, VerdictTracker
from hacluster.health import spec
from tests.support.clock import FakeClock
from tests.support.gossip_net import NullTransport, address

ALIVE = GossipState.ALIVE


BAD_NAMES = ["web/primary", "web\x1b[2J", "web\n", "x" * 64, "-web", "w b", "wéb", ".."]


def _record_with_check(name: str, kind: str = "tcp", version: str = "1.0") -> pb.NodeRecord:
    return pb.NodeRecord(node="n2", address="a:2", incarnation=1, state=pb.GOSSIP_STATE_ALIVE,
                         meta_seq=1, meta=pb.NodeMeta(version=version, checks=[
                             pb.CheckReport(name=name, kind=kind, state=pb.CHECK_STATE_PASSING)]))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_check_name_is_refused_before_it_becomes_a_health_key(name):
    decoded = wire.records_from_pb([_record_with_check(name)], "updates")
    # the record's state stays (it may be a refutation); its meta does not
    assert decoded.records == (NodeRecord("n2", "a:2", 1, ALIVE, "", 0, None),)
    assert "name" in decoded.problems[0] and "(meta dropped)" in decoded.problems[0]
    m = Membership("n1", address("n1"), {"n2": address("n2")}, NullTransport(), clock=FakeClock())
    m.handle_gossip("n2", decoded.records)
    view = m.member("n2")
    keys = VerdictTracker(("web",), settle=0.0).changes(
        0.0, [Observed("n2", view.state, view.meta)], {"n2/web": True})
    assert all(k == "n2/web" for k in keys)


@pytest.mark.parametrize("kind, version", [("tcp\x1b]0;x\x07", "1.0"), ("tcp", "1.0\x1b[2J"),
                                           ("tcp", "v" * 64)])
def test_other_texts_that_name_things_are_refused_too(kind, version):
    decoded = wire.records_from_pb([_record_with_check("web", kind, version)], "updates")
    assert decoded.records[0].meta is None and decoded.problems


def test_good_names_pass_and_the_wire_takes_exactly_the_names_the_config_takes():
    samples = ["web", "pacs-echo", "hl7.adt_1", "A", "9", "x" * 63, "", *BAD_NAMES]
    for name in samples:
        try:
            spec.TcpCheck(kind="tcp", name=name, port=80)
            config_ok = True
        except ValueError:
            config_ok = False
        decoded = wire.records_from_pb([_record_with_check(name)], "updates")
        wire_ok = decoded.records[0].meta is not None
        assert wire_ok is config_ok, name


@pytest.mark.parametrize("name, ok", [
    (external_check_name("web", "10.0.0.50"), True),
    (external_check_name("x" * 47, "192.168.100.200"), True),  # 63 characters
    ("web@10.0.0", False), ("web@host.example", False), ("web@10.0.0.5/24", False),
    ("web@@10.0.0.5", False), ("@10.0.0.5", False), ("web@10.0.0.5@10.0.0.6", False),
    ("web@١٠.0.0.5", False),  # other scripts' digits
])
def test_checks_derived_for_external_hosts_pass_and_nothing_else_with_an_at(name, ok):
    decoded = wire.records_from_pb([_record_with_check(name)], "updates")
    assert (decoded.records[0].meta is not None) is ok, name


def test_a_kind_is_a_plain_name():
    decoded = wire.records_from_pb([_record_with_check("web", kind="tcp@10.0.0.5")], "updates")
    assert decoded.records[0].meta is None
