#!/usr/bin/env bash
# Regenerates hacluster/api/ from proto/hacluster/v1/*.proto with grpcio-tools.
#
#   scripts/gen_proto.sh            # rewrite hacluster/api/*_pb2*.py(i)
#   scripts/gen_proto.sh OUT_DIR    # write the same files into OUT_DIR (used by the test
#                                   # tests/unit/test_api_generated.py to compare)
#
# Layout: the proto root is proto/, and a file's path there (hacluster/v1/admin.proto) is its
# name in the protobuf descriptor pool, so it stays unique next to other projects' protos.
# protoc turns that path into Python imports `from hacluster.v1 import x_pb2`, but the
# generated modules live in the package hacluster.api. So we generate into a temporary tree
# and rewrite exactly that import prefix, `from hacluster.v1 import` -> `from hacluster.api
# import`, in every generated .py/.pyi, then copy the flat files into OUT_DIR. Nothing else
# is edited; the generated files are never changed by hand (the test checks it).
#
# PYTHON selects the interpreter (default: .venv/bin/python, else python3); it needs
# grpcio-tools, the version the committed files were generated with (see their header).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/hacluster/api}
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$root/proto"
shopt -s nullglob
protos=(hacluster/v1/*.proto)
[ "${#protos[@]}" -gt 0 ] || { echo "gen_proto: no .proto files under proto/hacluster/v1" >&2; exit 1; }
"$py" -m grpc_tools.protoc -I. \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" "${protos[@]}"

gen=("$tmp"/hacluster/v1/*.py "$tmp"/hacluster/v1/*.pyi)
sed -i -E 's/^from hacluster\.v1 import /from hacluster.api import /' "${gen[@]}"
if grep -n 'hacluster\.v1 import\|import hacluster\.v1' "${gen[@]}" >&2; then
  echo "gen_proto: an import of hacluster.v1 was left unrewritten (above)" >&2
  exit 1
fi

mkdir -p "$out"
# Remove files of protos that no longer exist; __init__.py is hand-written and kept.
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi "$out"/*_pb2_grpc.py
cp "${gen[@]}" "$out"/
echo "gen_proto: wrote $(cd "$tmp/hacluster/v1" && ls | tr '\n' ' ')into $out"
