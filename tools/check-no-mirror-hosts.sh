#!/usr/bin/env bash
# Fail if a tracked file names a package mirror host: mirrors are read from
# the host's own apt and pip configuration at run time, never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='deb\.debian\.org|security\.debian\.org|ftp\.[a-z.]*debian\.org|snapshot\.debian\.org|pypi\.org/simple|files\.pythonhosted\.org|mirrors?\.[a-z0-9-]+\.[a-z]+'
if git ls-files -z | grep -zv '^tools/check-no-mirror-hosts.sh$' \
        | xargs -0 grep -nIE "$pattern" 2>/dev/null; then
    echo "check-no-mirror-hosts: the files above name a package mirror host" >&2
    exit 1
fi
echo "check-no-mirror-hosts: ok"
