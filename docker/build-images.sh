#!/usr/bin/env bash
# Build the stack's images from the local base image (no registry needed):
#   celery-stack/worker      <- wheelhouse/ (run `make wheels` first)
#   celery-stack/redis       <- docker/images/redis
#   celery-stack/prometheus  <- docker/images/prometheus (Prometheus, Alertmanager, Redis exporter)
# An image is rebuilt only when its recipe (Dockerfile, context, base) changed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base="${STACK_BASE_IMAGE:-debian:bookworm-slim}"
say() { printf 'build-images: %s\n' "$*" >&2; }

"$root/docker/base-image.sh" "${base#debian:}" >/dev/null 2>&1 || "$root/docker/base-image.sh" bookworm
base_id="$(docker image inspect -f '{{.Id}}' "$base")"

build() {
    local image="$1" dockerfile_dir="$2" context="$3" want have
    want="$( { echo "$base_id"; cat "$dockerfile_dir/Dockerfile";
               (cd "$context" && find . -type f ! -name '.built' -print0 | sort -z \
                  | xargs -0 sha256sum); } | sha256sum | cut -c1-16)"
    have="$(docker image inspect -f '{{index .Config.Labels "celery-stack.recipe"}}' "$image" 2>/dev/null || true)"
    if [[ "$have" == "$want" ]]; then
        say "$image up to date"
        return
    fi
    say "building $image"
    local log
    log="$(mktemp)"
    if ! DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$base" --label "celery-stack.recipe=$want" \
            -f "$dockerfile_dir/Dockerfile" -t "$image" "$context" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        say "building $image failed"
        exit 1
    fi
    rm -f "$log"
}

[[ -f "$root/wheelhouse/requirements.txt" ]] || { say "no wheelhouse: run 'make wheels'"; exit 1; }
build celery-stack/worker "$root/docker/images/worker" "$root/wheelhouse"
build celery-stack/redis "$root/docker/images/redis" "$root/docker/images/redis"
build celery-stack/prometheus "$root/docker/images/prometheus" "$root/docker/images/prometheus"
