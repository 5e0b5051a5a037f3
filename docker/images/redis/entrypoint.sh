#!/bin/sh
# Write the ACL file, then run redis-server. The default user is disabled (off); the other users and
# their rules are those of roles/redis (its defaults), which docker/stack_config.py writes to
# /etc/redis/acl-rules as "<user> <variable holding the password> <rules>" lines. Passwords come
# from the environment and are stored as SHA-256 hashes.
set -eu
rules=/etc/redis/acl-rules
[ -r "$rules" ] || { echo "redis-entrypoint: $rules is missing (mount the file docker/stack_config.py writes)" >&2; exit 1; }
hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
umask 077
{
    # Off (no client can use it), with every permission: Redis replays the AOF as the default
    # user and drops each MULTI/EXEC and script it may not run (redis/redis#14541): see
    # roles/redis/templates/users.acl.j2.
    echo "user default off ~* &* +@all"
    grep -v '^#' "$rules" | while read -r user variable acl; do
        eval "password=\${$variable:-}"
        [ -n "$password" ] || { echo "redis-entrypoint: $variable is required (ACL user $user)" >&2; exit 1; }
        echo "user $user on #$(hash "$password") $acl"
    done
} > /run/redis/users.acl
exec redis-server /etc/redis/stack.conf --aclfile /run/redis/users.acl "$@"
