"""Certificates for a key server lab: an enterprise CA (the root phones carry, which also
issues application servers' client certificates), a separate admin CA, the key server's
TLS certificate (SAN: its addresses and names) and client certificates. ECDSA P-256, SHA-256.
`telekey keyserver lab-init` and the tests use it; production certificates come from the
enterprise's own CAs."""

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.pki.certs import build_ca
from runtime.key_files import write_private_key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "telekey enterprise"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_tls_certificate(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                          public: ec.EllipticCurvePublicKey, common_name: str, *,
                          server: bool, hosts: tuple[str, ...] = (),
                          now: datetime | None = None,
                          lifetime: timedelta = timedelta(days=825)) -> x509.Certificate:
    """A TLS server certificate (EKU serverAuth, SAN `hosts`: IP addresses or DNS names) or
    client certificate (EKU clientAuth)."""
    now = now or datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name))
               .issuer_name(ca.subject).public_key(public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + lifetime)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                            False, False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server
                    else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write_pem(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(Encoding.PEM))


def make_ca(directory: Path, stem: str, common_name: str
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = build_ca(key, common_name, "telekey enterprise", datetime.now(UTC))
    write_private_key(directory / f"{stem}.key", key)
    _write_pem(directory / f"{stem}.pem", ca)
    return ca, key


def make_certificate(directory: Path, stem: str, ca: x509.Certificate,
                     ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, server: bool,
                     hosts: tuple[str, ...] = ()) -> None:
    """`<stem>.pem` and `<stem>.key` (mode 0600) in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_tls_certificate(ca, ca_key, key.public_key(), common_name, server=server,
                                 hosts=hosts)
    write_private_key(directory / f"{stem}.key", key)
    _write_pem(directory / f"{stem}.pem", cert)


def make_lab_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
    """ca.pem/.key (enterprise root: phones carry ca.pem), server.pem/.key (the key server,
    SAN `hosts`), appserver.pem/.key (an application server's client certificate),
    admin-ca.pem/.key and admin.pem/.key (an administrator's)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca(directory, "ca", "telekey enterprise root")
    make_certificate(directory, "server", ca, ca_key, "keyserver", server=True, hosts=hosts)
    make_certificate(directory, "appserver", ca, ca_key, "application server", server=False)
    admin_ca, admin_key = make_ca(directory, "admin-ca", "telekey key server admin CA")
    make_certificate(directory, "admin", admin_ca, admin_key, "key server administrator",
                     server=False)
