#!/usr/bin/env bash
# Runs the connector's tests under node against a fake of the API, with the
# Switchyard JavaScript SDK from $SWITCHYARD_SDK (the `sdk/` directory of a
# Switchyard checkout). No dependencies to install.
set -euo pipefail
cd "$(dirname "$0")"
export SWITCHYARD_SDK="${SWITCHYARD_SDK:-@@sdk@@}"
exec node --import ./test/register.mjs --test test/*.test.js "$@"
