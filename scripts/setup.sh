#!/usr/bin/env bash
# Installs what hacluster needs on a fresh Debian 12 machine (run as root), idempotently:
# apt packages for the data plane and the lab, and a virtualenv in .venv with the project
# and its test tools. Safe to run again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PKGS=(nftables conntrack conntrackd iproute2 arping tcpdump python3-venv python3-dev procps psmisc curl
          chromium  # chromium: the status page test renders the page headless
          # the Ansible rollout test: sshd in the lab's server namespaces, reached through
          # the client namespace with nc; python3-apt for the role's apt task on the servers
          openssh-server openssh-client netcat-openbsd python3-apt
          # the Debian package (scripts/build-deb.sh, its test) and the role's man pages:
          # dpkg-shlibdeps and strip, help2man, lintian
          dpkg-dev binutils help2man lintian)
# `vagrant validate` of the Vagrant lab (no VM boots here): the libvirt provider plugin
# validates its block; without --no-install-recommends they pull in qemu, libguestfs, NFS.
APT_NORECOMMENDS=(vagrant vagrant-libvirt)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
missing_nr=()
for p in "${APT_NORECOMMENDS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_nr+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ "${#missing_nr[@]}" -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]} ${missing_nr[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Installing openssh-server must not start an sshd on this machine (the tests start their
  # own, inside lab namespaces): a temporary policy-rc.d forbids service starts.
  policy=/usr/sbin/policy-rc.d; own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1
  fi
  trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  [ "${#missing[@]}" -eq 0 ] || apt-get install -y -qq "${missing[@]}" >/dev/null
  [ "${#missing_nr[@]}" -eq 0 ] || apt-get install -y -qq --no-install-recommends "${missing_nr[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
  trap - EXIT
fi
# keepalived is optional: the benchmark compares against it when present.
if [ "${HACLUSTER_WITH_PEERS:-0}" = 1 ] && ! command -v keepalived >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq keepalived >/dev/null || true
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtualenv .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.hacluster-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv"
  log=$(mktemp)
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev]'; } >"$log" 2>&1; then
    cat "$log" >&2; echo "setup: pip install failed (log above)" >&2; exit 1
  fi
  rm -f "$log"
  touch "$stamp"
fi
# promtool checks the metrics exposition in the tests: only that binary, unpacked from
# Debian's prometheus package into .venv/bin (the package would also install and start a
# Prometheus server).
if [ ! -x .venv/bin/promtool ] && ! command -v promtool >/dev/null; then
  echo "setup: unpacking promtool from Debian's prometheus package into .venv/bin"
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -qq && (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1)
  fi
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/promtool > .venv/bin/promtool
  chmod 755 .venv/bin/promtool
  rm -rf "$tmp"
fi
echo "setup: ok"
