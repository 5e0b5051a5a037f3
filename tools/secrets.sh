#!/usr/bin/env bash
# Generate fresh random secrets for an inventory and encrypt them with ansible-vault.
#   tools/secrets.sh ENV VAULT_PASSWORD_FILE            -> inventories/ENV/group_vars/all/vault.yml
#   tools/secrets.sh --rehearsal ENV VAULT_PASSWORD_FILE   (marks them rehearsal-only)
# An existing vault.yml is kept as vault.yml.<timestamp>.bak (0600) so a rotation can be undone.
set -euo pipefail
rehearsal=false
if [[ "${1:-}" == "--rehearsal" ]]; then rehearsal=true; shift; fi
env_name="${1:?usage: tools/secrets.sh [--rehearsal] ENV VAULT_PASSWORD_FILE}"
password_file="${2:?usage: tools/secrets.sh [--rehearsal] ENV VAULT_PASSWORD_FILE}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/inventories/$env_name/group_vars/all"
[[ -d "$dir" ]] || { echo "secrets: no inventory at inventories/$env_name" >&2; exit 2; }
[[ -r "$password_file" ]] || { echo "secrets: cannot read vault password file $password_file" >&2; exit 2; }
vault="$root/.venv/bin/ansible-vault"
[[ -x "$vault" ]] || vault=ansible-vault

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(int(__import__("sys").argv[1])))' "$1"; }
# The smarthost's password is the mail provider's, not ours to invent: taken from
# ALERTMANAGER_SMTP_PASSWORD, else left empty (the preflight then asks for it, if the
# inventory logs in to a smarthost). A rehearsal vault gets a random one.
smtp_password="${ALERTMANAGER_SMTP_PASSWORD:-}"
if [[ "$rehearsal" == true && -z "$smtp_password" ]]; then smtp_password="$(secret 24)"; fi

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
YAML
if [[ -f "$dir/vault.yml" ]]; then
  backup="$dir/vault.yml.$(date +%Y%m%d%H%M%S).bak"
  cp -p "$dir/vault.yml" "$backup" && chmod 0600 "$backup"
  echo "secrets: previous vault kept as ${backup#"$root"/}"
fi
"$vault" encrypt --vault-password-file "$password_file" --output "$dir/vault.yml" "$plain"
chmod 0600 "$dir/vault.yml"
echo "secrets: wrote inventories/$env_name/group_vars/all/vault.yml (encrypted, 0600)"
