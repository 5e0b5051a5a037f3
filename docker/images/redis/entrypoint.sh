#!/bin/sh
# Write the ACL file from the environment (passwords stored as SHA-256
# hashes), then run redis-server. The default user is disabled; the users'
# rules are those of roles/redis (defaults/main.yml).
set -eu
: "${REDIS_CELERY_PASSWORD:?REDIS_CELERY_PASSWORD is required}"
: "${REDIS_EXPORTER_PASSWORD:?REDIS_EXPORTER_PASSWORD is required}"
hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
umask 077
cat > /run/redis/users.acl <<ACL
user default off
user celery on #$(hash "$REDIS_CELERY_PASSWORD") ~* &* +@all -@admin -@dangerous +info +client|setname +client|id
user exporter on #$(hash "$REDIS_EXPORTER_PASSWORD") resetkeys resetchannels -@all +ping +client|setname +info +config|get +client|list +slowlog|get +slowlog|len +latency|latest +latency|histogram +memory|stats +cluster|info
ACL
exec redis-server /etc/redis/stack.conf --aclfile /run/redis/users.acl "$@"
