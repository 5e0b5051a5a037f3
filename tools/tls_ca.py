#!/usr/bin/env python3
"""A small private CA for one environment's Redis TLS, and the certificates it signs.

    tools/tls_ca.py ca DIR                      a new CA: DIR/ca.crt, DIR/ca.key (0600)
    tools/tls_ca.py issue DIR NAME HOST...      DIR/NAME.crt, DIR/NAME.key signed by DIR's CA
    tools/tls_ca.py vault INVENTORY [--ca-from YAML_FILE] [--hosts-only]
                                                the vault lines of an inventory (one line each)

Every certificate it issues serves and authenticates as a client (both extended key usages):
a Redis node uses its own certificate for replication and a Sentinel for its peers, and any
host may present its certificate where Redis requires client certificates
(``tls-auth-clients yes``). Its subject alternative names are the host names and addresses
given: for an inventory, the host's name, ``private_address``, ``ansible_host``, ``127.0.0.1``
and ``localhost`` (the role's own redis-cli calls).

``vault`` prints ``vault_tls_ca_cert``, ``vault_tls_ca_key`` and ``vault_tls_certs`` (a
mapping: inventory host -> {cert, key}) as one line each (JSON strings are YAML), for
tools/secrets.sh. With ``--ca-from`` (a decrypted vault) it keeps that vault's CA and issues
new host certificates with it: the rotation of the servers' certificates, which the clients
accept without a change (they trust the CA).

Written with ``cryptography`` (a dependency of ansible-core, so on every controller): the
``openssl`` command line would need a configuration file per certificate for its extensions.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml  # PyYAML: ansible-core's dependency
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 397  # what public CAs may issue at most; renew yearly (the alert warns 30 days ahead)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def new_ca(name: str) -> tuple[str, str]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return _pem_cert(cert), _pem_key(key)


def issue(
    ca_cert_pem: str, ca_key_pem: str, name: str, hosts: list[str], days: int = CERT_DAYS
) -> tuple[str, str]:
    """A certificate for ``hosts`` signed by the CA: (certificate PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SystemExit("tls_ca: the CA key is not an EC key made by this tool")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_cert.subject,
                 key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return _pem_cert(cert), _pem_key(key)


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, mode)


def _inventory_hosts(inventory: str) -> dict[str, list[str]]:
    """Each host of the inventory and the names its certificate carries."""
    ansible_inventory = Path(sys.executable).with_name("ansible-inventory")
    command = [
        str(ansible_inventory) if ansible_inventory.exists() else "ansible-inventory",
        "-i",
        inventory,
        "--list",
    ]
    if os.environ.get("TLS_CA_VAULT_PASSWORD_FILE"):
        command += ["--vault-password-file", os.environ["TLS_CA_VAULT_PASSWORD_FILE"]]
    run = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
    data = json.loads(run.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    return {
        host: [
            host,
            str(v.get("private_address", "")),
            str(v.get("ansible_host", "")),
            "127.0.0.1",
            "localhost",
        ]
        for host, v in sorted(hostvars.items())
    }


def _vault_lines(inventory: str, ca_from: str | None, env_name: str) -> str:
    if ca_from:
        current = yaml.safe_load(Path(ca_from).read_text()) or {}
        ca_cert, ca_key = current.get("vault_tls_ca_cert"), current.get("vault_tls_ca_key")
        if not ca_cert or not ca_key:
            raise SystemExit(
                f"tls_ca: {ca_from} has no vault_tls_ca_cert/vault_tls_ca_key to sign with"
            )
    else:
        ca_cert, ca_key = new_ca(f"celery-stack {env_name} CA")
    certs = {}
    for host, names in _inventory_hosts(inventory).items():
        cert, key = issue(ca_cert, ca_key, host, names)
        certs[host] = {"cert": cert, "key": key}
    return "".join(
        f"{name}: {json.dumps(value, sort_keys=True)}\n"
        for name, value in (("vault_tls_ca_cert", ca_cert), ("vault_tls_ca_key", ca_key),
                            ("vault_tls_certs", certs))
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ca = commands.add_parser("ca", help="a new CA in DIR")
    ca.add_argument("dir", type=Path)
    ca.add_argument("--name", default="celery-stack CA")
    one = commands.add_parser("issue", help="a certificate signed by DIR's CA")
    one.add_argument("dir", type=Path)
    one.add_argument("name")
    one.add_argument("hosts", nargs="+")
    one.add_argument("--days", type=int, default=CERT_DAYS)
    vault = commands.add_parser("vault", help="the TLS lines of an inventory's vault")
    vault.add_argument("inventory")
    vault.add_argument("--ca-from", help="a decrypted vault whose CA signs (rotation)")
    vault.add_argument("--env-name", default="")
    args = parser.parse_args(argv)
    if args.command == "ca":
        args.dir.mkdir(parents=True, exist_ok=True)
        cert, key = new_ca(args.name)
        _write(args.dir / "ca.crt", cert, 0o644)
        _write(args.dir / "ca.key", key, 0o600)
    elif args.command == "issue":
        cert, key = issue((args.dir / "ca.crt").read_text(), (args.dir / "ca.key").read_text(),
                          args.name, args.hosts, args.days)  # fmt: skip
        _write(args.dir / f"{args.name}.crt", cert, 0o644)
        _write(args.dir / f"{args.name}.key", key, 0o600)
    else:
        sys.stdout.write(
            _vault_lines(args.inventory, args.ca_from, args.env_name or Path(args.inventory).name)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
