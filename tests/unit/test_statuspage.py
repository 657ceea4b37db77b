"""hacluster.statuspage: status.json from fake model objects, a failing provider leaving only
its part out, and the page served self-contained by the metrics listener."""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from hacluster.events import EventLog
from hacluster.listener import MetricsServer, serve_metrics
from hacluster.metrics import AgentCollector
from hacluster.model import MembersStatus, Role
from hacluster.statuspage import PAGE_HTML, status_document, status_pages

from .test_admin import SYNC_DOWN
from .test_metrics import BACKENDS, MEMBERS, STATUS, _get

FOLLOWER = dataclasses.replace(STATUS, node="n2", role=Role.FOLLOWER, lease_ok=False,
                               vips=tuple(dataclasses.replace(v, held=False) for v in STATUS.vips))


def _events() -> EventLog:
    log = EventLog("n1", wall=lambda: 1_700_000_000.0)
    log.add("leader", "n1 leads (term 7, by transfer)", term=7, by_transfer=True)
    log.add("vip", "claimed 10.99.0.100 12 ms after becoming leader", vip="10.99.0.100",
            after_leader_ms=12.4, term=7, by_transfer=True)
    log.add("failover", "n2 handed leadership and 10.99.0.100 to n1 in 180 ms", source="n2",
            target="n1", handed_over_ms=180.2)
    log.add("vip", "claimed 10.99.0.101", vip="10.99.0.101", after_leader_ms="", term=7)
    return log


def test_document_from_model_objects_is_plain_json() -> None:
    doc = status_document(STATUS, MEMBERS, BACKENDS, _events().after(0), now_unix_ms=1.0)
    assert json.loads(json.dumps(doc)) == doc  # nothing but JSON types
    st = doc["status"]
    assert (st["node"], st["cluster"], st["role"], st["leader"]) == ("n1", "lab", "leader", "n1")
    assert doc["errors"] == {} and doc["generated_at_unix_ms"] == 1.0
    vips = {v["address"]: v for v in st["vips"]}
    assert vips["10.99.0.100"]["held"] and vips["10.99.0.100"]["holder"] == "n1"
    assert vips["10.99.0.100"]["holder_seen"] == "held here"
    assert vips["10.99.0.101"]["holder"] is None  # the leader itself does not hold it
    assert [m["state"] for m in doc["members"]["members"]] == ["alive", "alive", "suspect"]
    pacs = doc["backends"]["services"][0]
    assert [(b["id"], b["state"], b["packets"]) for b in pacs["backends"]] == [
        ("n1", "active", 120), ("n2", "down", 0), ("n3", "draining", None)]
    assert pacs["fallback"]["bytes"] == 420 and pacs["ports"] == [104]


def test_events_newest_first_with_failover_durations() -> None:
    evs = status_document(STATUS, None, None, _events().after(0))["events"]
    assert [e["seq"] for e in evs] == [4, 3, 2, 1]
    took = {e["seq"]: (e["duration_ms"], e["duration_what"]) for e in evs}
    assert took == {4: (None, None), 3: (180.2, "handover"), 2: (12.4, "claim after becoming leader"),
                    1: (None, None)}
    assert evs[1]["fields"]["target"] == "n1" and evs[1]["at_unix_ms"] == 1_700_000_000_000.0


def test_a_follower_names_the_leader_as_holder() -> None:
    vips = status_document(FOLLOWER, None, None, None)["status"]["vips"]
    assert all(not v["held"] and v["holder"] == "n1" for v in vips)
    assert vips[0]["holder_seen"] == "the leader, as this agent sees it"
    no_leader = dataclasses.replace(FOLLOWER, leader=None)
    assert status_document(no_leader, None, None, None)["status"]["vips"][0]["holder"] is None


def test_the_connection_sync_is_in_the_document_and_on_the_page() -> None:
    st = status_document(dataclasses.replace(STATUS, connection_sync=SYNC_DOWN), None, None, None)["status"]
    assert st["connection_sync"] == {"state": "down", "detail": SYNC_DOWN.detail, "restarts": 3,
                                     "last_commit_ms": None}
    assert status_document(STATUS, None, None, None)["status"]["connection_sync"] is None  # page hides it
    for hook in ('id="sync-kv"', 'id="sync"', 'id="sync-detail"', "renderSync(st.connection_sync)",
                 '"data-sync"', "established flows through the VIP will break when it moves"):
        assert hook in PAGE_HTML, hook


def test_missing_parts_are_null() -> None:
    doc = status_document(None, None, None, None)
    assert (doc["status"], doc["members"], doc["backends"], doc["events"]) == (None, None, None, None)


def test_a_failing_provider_nulls_only_its_part() -> None:
    def broken() -> MembersStatus:
        raise RuntimeError("gossip is down")

    pages = status_pages(lambda: STATUS, broken, lambda: BACKENDS, None)
    ctype, body = pages["/status.json"]()
    doc = json.loads(body)
    assert ctype == "application/json"
    assert doc["members"] is None and doc["status"]["node"] == "n1" and doc["backends"] is not None
    assert doc["errors"] == {"members": "RuntimeError: gossip is down",
                             "events": "not provided by this agent"}


def test_the_page_is_self_contained() -> None:
    for forbidden in ("http://", "https://", "<script src", "<link", "@import", "url(", "<img", "<iframe"):
        assert forbidden not in PAGE_HTML.lower(), forbidden
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", PAGE_HTML), "protocol-relative reference"
    assert 'fetch("status.json"' in PAGE_HTML
    for hook in ('id="leader"', 'id="vips"', 'id="members"', 'id="services"', 'id="events"',
                 'id="maintenance"', 'id="conn"', '"data-vip"', '"data-holder"', '"data-backend"'):
        assert hook in PAGE_HTML, hook


# ------------------------------------------------------------------ served


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: STATUS))
    log = _events()
    srv = serve_metrics("127.0.0.1:0", registry, status_pages(
        lambda: STATUS, lambda: MEMBERS, lambda: BACKENDS, lambda: log.after(0, 30)))
    yield srv
    srv.stop()


def test_the_listener_serves_the_page_the_json_and_still_the_metrics(server: MetricsServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    status, ctype, body = _get(base + "/")
    assert status == 200 and ctype == "text/html; charset=utf-8" and body == PAGE_HTML
    assert "http://" not in body and "https://" not in body and "<script src" not in body
    status, ctype, body = _get(base + "/status.json")
    assert status == 200 and ctype == "application/json"
    doc = json.loads(body)
    assert doc["status"]["leader"] == "n1" and len(doc["events"]) == 4
    status, _, body = _get(base + "/metrics")
    assert status == 200 and "hacluster_leader 1.0" in body
    assert _get(base + "/status.json/x")[0] == 404


def test_pages_are_not_cached_and_a_broken_page_is_a_500() -> None:
    def boom() -> tuple[str, bytes]:
        raise RuntimeError("nope")

    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: STATUS))
    srv = serve_metrics("127.0.0.1:0", registry, {"/status.json": lambda: ("application/json", b"{}"),
                                                  "/boom": boom})
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{srv.port}/status.json", timeout=5) as r:
            assert r.headers["Cache-Control"] == "no-store"
        assert _get(f"http://127.0.0.1:{srv.port}/boom")[0] == 500
        assert _get(f"http://127.0.0.1:{srv.port}/metrics")[0] == 200
        status, ctype, body = _get(f"http://127.0.0.1:{srv.port}/")  # no "/" page: the pointer stays
        assert status == 200 and "/metrics" in body and ctype.startswith("text/plain")
    finally:
        srv.stop()
