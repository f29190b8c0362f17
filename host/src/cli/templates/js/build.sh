#!/usr/bin/env bash
# Builds the connector into a WebAssembly component.
#
#   ./build.sh [OUT.wasm]      (default: dist/@@name@@.wasm)
#
# Installs the locked componentize-js (`npm ci` from package-lock.json) into
# a copy of package.json under $SWITCHYARD_TOOLS_DIR (default: target/tools),
# then runs build.mjs with the Switchyard JavaScript SDK from $SWITCHYARD_SDK
# (the `sdk/` directory of a Switchyard checkout; the WIT contract is beside
# it, in `wit/`). Needs node and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export SWITCHYARD_SDK="${SWITCHYARD_SDK:-@@sdk@@}"
out="${1:-$here/dist/@@name@@.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
tools="${SWITCHYARD_TOOLS_DIR:-$here/target/tools}"
stage="$tools/componentize-js"
mkdir -p "$stage" "$(dirname "$out")"

exec 9>"$tools/.componentize-js.lock"
flock 9
if ! cmp -s "$here/package-lock.json" "$stage/node_modules/.installed-lock.json" 2>/dev/null; then
  cp "$here/package.json" "$here/package-lock.json" "$stage/"
  (cd "$stage" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stage/node_modules/.installed-lock.json"
fi
rm -rf "$stage/src"
cp -R "$here/src" "$here/build.mjs" "$stage/"
node "$stage/build.mjs" "$out.tmp"
mv "$out.tmp" "$out"
