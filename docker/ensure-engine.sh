#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
#
# If none answers and we run as root on Debian, install Debian's docker.io
# (when missing), clear the stale pid files a killed daemon leaves behind,
# start dockerd in the background (log: $DOCKERD_LOG) and wait until it
# answers. Anywhere else, stop with instructions.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-60}"

say() { printf 'ensure-engine: %s\n' "$*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
    exit 0
fi

if [[ "$(id -u)" != 0 ]] || [[ ! -r /etc/debian_version ]]; then
    say "no Docker engine answers 'docker info'."
    say "Install Docker (https://docs.docker.com/engine/install/), start it, and make"
    say "sure this user may use it (e.g. 'sudo usermod -aG docker \$USER'), then retry."
    say "On Debian as root this script installs and starts Debian's docker.io itself."
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    say "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

# A process that exists and is not a zombie (a SIGKILLed daemon whose parent
# never reaped it still shows up in pgrep, as state Z).
alive() {
    local pid="$1" state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

running_dockerd=""
for pid in $(pgrep -x dockerd 2>/dev/null || true); do
    if alive "$pid"; then running_dockerd="$pid"; break; fi
done

if [[ -n "$running_dockerd" ]]; then
    say "dockerd (pid $running_dockerd) is running but does not answer yet; waiting"
else
    # A daemon killed with SIGKILL leaves its pid files behind, and dockerd
    # refuses to start while docker.pid names a pid; remove the stale ones.
    for pidfile in /var/run/docker.pid /run/docker.pid \
                   /var/run/docker/containerd/containerd.pid \
                   /run/docker/containerd/containerd.pid; do
        if [[ -f "$pidfile" ]] && ! alive "$(cat "$pidfile" 2>/dev/null)"; then
            say "removing stale $pidfile"
            rm -f "$pidfile"
        fi
    done
    say "starting dockerd (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    disown || true
fi

for _ in $(seq 1 "$WAIT_SECONDS"); do
    if engine_answers; then
        say "engine ready: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
        exit 0
    fi
    sleep 1
done
say "dockerd did not answer within ${WAIT_SECONDS}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2 || true
exit 1
