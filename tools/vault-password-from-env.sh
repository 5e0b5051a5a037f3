#!/bin/sh
# Ansible vault password client: prints $STACK_VAULT_PASSWORD (used by the rehearsal and CI).
if [ -z "${STACK_VAULT_PASSWORD:-}" ]; then
  echo "vault-password-from-env: STACK_VAULT_PASSWORD is not set" >&2
  exit 1
fi
printf '%s\n' "$STACK_VAULT_PASSWORD"
