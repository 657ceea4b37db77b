#!/usr/bin/env bash
# Generates the man pages (help2man, from --help) and the bash completion (click's) of the
# hacluster commands:
#
#   scripts/gen-docs.sh OUT VERSION PYTHON
#
# writes OUT/man1/hacluster.1.gz, OUT/man8/hacluster-agent.8.gz and OUT/completions/hacluster,
# running the commands as `PYTHON -m hacluster_cli.main` and `PYTHON -m hacluster.daemon`
# (PYTHON: a venv with hacluster installed, or any Python with its dependencies plus
# PYTHONPATH=SRC:SRC/cli). Used by scripts/build-deb.sh and, on the controller, by the
# Ansible role for installs from the wheelhouse.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 OUT VERSION PYTHON" >&2; exit 2; }
OUT=$1 VERSION=$2 PY=$3
HERE=$(cd "$(dirname "$0")" && pwd)
command -v help2man >/dev/null || { echo "gen-docs: help2man is missing (apt install help2man)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/hacluster-docs.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# help2man runs a program by path: one wrapper per command, named as the command.
for cmd in hacluster:hacluster_cli.main hacluster-agent:hacluster.daemon; do
  printf '#!/bin/sh\nPYTHONDONTWRITEBYTECODE=1 exec %q -m %s "$@"\n' "$PY" "${cmd#*:}" > "$TMP/${cmd%%:*}"
  chmod 755 "$TMP/${cmd%%:*}"
done
mkdir -p "$OUT/man1" "$OUT/man8" "$OUT/completions"
help2man --no-info --no-discard-stderr --section 1 --name "operate a hacluster HA and load balancing cluster" \
  --version-string "$VERSION" --include "$HERE/man/hacluster.h2m" --output "$TMP/hacluster.1" "$TMP/hacluster"
help2man --no-info --section 8 --name "the hacluster agent: virtual IPs, health checks, load balancing" \
  --version-string "$VERSION" --include "$HERE/man/hacluster-agent.h2m" --output "$TMP/hacluster-agent.8" \
  "$TMP/hacluster-agent"
gzip -9n < "$TMP/hacluster.1" > "$OUT/man1/hacluster.1.gz"
gzip -9n < "$TMP/hacluster-agent.8" > "$OUT/man8/hacluster-agent.8.gz"
_HACLUSTER_COMPLETE=bash_source "$TMP/hacluster" > "$TMP/completion"
grep -q '_hacluster_completion' "$TMP/completion" || { echo "gen-docs: the completion script looks wrong" >&2; exit 1; }
cp "$TMP/completion" "$OUT/completions/hacluster"
