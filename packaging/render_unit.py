"""Render the Ansible role's systemd unit template with the role's defaults, for the .deb.

One unit for both installs: scripts/build-deb.sh ships what the role would write on a
server with the default variables (/opt/hacluster, /etc/hacluster, /var/lib/hacluster, the
user hacluster, no checks user). Like Ansible's template module: trim_blocks, and the one
Ansible filter the template uses (regex_replace).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jinja2

DEFAULTS = {
    "ansible_managed": "Installed by the hacluster package; an Ansible-managed copy in "
                       "/etc/systemd/system overrides it",
    "hacluster_service_name": "hacluster-agent",
    "hacluster_install_dir": "/opt/hacluster",
    "hacluster_config_dir": "/etc/hacluster",
    "hacluster_data_dir": "/var/lib/hacluster",
    "hacluster_system_user": "hacluster",
    "hacluster_system_group": "hacluster",
    "hacluster_checks_user": "",
}


def render(template: Path, variables: dict[str, str] = DEFAULTS) -> str:
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda value, pattern, repl="": re.sub(pattern, repl, str(value))
    return env.from_string(template.read_text()).render(**variables)


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1])))
