#!/usr/bin/env bash
# Builds the WooCommerce connector into a WebAssembly component.
#
#   plugins/woocommerce-js/build.sh OUT.wasm
#
# Installs the locked componentize-js (`npm ci` from package-lock.json) into a
# copy of this package under $SWITCHYARD_TOOLS_DIR (default:
# target/polyglot/tools), so the source tree gets no node_modules, and runs
# build.mjs there with the SDK of this repository (sdk/js). Needs node and
# npm; non-interactive. (Working on the connector itself,
# `npm ci && SWITCHYARD_SDK_JS=../../sdk/js/src/index.js npm run build` here
# does the same.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:?usage: build.sh OUT.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
tools="${SWITCHYARD_TOOLS_DIR:-$root/target/polyglot/tools}"
stage="$tools/woocommerce-js"
mkdir -p "$stage" "$(dirname "$out")"

exec 9>"$tools/.woocommerce-js.lock"
flock 9
if ! cmp -s "$here/package-lock.json" "$stage/node_modules/.installed-lock.json" 2>/dev/null; then
  cp "$here/package.json" "$here/package-lock.json" "$stage/"
  (cd "$stage" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stage/node_modules/.installed-lock.json"
fi
rm -rf "$stage/src"
cp -R "$here/src" "$here/build.mjs" "$stage/"
SWITCHYARD_WIT="$root/wit/connector@0.1.0" SWITCHYARD_SDK_JS="$root/sdk/js/src/index.js" node "$stage/build.mjs" "$out.tmp"
mv "$out.tmp" "$out"
