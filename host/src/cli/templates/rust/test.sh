#!/usr/bin/env bash
# Runs the connector's tests: plain Rust on this machine, against a fake of the
# API's answers (the SDK's HTTP calls reach the host only inside a component).
set -euo pipefail
cd "$(dirname "$0")"
cargo test "$@"
