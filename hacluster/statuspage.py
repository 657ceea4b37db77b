"""The read-only status page (issue 7): one self-contained HTML page plus the JSON it polls,
served by the metrics listener (`/` and `/status.json`, see metrics.serve_metrics).

The page has no external assets (an isolated hospital network has no CDN) and builds its
DOM with textContent only, so a member name or an event text can never inject markup. Its
CSP forbids every fetch except `status.json` from the agent that served it.

status.json is built from the same snapshot functions as the admin API and the metrics.
Each part is read on its own: a provider that raises leaves that part null (the page says
"unavailable") and its error in `errors`, so one broken provider never blanks the others.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hacluster.events import Event
from hacluster.model import AgentStatus, BackendsStatus, MembersStatus

__all__ = ["EVENTS_SHOWN", "PAGE_HTML", "SCHEMA", "status_document", "status_pages"]

log = logging.getLogger("hacluster.statuspage")

SCHEMA = 1  # bump when a field the page reads changes meaning
EVENTS_SHOWN = 30
# Event fields that carry a measured switch, and what the page calls them.
_DURATIONS = (("handed_over_ms", "handover"), ("after_leader_ms", "claim after becoming leader"))


def _plain(value: Any) -> Any:
    """Model objects -> JSON-ready values: dataclasses to dicts, enums to their values,
    tuples to lists, non-finite floats to None (JSON has no NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _vips(status: AgentStatus) -> list[dict[str, Any]]:
    """Each VIP with its holder: this node when it holds it, else the leader as this agent
    sees it (a follower cannot see another host's addresses; the leader is who should)."""
    out = []
    for v in status.vips:
        d = _plain(v)
        if v.held:
            d["holder"], d["holder_seen"] = status.node, "held here"
        elif status.leader == status.node:  # the leader itself does not hold it: nobody should
            d["holder"], d["holder_seen"] = None, v.waiting or "not held by this leader"
        else:
            d["holder"], d["holder_seen"] = status.leader, "the leader, as this agent sees it"
        out.append(d)
    return out


def _event(ev: Event) -> dict[str, Any]:
    d = _plain(ev)
    d["duration_ms"], d["duration_what"] = None, None
    for key, what in _DURATIONS:
        try:
            ms = float(ev.fields.get(key, ""))
        except ValueError:
            continue
        if math.isfinite(ms):
            d["duration_ms"], d["duration_what"] = ms, what
            break
    return d


def status_document(status: AgentStatus | None, members: MembersStatus | None,
                    backends: BackendsStatus | None, events: Iterable[Event] | None, *,
                    errors: Mapping[str, str] | None = None,
                    now_unix_ms: float | None = None) -> dict[str, Any]:
    """The status.json document. A None part is null in the document (the page shows it as
    unavailable); `errors` says why, per part."""
    st: dict[str, Any] | None = None
    if status is not None:
        st = _plain(status)
        st["vips"] = _vips(status)
    return {
        "schema": SCHEMA,
        "generated_at_unix_ms": round(time.time() * 1000 if now_unix_ms is None else now_unix_ms, 1),
        "status": st,
        "members": None if members is None else _plain(members),
        "backends": None if backends is None else _plain(backends),
        # newest first: the page reads top down
        "events": None if events is None else [_event(e) for e in reversed(list(events))],
        "errors": dict(errors or {}),
    }


def status_pages(status: Callable[[], AgentStatus],
                 members: Callable[[], MembersStatus] | None = None,
                 backends: Callable[[], BackendsStatus] | None = None,
                 events: Callable[[], Iterable[Event]] | None = None,
                 ) -> dict[str, Callable[[], tuple[str, bytes]]]:
    """The routes for serve_metrics(pages=...): `/` the page, `/status.json` the document.
    Providers are called on the HTTP thread at each request, as the metrics collector is."""
    last_error: dict[str, str] = {}

    def read(name: str, fn: Callable[[], Any] | None, errors: dict[str, str]) -> Any:
        if fn is None:
            errors[name] = "not provided by this agent"
            return None
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - any provider failure: that part is unavailable
            errors[name] = f"{type(e).__name__}: {e}"
            if last_error.get(name) != errors[name]:  # once per distinct error, not per poll
                log.warning("status page: the %s part failed: %s", name, e, exc_info=True)
            last_error[name] = errors[name]
            return None
        last_error.pop(name, None)
        return value

    def document() -> tuple[str, bytes]:
        errors: dict[str, str] = {}
        parts = [read(name, fn, errors) for name, fn in
                 (("status", status), ("members", members), ("backends", backends), ("events", events))]
        doc = status_document(*parts, errors=errors)
        return "application/json", json.dumps(doc, separators=(",", ":")).encode()

    page = PAGE_HTML.encode()
    return {"/": lambda: ("text/html; charset=utf-8", page), "/status.json": document}


# The page. Keep it free of absolute URLs (the unit test refuses any) and of markup built
# from data: every value goes in through textContent.
PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; connect-src 'self';
 script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">
<title>hacluster status</title>
<style>
:root { --ok:#1a7f37; --warn:#b35900; --bad:#c40000; --off:#5c6670; --bg:#f6f7f9; --fg:#1b1f24; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
header { background:#1b2b3a; color:#fff; padding:10px 16px; display:flex; flex-wrap:wrap; gap:6px 24px;
  align-items:baseline; }
header h1 { font-size:18px; margin:0; }
header .kv b { font-weight:600; }
main { padding:12px 16px; display:grid; gap:12px;
  grid-template-columns:repeat(auto-fit, minmax(420px, 1fr)); }
section { background:#fff; border:1px solid #d0d7de; border-radius:6px; padding:8px 12px; }
section h2 { font-size:15px; margin:2px 0 8px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:3px 6px; border-bottom:1px solid #eaeef2; vertical-align:top; }
th { font-weight:600; color:#57606a; }
.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.banner { padding:10px 16px; font-weight:700; font-size:16px; }
#conn[data-state="unreachable"] { background:var(--bad); color:#fff; }
#conn[data-state="ok"] { display:none; }
#conn[data-state="loading"] { background:#ddd; }
#maintenance { background:repeating-linear-gradient(45deg,#ffd200,#ffd200 14px,#1b1f24 14px,#1b1f24 28px);
  color:#1b1f24; padding:6px; }
#maintenance span { background:#ffd200; display:block; padding:8px 12px; font-size:20px; }
#maintenance[hidden] { display:none; }
body.stale main, body.stale header { opacity:.45; }
.st { font-weight:700; white-space:nowrap; }
.st-ok { color:var(--ok); } .st-warn { color:var(--warn); } .st-bad { color:var(--bad); }
.st-off { color:var(--off); }
.na { color:var(--off); font-style:italic; }
.svc { margin-bottom:10px; }
.svc h3 { font-size:14px; margin:4px 0; }
.ev-failover td, .ev-leader td { font-weight:600; }
.dur { font-weight:700; color:#0550ae; white-space:nowrap; }
small { color:#57606a; }
</style>
</head>
<body>
<div id="conn" class="banner" data-state="loading" role="status">Loading status from the agent...</div>
<div id="maintenance" role="alert" hidden><span>MAINTENANCE MODE: the balancing table is frozen and
 there is no automatic handoff</span></div>
<header>
  <h1>hacluster <span id="cluster">?</span></h1>
  <span class="kv">this node <b id="node">?</b> (<span id="role">?</span>)</span>
  <span class="kv">leader <b id="leader" data-leader="">?</b></span>
  <span class="kv">term <b id="term">?</b></span>
  <span class="kv">lease <b id="lease">?</b></span>
  <span class="kv">quorum <b id="quorum">?</b></span>
  <span class="kv" id="sync-kv" hidden>connection sync <b id="sync">?</b></span>
  <span class="kv"><small id="updated"></small></span>
</header>
<main>
<section><h2>Virtual IPs</h2><div id="vips"></div><p id="sync-detail" hidden></p>
<p><small id="sentence"></small></p></section>
<section><h2>Members</h2><div id="members"></div></section>
<section><h2>Services and backends</h2><div id="services"></div></section>
<section><h2>Recent events</h2><div id="events"></div></section>
</main>
<script>
"use strict";
const POLL_MS = 2000, TIMEOUT_MS = 4000;
const STATES = {  // colour plus a symbol plus the word: readable without colour
  active: ["st-ok", "\\u25cf active"], draining: ["st-warn", "\\u25d0 draining"],
  disabled: ["st-off", "\\u25cb disabled"], down: ["st-bad", "\\u2716 down"],
  alive: ["st-ok", "\\u25cf alive"], suspect: ["st-warn", "\\u25d0 suspect"],
  dead: ["st-bad", "\\u2716 dead"], left: ["st-off", "\\u25cb left"]};
const SYNC = {ok: ["st-ok", "\\u25cf ok"], down: ["st-bad", "\\u2716 DOWN"], off: ["st-off", "\\u25cb off"]};
let lastOk = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, String(v));
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function fill(id, ...kids) { const e = document.getElementById(id); e.replaceChildren(...kids); return e; }
function text(id, value) { document.getElementById(id).textContent = value; }
function na(what) { return el("p", {class: "na"}, what + " unavailable"); }
function badge(state) {
  const [cls, label] = STATES[state] || ["st-off", "? " + state];
  return el("span", {class: "st " + cls, "data-state": state}, label);
}
function bytes(n) {
  if (n === null || n === undefined) return "\\u2013";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function count(n) { return n === null || n === undefined ? "\\u2013" : n.toLocaleString("en"); }
function ms(v) { return v < 1000 ? v.toFixed(0) + " ms" : (v / 1000).toFixed(2) + " s"; }
function when(unixMs) { return new Date(unixMs).toLocaleTimeString("en-GB"); }
function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map(h => el("th", {}, h)))),
            el("tbody", {}, ...rows));
}

// The connection-state sync (conntrackd) of this agent; hidden for a status without it.
function renderSync(sync) {
  document.getElementById("sync-kv").hidden = !sync;
  const p = document.getElementById("sync-detail");
  p.hidden = !sync;
  if (!sync) return;
  const [cls, label] = SYNC[sync.state] || ["st-off", "? " + sync.state];
  fill("sync", el("span", {class: "st " + cls, "data-sync": sync.state}, label));
  const more = [];
  if (sync.restarts) more.push("restarted " + sync.restarts + (sync.restarts === 1 ? " time" : " times"));
  if (sync.last_commit_ms != null) more.push("last claim's commit took " + ms(sync.last_commit_ms));
  const why = [sync.detail, more.join(", ")].filter(x => x).join("; ");
  p.replaceChildren(el("small", {}, "connection sync: ", el("span", {class: "st " + cls}, label),
    why ? " (" + why + ")" : "",
    sync.state === "down" ? " \\u2014 established flows through the VIP will break when it moves" : ""));
}

function renderStatus(st, err) {
  if (!st) {
    for (const id of ["cluster", "node", "role", "leader", "term", "lease", "quorum"]) {
      text(id, "unavailable");
    }
    fill("vips", na("agent status (" + (err || "no data") + ")"));
    document.getElementById("maintenance").hidden = true;
    renderSync(null);
    return;
  }
  text("cluster", st.cluster); text("node", st.node); text("role", st.role);
  const leader = fill("leader", st.leader || "none (no leader)");
  leader.dataset.leader = st.leader || "";
  text("term", st.term);
  text("lease", st.lease_ok ? "ok, " + ms(st.lease_remaining_ms) + " left"
                            : (st.role === "leader" ? "NOT VALID" : "not held (follower)"));
  text("quorum", st.has_quorum ? "yes" : "NO");
  document.getElementById("maintenance").hidden = !st.maintenance;
  text("sentence", st.sentence);
  renderSync(st.connection_sync);
  document.title = "hacluster " + st.cluster + " \\u00b7 " + st.node +
    (st.maintenance ? " \\u00b7 MAINTENANCE" : "");
  fill("vips", st.vips.length ? table(["VIP", "held by this agent", "holder"], st.vips.map(v =>
    el("tr", {"data-vip": v.address, "data-holder": v.holder || "", "data-held": v.held},
       el("td", {}, v.address + "/" + v.prefixlen + " on " + v.interface),
       el("td", {}, v.held ? el("span", {class: "st st-ok"}, "\\u25cf yes")
                           : el("span", {class: "st st-off"}, "\\u25cb no")),
       el("td", {}, el("b", {}, v.holder || "nobody"), " ", el("small", {}, v.holder_seen))))) :
    el("p", {class: "na"}, "no VIPs configured"));
}

function renderMembers(ms_, err) {
  if (!ms_) { fill("members", na("gossip members (" + (err || "no data") + ")")); return; }
  fill("members", table(["member", "gossip", "raft role", "checks", "draining", "address"],
    ms_.members.map(m => el("tr",
      {"data-member": m.id, "data-gossip": m.state, "data-raft-role": m.raft_role},
      el("td", {}, el("b", {}, m.id), m.is_self ? " (this agent)" : ""), el("td", {}, badge(m.state)),
      el("td", {}, m.raft_role),
      el("td", {class: m.checks_passing < m.checks_total ? "st st-bad" : ""},
         m.checks_passing + "/" + m.checks_total + " passing"),
      el("td", {}, m.draining ? el("span", {class: "st st-warn"}, "\\u25d0 draining") : "no"),
      el("td", {}, el("small", {}, m.address))))));
}

function renderServices(bs, err) {
  if (!bs) { fill("services", na("balancing table (" + (err || "no data") + ")")); return; }
  const head = el("p", {}, el("small", {}, "table generation " + bs.table_generation + ", applied here " +
    (bs.applied_generation ?? "\\u2013") + ", data plane " + bs.dataplane));
  if (!bs.services.length) {
    fill("services", head, el("p", {class: "na"}, "no services configured"));
    return;
  }
  fill("services", head, ...bs.services.map(s => {
    const rows = s.backends.map(b => row(b, "backend"));
    if (s.fallback) rows.push(row(s.fallback, "fallback"));
    return el("div", {class: "svc", "data-service": s.name},
      el("h3", {}, s.name + "  ", el("small", {}, s.vip + " " + s.protocol + "/" + s.ports.join(",") +
                                                    ", " + s.algorithm)),
      table(["backend", "state", "address", "weight", "packets", "bytes"], rows));
  }));
  function row(b, role) {
    return el("tr", {"data-backend": b.id, "data-state": b.state, "data-role": role},
      el("td", {}, b.id + (role === "fallback" ? " (fallback)" : "")), el("td", {}, badge(b.state)),
      el("td", {}, b.port ? b.address + ":" + b.port : b.address + " (service port)"),
      el("td", {class: "num"}, b.weight),
      el("td", {class: "num"}, count(b.packets)), el("td", {class: "num"}, bytes(b.bytes)));
  }
}

function renderEvents(evs, err) {
  if (!evs) { fill("events", na("event timeline (" + (err || "no data") + ")")); return; }
  if (!evs.length) { fill("events", el("p", {class: "na"}, "no events yet")); return; }
  fill("events", table(["time", "kind", "what", "took"], evs.map(e =>
    el("tr", {class: "ev-" + e.kind, "data-seq": e.seq, "data-kind": e.kind},
       el("td", {}, when(e.at_unix_ms)), el("td", {}, e.kind), el("td", {}, e.text),
       el("td", {}, e.duration_ms === null ? "" :
         el("span", {class: "dur", "data-duration-ms": e.duration_ms, title: e.duration_what},
            ms(e.duration_ms) + " " + (e.duration_what === "handover" ? "handover" : "to claim")))))));
}

function render(doc) {
  const err = doc.errors || {};
  renderStatus(doc.status, err.status); renderMembers(doc.members, err.members);
  renderServices(doc.backends, err.backends); renderEvents(doc.events, err.events);
}

function setConn(ok, why) {
  const c = document.getElementById("conn");
  c.dataset.state = ok ? "ok" : "unreachable";
  document.body.classList.toggle("stale", !ok);
  if (!ok) c.textContent = "CANNOT REACH THE AGENT at " + location.host + " (" + why + "). " +
    (lastOk ? "What is shown below is from " + when(lastOk) + " and may be wrong." : "Nothing loaded yet.");
}

async function poll() {
  const ctl = new AbortController(), timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const r = await fetch("status.json", {cache: "no-store", signal: ctl.signal});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    lastOk = Date.now();
    setConn(true);
    text("updated", "updated " + when(lastOk));
  } catch (e) {
    setConn(false, e.name === "AbortError" ? "no answer in " + TIMEOUT_MS / 1000 + " s" : e.message);
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}
poll();
</script>
</body>
</html>
"""
