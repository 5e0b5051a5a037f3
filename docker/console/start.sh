#!/bin/sh
# The console of the docker stack (`make up`): its users file and secret key from the passwords
# docker/stack.sh generated (.env), then `worker-app web serve`. Only hashes are written (mode
# 0600, inside the container); the passwords leave the environment before the server starts.
#   admin       CONSOLE_ADMIN_PASSWORD       role admin
#   viewer      CONSOLE_VIEWER_PASSWORD      role read-only
#   prometheus  CONSOLE_PROMETHEUS_PASSWORD  role read-only (Prometheus scrapes /metrics with it)
set -eu
umask 077
dir="$(mktemp -d)"
hash_of() { printenv "$1" | worker-app web hash-password --stdin; }
admin="$(hash_of CONSOLE_ADMIN_PASSWORD)"
viewer="$(hash_of CONSOLE_VIEWER_PASSWORD)"
prometheus="$(hash_of CONSOLE_PROMETHEUS_PASSWORD)"
cat >"$dir/users.yml" <<USERS
users:
  admin: {password_hash: "$admin", role: admin}
  viewer: {password_hash: "$viewer", role: read-only}
  prometheus: {password_hash: "$prometheus", role: read-only}
USERS
printenv CONSOLE_SECRET_KEY >"$dir/secret-key"
unset CONSOLE_ADMIN_PASSWORD CONSOLE_VIEWER_PASSWORD CONSOLE_PROMETHEUS_PASSWORD CONSOLE_SECRET_KEY
export WORKER_APP_CONSOLE_USERS_FILE="$dir/users.yml"
export WORKER_APP_CONSOLE_SECRET_KEY_FILE="$dir/secret-key"
exec worker-app web serve --host 0.0.0.0 "$@"
