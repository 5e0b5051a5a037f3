#!/usr/bin/env bash
# Make sure debian:<suite>-slim images exist locally, for each suite given
# (default: bookworm trixie).
#
# Order: an image already present is kept (cached: nothing to do); else try
# `docker pull`; else build an equivalent minimal image with
# `debootstrap --variant=minbase` from this host's own apt mirror and
# `docker import` it under the same name. The mirror is read from the host's
# apt configuration (or $DEBIAN_MIRROR), never hard-coded.
set -euo pipefail

say() { printf 'base-image: %s\n' "$*" >&2; }

host_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "$DEBIAN_MIRROR"; return
    fi
    local uri=""
    shopt -s nullglob
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        # deb822: the first URIs line of a stanza whose Suites are the main
        # archive (not -security).
        uri="$(awk '
            /^[[:space:]]*$/ { if (u != "" && s !~ /security/) { print u; exit } u=""; s="" }
            /^URIs:/   { u=$2 }
            /^Suites:/ { s=$0 }
            END { if (u != "" && s !~ /security/) print u }' "$f" | head -n1)"
        [[ -n "$uri" ]] && break
    done
    if [[ -z "$uri" ]]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -r "$f" ]] || continue
            uri="$(awk '$1 == "deb" && $0 !~ /security/ {
                     for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f")"
            [[ -n "$uri" ]] && break
        done
    fi
    if [[ -z "$uri" ]]; then
        say "cannot find a Debian mirror in this host's apt configuration; set DEBIAN_MIRROR"
        exit 1
    fi
    printf '%s\n' "$uri"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    else
        say "debootstrap is missing: install it (apt-get install debootstrap) and run as root"
        exit 1
    fi
}

build_with_debootstrap() {
    local suite="$1" image="$2" mirror rootfs
    mirror="$(host_mirror)"
    ensure_debootstrap
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/rootfs-${suite}.XXXXXX")"
    trap 'rm -rf "$rootfs"' RETURN
    say "debootstrap --variant=minbase $suite from the host's mirror"
    debootstrap --variant=minbase --components=main "$suite" "$rootfs" "$mirror" \
        >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    # Trim it like the official slim images: no apt lists or caches, no
    # docs or man pages.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
           "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
           "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    # Containers have no init to start services in: keep maintainer scripts
    # from trying, as the official images' build tooling does.
    printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    tar -C "$rootfs" --numeric-owner -c . \
        | docker import --change 'CMD ["bash"]' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            - "$image" >/dev/null
    say "imported $image"
}

suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=(bookworm trixie)

for suite in "${suites[@]}"; do
    image="debian:${suite}-slim"
    if docker image inspect "$image" >/dev/null 2>&1; then
        say "$image present"
        continue
    fi
    if timeout "${PULL_TIMEOUT:-30}" docker pull -q "$image" >/dev/null 2>&1; then
        say "pulled $image"
        continue
    fi
    build_with_debootstrap "$suite" "$image"
done
