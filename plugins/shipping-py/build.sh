#!/usr/bin/env bash
# Builds the shipping connector into a WebAssembly component.
#
#   plugins/shipping-py/build.sh OUT.wasm
#
# Installs the pinned componentize-py (requirements-build.txt) into a virtual
# environment under $SWITCHYARD_TOOLS_DIR (default: target/polyglot/tools),
# then runs `componentize-py componentize app` on a copy of the sources, so
# the source tree gets no __pycache__. Needs python3 with venv; non-interactive.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:?usage: build.sh OUT.wasm}"
tools="${SWITCHYARD_TOOLS_DIR:-$root/target/polyglot/tools}"
venv="$tools/componentize-py"
mkdir -p "$tools" "$(dirname "$out")"

# One installer at a time (cargo may run two builds of the tests at once).
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
# The sources, not bindings an editor may have generated here, and the SDK
# package (sdk/python).
cp -R "$root/sdk/python/src/switchyard_sdk" "$stage/"
rm -rf "$stage/switchyard_sdk/__pycache__"
for file in "$here"/*.py; do
  case "$(basename "$file")" in
    componentize_py_types.py | poll_loop.py) ;;
    *) cp "$file" "$stage/" ;;
  esac
done
"$venv/bin/componentize-py" -d "$root/wit/connector@0.1.0" -w connector \
  componentize app -p "$stage" -o "$out.tmp"
mv "$out.tmp" "$out"
