#!/usr/bin/env bash
# Runs the connector's tests in plain Python against a fake of the API, with
# the Switchyard Python SDK from $SWITCHYARD_SDK (the `sdk/` directory of a
# Switchyard checkout).
set -euo pipefail
cd "$(dirname "$0")"
sdk="${SWITCHYARD_SDK:-@@sdk@@}"
PYTHONPATH="$sdk/python/src:." exec "${PYTHON:-python3}" -m unittest -v test_app "$@"
