#!/usr/bin/env bash
# The demo: installs what is missing, builds a 3-server lab in network namespaces, shows
# `hacluster status`, sends client traffic through the VIP, pulls the leader's cable and
# prints who served before and after and the outage the client saw; then tears down.
# Run as root on Debian 12:  sudo bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "demo: run as root (it builds network namespaces)" >&2; exit 2; fi
bash scripts/setup.sh
exec .venv/bin/hacluster lab demo "$@"
