#!/usr/bin/env bash
# Build the Ansible collection celery_bundle.celery_stack (`make collection`):
#
#   tools/build-collection.sh [OUT]      OUT defaults to build/collection
#
# Stages collection/ (galaxy.yml, meta/runtime.yml, playbooks/, README.md, CHANGELOG.md) with the
# repository's roles/ in OUT/staging, writes pyproject.toml's version (the bundle's one version)
# into the staged galaxy.yml, and runs `ansible-galaxy collection build` there: the tarball
# OUT/celery_bundle-celery_stack-VERSION.tar.gz, whose path is the last line printed. The
# repository keeps its layout; only the staging directory is laid out as a collection.
set -euo pipefail
out="${1:-build/collection}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if grep -qE '^version:' collection/galaxy.yml; then
    echo "build-collection: collection/galaxy.yml sets version; the version is pyproject.toml's" >&2
    exit 2
fi
version="$("${PYTHON:-python3}" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    print(tomllib.load(f)["project"]["version"])')"

staging="$out/staging"
rm -rf "$staging"
mkdir -p "$staging"
cp -R collection/. "$staging/"
cp -R roles "$staging/roles"
# The roles' own module (stack_files) lives in roles/supervisor/library for the repository's
# layout; in a collection, roles find modules in its plugins/modules only.
mkdir -p "$staging/plugins/modules"
cp roles/supervisor/library/stack_files.py "$staging/plugins/modules/"
rm -rf "$staging"/roles/*/library
printf '\n# Written by tools/build-collection.sh from pyproject.toml.\nversion: "%s"\n' "$version" \
    >>"$staging/galaxy.yml"

ansible-galaxy collection build --force --output-path "$out" "$staging" >&2
tarball="$out/celery_bundle-celery_stack-$version.tar.gz"
test -f "$tarball" || { echo "build-collection: $tarball was not built" >&2; exit 1; }
echo "$tarball"
