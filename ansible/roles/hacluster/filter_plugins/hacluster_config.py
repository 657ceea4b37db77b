"""Reload or restart: which changed keys of the agent's config need a restart.

    {{ old_config_text | hacluster_restart_keys(new_config_text) }}  -> ['tls.cert_file', 'members']

The agent's reload (systemctl reload, `hacluster reload`; hacluster/reload.py) applies the
services (their backends, weights, algorithms), the checks, the log level and format, the
metrics listener and the health timings live, and refuses the whole reload when anything
else changed. The role reloads only when this filter finds nothing else, and restarts (one
server at a time) otherwise. It errs towards a restart: it is a whitelist of the keys the
agent's reload takes, at the file's level, and any other key, a key it does not know, or a
file it cannot parse counts as a restart key. Members count too: the role changes the member
list by the planned procedure of docs/deploy.md (a reload ignores other members).
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
        elif key == "services" and bool(before) != bool(after):
            keys.append("services")  # none to some (or back): the data plane is built at start
        elif key not in LIVE_KEYS:
            keys.append(str(key))
    return keys


class FilterModule:
    def filters(self):
        return {"hacluster_restart_keys": hacluster_restart_keys}
