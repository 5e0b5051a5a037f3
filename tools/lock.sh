#!/usr/bin/env bash
# Resolve requirements/runtime.in and dev.in into fully pinned .txt files,
# each in a throw-away venv, so runtime.txt holds only runtime packages.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/rt" && "$tmp/rt/bin/pip" install -q -r requirements/runtime.in
python3 -m venv "$tmp/dev" && "$tmp/dev/bin/pip" install -q -r requirements/dev.in -r requirements/runtime.in
{ echo "# Resolved from runtime.in by 'make lock' (Python 3.11). The wheelhouse is built from these pins."
  "$tmp/rt/bin/pip" freeze; } > requirements/runtime.txt
{ echo "# Resolved from dev.in + runtime.in by 'make lock' (Python 3.11). 'make venv' installs these."
  "$tmp/dev/bin/pip" freeze; } > requirements/dev.txt
echo "lock: requirements/runtime.txt and requirements/dev.txt updated"
