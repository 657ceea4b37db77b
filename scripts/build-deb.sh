#!/usr/bin/env bash
# Builds dist/hacluster_VERSION_ARCH.deb: the project and its Python dependencies in a
# virtualenv at /opt/hacluster/venv, /usr/bin/hacluster and /usr/bin/hacluster-agent, the
# systemd unit hacluster-agent.service (with ExecReload), the bash completion, the man
# pages, an example config. No debhelper: dpkg-deb on a staged tree (docs/deploy.md).
#
#   bash scripts/build-deb.sh            # needs python3-venv, dpkg-dev, help2man; lintian to check
#   OUT=/tmp/x bash scripts/build-deb.sh  # another output directory (default: dist)
#
# How the virtualenv gets to /opt/hacluster/venv: it is built at a staging path
# ($STAGE/opt/hacluster/venv) with the target's Python (/usr/bin/python3) and then made
# to believe it lives at /opt/hacluster/venv. A venv names its own path in only three kinds
# of places: the console scripts' shebangs, the activate scripts and pyvenv.cfg's
# `command` line (bin/python is a symlink to /usr/bin/python3, site-packages is found
# relative to it). Those are rewritten, and the build fails if the staging path is left
# anywhere in the tree. Building at the real /opt/hacluster would be simpler but would
# clobber what the Ansible role installs there on the build machine, and needs root.
#
# The dependencies come from pyproject.toml through pip (the configured index or mirror);
# the compiled ones (grpcio, cryptography, pydantic-core) are cp311 wheels, so the package
# depends on Python 3.11 exactly: Debian 12's.
set -euo pipefail
# The build's Pythons see only their own venvs: a PYTHONPATH naming a source tree (the
# tests set one) would make pip find hacluster "already installed" and skip it.
unset PYTHONPATH PYTHONHOME PYTHONUSERBASE VIRTUAL_ENV
cd "$(dirname "$0")/.."
SRC=$PWD
OUT=${OUT:-$SRC/dist}
PY=/usr/bin/python3
PKG=hacluster
PREFIX=/opt/hacluster/venv
UNIT=hacluster-agent.service
# The Maintainer field and the changelog's signature.
MAINTAINER=${MAINTAINER:-hacluster developers <hacluster@example.org>}
t0=$SECONDS
# pip's chatter goes to a log, shown when a step fails.
pip_q() { "$@" >>"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; echo "build-deb: failed: $*" >&2; return 1; }; }
step() { printf '[build-deb %3ds] %s\n' "$((SECONDS - t0))" "$*"; }

for tool in dpkg-deb dpkg-shlibdeps help2man gzip strip; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing (apt install dpkg-dev binutils help2man)" >&2; exit 1; }
done
"$PY" -c 'import ensurepip, venv' 2>/dev/null || { echo "build-deb: apt install python3-venv" >&2; exit 1; }

WORK=$(mktemp -d /tmp/hacluster-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root
VENV=$STAGE$PREFIX
# Reproducible dates: the last commit's (docs, changelog and the archive's member times).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

step "building the wheel of $PKG from $SRC"
# From a copy of the tree (the files git tracks or would: not .venv, dist, caches), so
# setuptools' build/ and *.egg-info land there and not in the checkout; and from a wheel
# rather than `pip install .`: no build directory or source path is recorded.
mkdir -p "$WORK/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/src" 2>/dev/null \
  || cp -r "$SRC/." "$WORK/src"  # not a git checkout (an unpacked release)
"$PY" -m venv "$WORK/build-venv"
pip_q "$WORK/build-venv/bin/pip" wheel -q --no-deps --wheel-dir "$WORK/wheels" "$WORK/src" >/dev/null
pip_q "$WORK/build-venv/bin/pip" install -q jinja2  # renders the role's unit template below

step "creating the virtualenv and installing the dependencies from pyproject.toml"
"$PY" -m venv "$VENV"
# --no-compile: no .pyc in the package; postinst compiles them for the installed Python.
pip_q "$VENV/bin/pip" install -q --no-compile "$WORK"/wheels/"$PKG"-*.whl
pip_q "$VENV/bin/pip" uninstall -q -y pip setuptools  # not needed at run time
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$VENV" -name direct_url.json -path '*.dist-info/*' -delete  # the wheel's build path
# bin/ keeps the interpreter links, the activate scripts and hacluster's two commands; the
# dependencies' own tools (DICOM and netlink utilities...) are not part of the package.
find "$VENV/bin" -maxdepth 1 -type f -not -name 'hacluster' -not -name 'hacluster-agent' \
  -not -name 'activate*' -delete
rm -f "$VENV"/bin/activate.fish "$VENV"/bin/activate.csh
VERSION=$("$VENV/bin/python" -c 'import hacluster; print(hacluster.__version__)')
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
[[ $VERSION =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || { echo "build-deb: odd version '$VERSION'" >&2; exit 1; }
ARCH=$(dpkg --print-architecture)
DEB=$OUT/${PKG}_${VERSION}_${ARCH}.deb
step "version $VERSION, architecture $ARCH"

step "generating the man pages and the bash completion"
bash scripts/gen-docs.sh "$WORK/docs" "$VERSION" "$VENV/bin/python"
mkdir -p "$STAGE/usr/share/man" "$STAGE/usr/share/bash-completion/completions"
cp -r "$WORK/docs/man1" "$WORK/docs/man8" "$STAGE/usr/share/man/"
cp "$WORK/docs/completions/hacluster" "$STAGE/usr/share/bash-completion/completions/hacluster"
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +

step "stripping the compiled modules"
# As dh_strip does for Python extensions; not the libraries the wheels bundle in *.libs
# (auditwheel rewrote their headers with patchelf, and strip may break those).
find "$VENV" -type f -name '*.so' -not -path '*.libs/*' -exec strip --strip-unneeded \
  --remove-section=.comment --remove-section=.note {} +

step "moving the virtualenv to $PREFIX (shebangs, activate scripts, pyvenv.cfg)"
for f in "$VENV"/bin/*; do
  [ -f "$f" ] && [ ! -L "$f" ] && grep -Iq . "$f" && sed -i "s#$VENV#$PREFIX#g" "$f"
done
sed -i "s#$VENV#$PREFIX#g" "$VENV/pyvenv.cfg"
if leaks=$(grep -rlF "$WORK" "$STAGE"); then
  echo "build-deb: the staging path is still named in:" >&2; echo "$leaks" >&2; exit 1
fi

step "the commands, the unit, the config directory, the docs"
mkdir -p "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/etc/hacluster" \
  "$STAGE/usr/share/doc/$PKG/examples" "$STAGE/usr/share/lintian/overrides"
ln -s "$PREFIX/bin/hacluster" "$STAGE/usr/bin/hacluster"
ln -s "$PREFIX/bin/hacluster-agent" "$STAGE/usr/bin/hacluster-agent"
# /opt/hacluster/current is where the Ansible role's unit and helper look for the commands
# (there it points at the version's venv): with the package it points at the package's.
ln -s venv "$STAGE/opt/hacluster/current"
# One unit: the role's template, rendered with the role's defaults (the package's paths).
"$WORK/build-venv/bin/python" packaging/render_unit.py \
  ansible/roles/hacluster/templates/hacluster-agent.service.j2 > "$STAGE/lib/systemd/system/$UNIT"
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$STAGE/lib/systemd/system/$UNIT"
cp packaging/debian/hacluster.yaml.example "$STAGE/usr/share/doc/$PKG/examples/hacluster.yaml"
cp packaging/debian/copyright "$STAGE/usr/share/doc/$PKG/copyright"
cp packaging/debian/lintian-overrides "$STAGE/usr/share/lintian/overrides/$PKG"
# The changelog's one entry is this version's, dated by the last commit.
{
  echo "$PKG ($VERSION) unstable; urgency=medium"
  echo
  echo "  * Package of hacluster $VERSION (git $(git rev-parse --short HEAD 2>/dev/null || echo unknown))."
  echo "    See the project's git history for the changes."
  echo
  echo " -- $MAINTAINER  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$STAGE/usr/share/doc/$PKG/changelog.gz"  # a native package's name

step "permissions, maintainer scripts, control file"
# Files 0644 (the wheels' modules and shared objects included), directories and the
# venv's commands 0755. /etc/hacluster, which will hold the secret and the keys, becomes
# 0750 root:hacluster in postinst, once the group exists.
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -type f -exec chmod 0644 {} +
find "$VENV/bin" -maxdepth 1 -type f -not -name 'activate*' -exec chmod 0755 {} +  # activate is sourced
mkdir -p "$STAGE/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$STAGE/DEBIAN/$s"; done
# The libraries the wheels' compiled modules link against, from the system (dpkg-shlibdeps
# skips the wheels' own bundled ones in *.libs directories, which the package provides).
mkdir -p "$WORK/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" > "$WORK/shlibs/debian/control"
mapfile -t elfs < <(find "$VENV" -type f -name '*.so*' -not -path '*.libs/*')
libdirs=$(find "$VENV" -type d -name '*.libs' -printf '-l%p ')
shlibs=$(cd "$WORK/shlibs" && dpkg-shlibdeps -O --ignore-missing-info $libdirs -e"${elfs[@]}" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@MAINTAINER@/$MAINTAINER/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" \
  -e "s/@SHLIBS@/${shlibs:+, $shlibs}/" packaging/debian/control > "$STAGE/DEBIAN/control"
# No conffiles: the config is the operator's (or the role's); only an example is shipped.
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum > DEBIAN/md5sums)

step "dpkg-deb --build ($size KiB unpacked)"
mkdir -p "$OUT"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB.partial" >/dev/null
mv "$DEB.partial" "$DEB"
step "built $DEB ($(du -h "$DEB" | cut -f1))"
if command -v lintian >/dev/null && [ "${LINTIAN:-1}" = 1 ]; then
  step "lintian"
  lintian --fail-on error "$DEB" || { echo "build-deb: lintian reports errors" >&2; exit 1; }
fi
step "done"
