#!/usr/bin/env bash
# Builds the connector into a WebAssembly component.
#
#   ./build.sh [OUT.wasm]      (default: dist/@@name@@.wasm)
#
# Needs Rust with the wasm32-wasip2 target (added here with rustup if missing).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/dist/@@name@@.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$(dirname "$out")"
cp "$target_dir/wasm32-wasip2/release/@@lib@@.wasm" "$out"
echo "wrote $out"
