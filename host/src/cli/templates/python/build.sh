#!/usr/bin/env bash
# Builds the connector into a WebAssembly component.
#
#   ./build.sh [OUT.wasm]      (default: dist/@@name@@.wasm)
#
# Installs the pinned componentize-py (requirements-build.txt) into a virtual
# environment under $SWITCHYARD_TOOLS_DIR (default: target/tools), then runs
# `componentize-py componentize app` on a copy of the sources with the
# Switchyard Python SDK from $SWITCHYARD_SDK (the `sdk/` directory of a
# Switchyard checkout; the WIT contract is beside it, in `wit/`). Needs
# python3 with venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
sdk="${SWITCHYARD_SDK:-@@sdk@@}"
wit="$sdk/../wit/connector@0.1.0"
out="${1:-$here/dist/@@name@@.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
tools="${SWITCHYARD_TOOLS_DIR:-$here/target/tools}"
venv="$tools/componentize-py"
mkdir -p "$tools" "$(dirname "$out")"

exec 9>"$tools/.componentize-py.lock"
flock 9
if ! cmp -s "$here/requirements-build.txt" "$venv/.installed" 2>/dev/null; then
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$here/requirements-build.txt"
  cp "$here/requirements-build.txt" "$venv/.installed"
fi
flock -u 9

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -R "$sdk/python/src/switchyard_sdk" "$stage/"
rm -rf "$stage/switchyard_sdk/__pycache__"
cp "$here/app.py" "$stage/"
"$venv/bin/componentize-py" -d "$wit" -w connector componentize app -p "$stage" -o "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
