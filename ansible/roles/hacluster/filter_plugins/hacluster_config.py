"""Reload or restart: which changed keys of the agent's config need a restart.

    {{ old_config_text | hacluster_restart_keys(new_config_text) }}  -> ['tls.cert_file', 'members']

The agent's reload (systemctl reload, `hacluster reload`; hacluster/reload.py) applies the
services (their backends, weights, algorithms), the checks, the log level and format, the
metrics listener and the health timings live, and refuses the whole reload when anything
else changed. The role reloads only when this filter finds nothing else, and restarts (one
server at a time) otherwise. It errs towards a restart: it is a whitelist of the keys the
agent's reload takes, at the file's level, and any other key, a key it does not know, or a
file it cannot parse counts as a restart key.

Members: membership lives in the cluster (Raft, `hacluster members add/remove`; the file only
seeds a new cluster), so the agent's reload ignores the other members' entries, and so does
this filter. This server's own entry (its address and ports, which its listeners are bound
to at start-up) is a restart key, as in the agent's plan (hacluster/reload.py).
"""

from __future__ import annotations

import yaml

# Top-level keys the agent's reload applies live.
LIVE_KEYS = frozenset({"services", "checks", "log_level", "log_format", "metrics", "health"})
# Within tls, the CLI's certificate: the agent does not use it.
LIVE_TLS_KEYS = frozenset({"cli_cert_file", "cli_key_file"})


def _parse(text):
    try:
        doc = yaml.safe_load(text or "")
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) else None


def _own_entry(doc):
    """(address, raft_port, grpc_port) of this server's member entry, or None."""
    for m in doc.get("members") or []:
        if isinstance(m, dict) and m.get("id") == doc.get("node_id"):
            return (m.get("address"), m.get("raft_port"), m.get("grpc_port"))
    return None


def hacluster_restart_keys(old_text, new_text):
    """The sorted keys ('tls.cert_file', 'members', ...) whose change needs a restart; [] when
    a reload applies every change (or nothing changed). ['(unreadable)'] when either text is
    not a YAML mapping."""
    old, new = _parse(old_text), _parse(new_text)
    if old is None or new is None:
        return ["(unreadable)"]
    keys = []
    for key in sorted(set(old) | set(new), key=str):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if key == "tls" and isinstance(before, dict) and isinstance(after, dict):
            keys += [f"tls.{k}" for k in sorted(set(before) | set(after), key=str)
                     if before.get(k) != after.get(k) and k not in LIVE_TLS_KEYS]
        elif key == "members":
            if _own_entry(old) != _own_entry(new):
                keys.append("members")  # this server's own address or ports
        elif key == "services" and bool(before) != bool(after):
            keys.append("services")  # none to some (or back): the data plane is built at start
        elif key not in LIVE_KEYS:
            keys.append(str(key))
    return keys


class FilterModule:
    def filters(self):
        return {"hacluster_restart_keys": hacluster_restart_keys}
