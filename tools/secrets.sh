#!/usr/bin/env bash
# Generate fresh random secrets for an inventory and encrypt them with ansible-vault.
#   tools/secrets.sh ENV VAULT_PASSWORD_FILE            -> inventories/ENV/group_vars/all/vault.yml
#   tools/secrets.sh --rehearsal ENV VAULT_PASSWORD_FILE   (marks them rehearsal-only)
#   tools/secrets.sh --missing ENV VAULT_PASSWORD_FILE     (adds only the secrets the vault lacks,
#                                                         e.g. after an upgrade; keeps the others)
#   tools/secrets.sh --tls ENV VAULT_PASSWORD_FILE         (new TLS certificates for every host of the
#                                                         inventory, signed by the vault's CA: a
#                                                         rotation, or hosts added; keeps the rest)
# TLS: a private CA for the environment (vault_tls_ca_cert, vault_tls_ca_key) and a certificate
# per inventory host naming it (vault_tls_certs), made by tools/tls_ca.py (docs/tls.md).
# An existing vault.yml is kept as vault.yml.<timestamp>.bak (0600) so a rotation can be undone.
set -euo pipefail
rehearsal=false
missing=false
tls=false
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --rehearsal) rehearsal=true ;;
    --missing) missing=true ;;
    --tls) tls=true ;;
    *) echo "secrets: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
usage="usage: tools/secrets.sh [--rehearsal] [--missing | --tls] ENV VAULT_PASSWORD_FILE"
env_name="${1:?$usage}"
password_file="${2:?$usage}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/inventories/$env_name/group_vars/all"
[[ -d "$dir" ]] || { echo "secrets: no inventory at inventories/$env_name" >&2; exit 2; }
[[ -r "$password_file" ]] || { echo "secrets: cannot read vault password file $password_file" >&2; exit 2; }
vault="$root/.venv/bin/ansible-vault"
[[ -x "$vault" ]] || vault=ansible-vault
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python=python3

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(int(__import__("sys").argv[1])))' "$1"; }
# The smarthost's password is the mail provider's, not ours to invent: taken from
# ALERTMANAGER_SMTP_PASSWORD, else left empty (the preflight then asks for it, if the
# inventory logs in to a smarthost). A rehearsal vault gets a random one.
smtp_password="${ALERTMANAGER_SMTP_PASSWORD:-}"
if [[ "$rehearsal" == true && -z "$smtp_password" ]]; then smtp_password="$(secret 24)"; fi
# The console's users file holds password hashes only (worker-app web hash-password).
worker_app="$root/.venv/bin/worker-app"
[[ -x "$worker_app" ]] || worker_app=worker-app
hash_of() { printf '%s\n' "$1" | "$worker_app" web hash-password --stdin; }
console_admin_password="$(secret 24)"
console_prometheus_password="$(secret 32)"

umask 077
plain="$(mktemp)"
trap 'rm -f "$plain"' EXIT
cat >"$plain" <<YAML
---
# Secrets of the $env_name environment (ansible-vault encrypted; rotate with tools/secrets.sh).
vault_rehearsal_only: $rehearsal
vault_redis_celery_password: "$(secret 32)"
vault_redis_exporter_password: "$(secret 32)"
vault_flower_password: "$(secret 24)"
vault_grafana_admin_password: "$(secret 24)"
vault_grafana_secret_key: "$(secret 48)"
# Redis replication and Sentinel (used when the inventory sets stack_redis_sentinel: true)
vault_redis_replication_password: "$(secret 32)"
vault_redis_sentinel_password: "$(secret 32)"
vault_redis_sentinel_client_password: "$(secret 32)"
vault_redis_sentinel_exporter_password: "$(secret 32)"
vault_alertmanager_smtp_password: $(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$smtp_password")
# The console (role console): its users with password hashes (add yours: name, password_hash from
# \`worker-app web hash-password\`, role admin or read-only); the admin's password is kept here for
# you to read (ansible-vault view), the hosts get only its hash. Prometheus' read-only console
# user: its password (Prometheus' password_file) and its hash. The secret signs sessions.
vault_console_admin_password: "$console_admin_password"
vault_console_users: [{name: admin, password_hash: "$(hash_of "$console_admin_password")", role: admin}]
vault_console_prometheus_password: "$console_prometheus_password"
vault_console_prometheus_password_hash: "$(hash_of "$console_prometheus_password")"
vault_console_secret_key: "$(secret 48)"
YAML
current="$(mktemp)"
trap 'rm -f "$plain" "$current"' EXIT
if [[ "$missing" == true || "$tls" == true ]]; then
  [[ -f "$dir/vault.yml" ]] || { echo "secrets: --missing/--tls: no vault at inventories/$env_name" >&2; exit 2; }
  "$vault" view --vault-password-file "$password_file" "$dir/vault.yml" >"$current"
fi
# The TLS lines: a new CA, or with --tls the vault's own CA signing new host certificates.
TLS_CA_VAULT_PASSWORD_FILE="$password_file" "$python" "$root/tools/tls_ca.py" vault \
  "$root/inventories/$env_name" --env-name "$env_name" $([[ "$tls" == true ]] && echo --ca-from "$current") >>"$plain"
if [[ "$tls" == true ]]; then
  # Keep every line but the certificates, which are replaced (the CA stays: clients trust it).
  python3 - "$current" "$plain" <<'PY'
import sys
current, fresh = (open(path).read() for path in sys.argv[1:])
certs = next(line for line in fresh.splitlines() if line.startswith("vault_tls_certs:"))
lines = [line for line in current.splitlines() if not line.startswith("vault_tls_certs:")]
with open(sys.argv[2], "w") as out:
    out.write("\n".join(lines).rstrip("\n") + "\n" + certs + "\n")
print("secrets: new TLS certificates for every inventory host, signed by the vault's CA", file=sys.stderr)
PY
elif [[ "$missing" == true ]]; then
  # Each secret is one line: keep the vault as it is and append the lines of the missing ones.
  python3 - "$current" "$plain" <<'PY'
import re, sys
current, fresh = (open(path).read() for path in sys.argv[1:])
have = set(re.findall(r"^(vault_\w+):", current, re.MULTILINE))
added = [line for line in fresh.splitlines()
         if (m := re.match(r"^(vault_\w+):", line)) and m.group(1) not in have]
with open(sys.argv[2], "w") as out:
    out.write(current.rstrip("\n") + "\n" + "".join(line + "\n" for line in added))
print("secrets: adding " + (", ".join(l.split(":")[0] for l in added) or "nothing"), file=sys.stderr)
PY
fi
if [[ -f "$dir/vault.yml" ]]; then
  backup="$dir/vault.yml.$(date +%Y%m%d%H%M%S).bak"
  cp -p "$dir/vault.yml" "$backup" && chmod 0600 "$backup"
  echo "secrets: previous vault kept as ${backup#"$root"/}"
fi
"$vault" encrypt --vault-password-file "$password_file" --output "$dir/vault.yml" "$plain"
chmod 0600 "$dir/vault.yml"
echo "secrets: wrote inventories/$env_name/group_vars/all/vault.yml (encrypted, 0600)"
