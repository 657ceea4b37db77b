"""The leader's table builder and the table's Raft form."""

from hacluster.dataplane.build import build_table
from hacluster.dataplane.spec import ServiceSpec
from hacluster.dataplane.table import BackendState, table_from_doc, table_to_doc

SVC = ServiceSpec.model_validate({
    "name": "web", "vip": "10.0.0.100", "ports": [80, 443], "backend_port": 8080, "check": "web",
    "algorithm": "weighted",
    "backends": [{"node": "n1"}, {"node": "n2", "weight": 2}, {"node": "n3"},
                 {"address": "10.0.0.50", "weight": 3}],
    "fallback": {"address": "10.0.0.60"}})
ADDRS = {"n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13"}


def states(table):
    return {b.id: b.state for b in table.services[0].backends}


def test_health_and_admin_states_make_the_backend_states():
    t = build_table([SVC], ADDRS, {"n1/web": True, "n2/web": False},
                    {"draining/n3": "true", "backend/web/10.0.0.50:8080": "disabled"}, 7)
    assert t.generation == 7
    assert states(t) == {"n1": BackendState.ACTIVE, "n2": BackendState.DOWN,
                         "n3": BackendState.DRAINING, "10.0.0.50:8080": BackendState.DISABLED}
    b = {b.id: b for b in t.services[0].backends}
    assert (b["n2"].address, b["n2"].port, b["n2"].weight) == ("10.0.0.12", 8080, 2)
    assert t.services[0].fallback.address == "10.0.0.60"


def test_no_verdict_yet_counts_as_active_and_weights_can_be_overridden():
    t = build_table([SVC], ADDRS, {}, {"weight/web/n1": "5", "weight/web/n2": "0"}, 1)
    assert set(states(t).values()) == {BackendState.ACTIVE}
    b = {b.id: b for b in t.services[0].backends}
    assert b["n1"].weight == 5 and b["n2"].weight == 2  # 0 is not a valid weight: ignored


def test_the_raft_form_round_trips():
    t = build_table([SVC], ADDRS, {"n2/web": False}, {}, 3)
    assert table_from_doc(table_to_doc(t)) == t


def test_an_external_host_is_down_when_most_members_verdicts_say_so():
    ext = "10.0.0.50:8080"

    def ext_state(**votes):
        health = {f"{n}/web@10.0.0.50": up for n, up in votes.items()}
        return states(build_table([SVC], ADDRS, health, {}, 1))[ext]
    assert ext_state() is BackendState.ACTIVE  # no verdict yet
    assert ext_state(n1=False) is BackendState.DOWN  # the only verdict
    assert ext_state(n1=False, n2=True, n3=True) is BackendState.ACTIVE  # one member's view
    assert ext_state(n1=False, n2=False, n3=True) is BackendState.DOWN
    assert ext_state(n1=False, n2=True) is BackendState.ACTIVE  # a tie keeps it
    # another check's or another host's verdicts do not count
    t = build_table([SVC], ADDRS, {"n1/web@10.0.0.51": False, "n1/db@10.0.0.50": False}, {}, 1)
    assert states(t)[ext] is BackendState.ACTIVE


def test_snat_address_reaches_the_table_and_its_raft_form():
    svc = SVC.model_copy(update={"snat_address": "10.0.1.100"})
    t = build_table([svc, SVC.model_copy(update={"name": "gw", "snat": False})], ADDRS, {}, {}, 2)
    assert [s.snat_to for s in t.services] == ["10.0.1.100", None]
    assert t.services[0].snat_address == "10.0.1.100"
    assert table_from_doc(table_to_doc(t)) == t
    # The default: the VIP itself.
    assert build_table([SVC], ADDRS, {}, {}, 1).services[0].snat_to == "10.0.0.100"


def test_a_table_committed_before_snat_address_existed_still_reads():
    doc = table_to_doc(build_table([SVC], ADDRS, {}, {}, 4))
    del doc["services"][0]["snat_address"]  # as an older leader wrote it
    t = table_from_doc(doc)
    assert t.services[0].snat_address is None and t.services[0].snat_to == "10.0.0.100"
