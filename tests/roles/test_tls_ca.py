"""tools/tls_ca.py, what tools/secrets.sh writes an environment's TLS material with: a CA, and for
every inventory host a certificate naming its addresses, signed by the CA, for server and client
use; with --ca-from (a rotation) new certificates signed by the vault's own CA."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

ROOT = Path(__file__).resolve().parents[2]


def vault_lines(tmp_path: Path, *extra: str) -> dict[str, object]:
    password = tmp_path / "vault-password"
    password.write_text("rehearsal-only-not-a-secret\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tls_ca.py"), "vault",
         str(ROOT / "inventories" / "staging"), *extra],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "TLS_CA_VAULT_PASSWORD_FILE": str(password),
             "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "vault_tls_ca_cert", "vault_tls_ca_key", "vault_tls_certs"
    ]  # fmt: skip
    return dict(yaml.safe_load(proc.stdout))


def test_a_ca_and_a_certificate_per_host_naming_its_addresses(tmp_path: Path) -> None:
    secrets = vault_lines(tmp_path)
    ca = x509.load_pem_x509_certificate(str(secrets["vault_tls_ca_cert"]).encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    hosts = yaml.safe_load((ROOT / "inventories" / "staging" / "hosts.yml").read_text())
    certs = secrets["vault_tls_certs"]
    assert isinstance(certs, dict)
    assert set(certs) == set(hosts["all"]["hosts"])
    for host, variables in hosts["all"]["hosts"].items():
        cert = x509.load_pem_x509_certificate(certs[host]["cert"].encode())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address(variables["private_address"]) in names.get_values_for_type(
            x509.IPAddress
        )
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
        assert host in names.get_values_for_type(x509.DNSName)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        key = serialization.load_pem_private_key(certs[host]["key"].encode(), password=None)
        assert key.public_key() == cert.public_key()
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 365


def test_a_rotation_keeps_the_ca_and_issues_new_certificates(tmp_path: Path) -> None:
    first = vault_lines(tmp_path)
    current = tmp_path / "current.yml"
    current.write_text(yaml.safe_dump(first))
    second = vault_lines(tmp_path, "--ca-from", str(current))
    assert second["vault_tls_ca_cert"] == first["vault_tls_ca_cert"]
    assert second["vault_tls_ca_key"] == first["vault_tls_ca_key"]
    ca = x509.load_pem_x509_certificate(str(first["vault_tls_ca_cert"]).encode())
    old, new = first["vault_tls_certs"], second["vault_tls_certs"]
    assert isinstance(old, dict) and isinstance(new, dict)
    for host in old:
        assert new[host]["cert"] != old[host]["cert"] and new[host]["key"] != old[host]["key"]
        x509.load_pem_x509_certificate(new[host]["cert"].encode()).verify_directly_issued_by(ca)


def test_a_rotation_without_a_ca_in_the_vault_stops(tmp_path: Path) -> None:
    current = tmp_path / "current.yml"
    current.write_text("vault_redis_celery_password: x\n")
    with pytest.raises(subprocess.CalledProcessError) as failed:
        vault_lines(tmp_path, "--ca-from", str(current))
    assert "has no vault_tls_ca_cert/vault_tls_ca_key" in failed.value.stderr


def secrets_sh(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """tools/secrets.sh of a copy of the repository at ``root`` (it writes the copy's vault)."""
    password = root / "vault-password"
    password.write_text("rehearsal-only-not-a-secret\n")
    return subprocess.run(
        [str(root / "tools" / "secrets.sh"), *args, "staging", str(password)],
        capture_output=True, text=True, timeout=300, check=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )  # fmt: skip


def view_vault(root: Path, vault: Path | None = None) -> dict[str, Any]:
    """The decrypted staging vault of the copy at ``root`` (or ``vault``)."""
    vault = vault or root / "inventories/staging/group_vars/all/vault.yml"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "view", "--vault-password-file",
         str(root / "vault-password"), str(vault)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return dict(yaml.safe_load(proc.stdout))


def test_secrets_sh_tls_renews_the_certificates_and_keeps_everything_else(
    tmp_path: Path,
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "tools", root / "tools")
    shutil.copytree(ROOT / "inventories" / "staging", root / "inventories" / "staging")
    secrets_sh(root, "--tls")  # the copy's vault: the repository's, with the rehearsal password
    after = view_vault(root)
    original = view_vault(root, ROOT / "inventories/staging/group_vars/all/vault.yml")
    changed = {name for name in original if original[name] != after.get(name)}
    assert changed == {"vault_tls_certs"}, changed
    assert set(after) == set(original)
    for host, pair in original["vault_tls_certs"].items():
        assert after["vault_tls_certs"][host]["key"] != pair["key"]
    mode = (root / "inventories/staging/group_vars/all/vault.yml").stat().st_mode & 0o777
    assert mode == 0o600
