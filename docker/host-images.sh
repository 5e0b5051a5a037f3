#!/usr/bin/env bash
# Build celery-stack/host:<suite> (an Ansible-manageable Debian host) on top
# of debian:<suite>-slim, for each suite given (default: bookworm trixie).
# Rebuilt only when the Dockerfile or the base image changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=(bookworm trixie)
"$here/base-image.sh" "${suites[@]}"
for suite in "${suites[@]}"; do
    image="celery-stack/host:${suite}"
    base_id="$(docker image inspect -f '{{.Id}}' "debian:${suite}-slim")"
    want="$(cat "$here/host/Dockerfile" - <<<"$base_id" | sha256sum | cut -c1-16)"
    have="$(docker image inspect -f '{{index .Config.Labels "celery-stack.recipe"}}' "$image" 2>/dev/null || true)"
    if [[ "$have" == "$want" ]]; then
        printf 'host-images: %s up to date\n' "$image" >&2
        continue
    fi
    printf 'host-images: building %s\n' "$image" >&2
    DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=debian:${suite}-slim" \
        --label "celery-stack.recipe=$want" -t "$image" "$here/host" >/dev/null
done
