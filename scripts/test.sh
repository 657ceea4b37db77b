#!/usr/bin/env bash
# The test suite: installs what is missing, checks style, runs the unit tests and the lab
# tests (real clusters in network namespaces). Run as root on Debian 12:
#   sudo bash scripts/test.sh            # everything
#   sudo bash scripts/test.sh tests/unit # a subset: any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "test: run as root (lab tests build network namespaces)" >&2; exit 2; fi
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== ansible-lint (production profile: the role, the playbooks, the Vagrant lab's)"
ANSIBLE_CONFIG=ansible/ansible.cfg .venv/bin/ansible-lint -q
echo "== pytest"
before=$(ip netns list | sort)
root_table_before=$(nft list table inet hacluster >/dev/null 2>&1 && echo yes || echo no)
status=0
.venv/bin/python -m pytest -p no:cacheprovider -q --durations=15 "${@:-tests}" || status=$?
after=$(ip netns list | sort)
# Only the suite's own prefixes: other labs (a benchmark, an operator's lab) may coexist.
leaked=$(comm -13 <(echo "$before") <(echo "$after") | grep -E '^(t[0-9a-f]{6}|c[0-9a-f]{6}|hct[0-9a-f]+|(dh|dp|rg|sx)[0-9a-f]{6})-' || true)
if [ -n "$leaked" ]; then
  echo "test: namespaces left behind by the suite:" >&2; echo "$leaked" >&2; status=1
fi
# The agent's ruleset lives in the labs' namespaces only: none may appear in this one.
if [ "$root_table_before" = no ] && nft list table inet hacluster >/dev/null 2>&1; then
  echo "test: the suite left 'table inet hacluster' in the root namespace" >&2; status=1
fi
exit $status
