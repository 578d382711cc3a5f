"""A throwaway PKI and configuration for a provisioning lab on loopback (`telekey provisioning
lab-init`, the tests). ECDSA P-256 and SHA-256 for TLS; RSA-2048 device keys, as factories
make them. Production certificates come from the operator's and manufacturers' own CAs.

Files written into the directory (each `.key` mode 0600):
- `servers-ca`: the operator's CA for servers: `provisioning` (TLS server certificate of the
  service, SAN 127.0.0.1 and localhost), `headend` (the head-end agent's), `controller`
  (a signaling controller's client certificate), `provisioning-client` (what the service
  presents to head-ends);
- `billing-ca` and `billing` (the billing host's client certificate);
- `operator-ca`: signs operator device certificates (the KDC's PKINIT anchor);
- `request-signer`: signs seed 004 certificate requests, under `operator-ca`;
- `manufacturer-ca` and `device-<12 hex digits>`: factory certificates (CN = MAC);
- `foreign-ca` and `intruder`: a client certificate no listener trusts.
"""

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.pki.certs import build_ca, issue_device_certificate
from runtime.key_files import write_private_key

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _pem(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(Encoding.PEM))


def make_ca(directory: Path, stem: str, common_name: str, organization: str
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = build_ca(key, common_name, organization, datetime.now(UTC))
    write_private_key(directory / f"{stem}.key", key)
    _pem(directory / f"{stem}.pem", ca)
    return ca, key


def make_tls(directory: Path, stem: str, ca: x509.Certificate, ca_key: PrivateKey,
             common_name: str, *, server: bool, hosts: tuple[str, ...] = ()) -> None:
    """`<stem>.pem`/`.key`: a TLS server (EKU serverAuth, SAN `hosts`) or client
    certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=825))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server
                    else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    write_private_key(directory / f"{stem}.key", key)
    _pem(directory / f"{stem}.pem", builder.sign(ca_key, hashes.SHA256()))


def make_device(directory: Path, mac: str) -> Path:
    """A factory certificate for `mac` (RSA-2048, under `manufacturer-ca`); returns its path."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca = x509.load_pem_x509_certificate((directory / "manufacturer-ca.pem").read_bytes())
    ca_key = load_pem_private_key((directory / "manufacturer-ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    key = rsa.generate_private_key(65537, 2048)
    cert = issue_device_certificate(ca, ca_key, key.public_key(), mac, datetime.now(UTC))
    stem = "device-" + mac.replace(":", "").lower()
    write_private_key(directory / f"{stem}.key", key)
    _pem(directory / f"{stem}.pem", cert)
    return directory / f"{stem}.pem"


def make_lab_pki(directory: Path, realm: str = "LAB.TEST") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    servers, servers_key = make_ca(directory, "servers-ca", "operator servers CA", realm)
    make_tls(directory, "provisioning", servers, servers_key, "provisioning", server=True,
             hosts=("127.0.0.1", "localhost"))
    make_tls(directory, "headend", servers, servers_key, "headend", server=True,
             hosts=("127.0.0.1", "localhost"))
    make_tls(directory, "controller", servers, servers_key, "sc1", server=False)
    make_tls(directory, "provisioning-client", servers, servers_key, "provisioning",
             server=False)
    billing, billing_key = make_ca(directory, "billing-ca", "billing CA", realm)
    make_tls(directory, "billing", billing, billing_key, "billing host", server=False)
    operator, operator_key = make_ca(directory, "operator-ca", "operator CA", realm)
    make_tls(directory, "request-signer", operator, operator_key, "provisioning server",
             server=False)
    make_ca(directory, "manufacturer-ca", "manufacturer CA", "Manufacturer")
    foreign, foreign_key = make_ca(directory, "foreign-ca", "someone else's CA", "Elsewhere")
    make_tls(directory, "intruder", foreign, foreign_key, "intruder", server=False)


def write_lab_configs(directory: Path, *, realm: str = "LAB.TEST", ports: bool = True,
                      kdc_database_url: str | None = None, quarantine_s: int = 86_400,
                      headends: tuple[str, ...] = ("A", "B"), headend_ports: tuple[int, ...]
                      = (8449, 8450, 8451), headend_urls: dict[str, str] | None = None,
                      database_url: str | None = None, extra: str = "") -> list[Path]:
    """`provisioning.toml` and `headend-<name>.toml` for the PKI above (port 0 everywhere
    when `ports` is false, for tests, which then give the head-end agents' `headend_urls`)."""
    d = directory
    written = []
    for index, name in enumerate(headends):
        path = d / f"headend-{name}.toml"
        path.write_text(
            f'[headend]\nname = "{name}"\n'
            f'database_url = "sqlite:///{d / f"headend-{name}.db"}"\n'
            f"listen_port = {headend_ports[index] if ports else 0}\n"
            f'tls_cert_file = "{d / "headend.pem"}"\ntls_key_file = "{d / "headend.key"}"\n'
            f'client_ca_files = ["{d / "servers-ca.pem"}"]\n')
        written.append(path)
    lines = [
        "[provisioning]", f'realm = "{realm}"',
        f'database_url = "{database_url or "sqlite:///" + str(d / "provisioning.db")}"',
        *([] if ports else ["api_port = 0", "billing_port = 0", "console_port = 0"]),
        f'tls_cert_file = "{d / "provisioning.pem"}"',
        f'tls_key_file = "{d / "provisioning.key"}"',
        f'api_client_ca_files = ["{d / "servers-ca.pem"}"]',
        f'billing_client_ca_files = ["{d / "billing-ca.pem"}"]',
        f'ca_cert_file = "{d / "operator-ca.pem"}"', f'ca_key_file = "{d / "operator-ca.key"}"',
        f'crl_file = "{d / "operator.crl"}"',
        f'manufacturer_anchor_files = ["{d / "manufacturer-ca.pem"}"]',
        f'request_signer_cert_file = "{d / "request-signer.pem"}"',
        f'request_signer_key_file = "{d / "request-signer.key"}"',
        f'headend_ca_files = ["{d / "servers-ca.pem"}"]',
        f'client_cert_file = "{d / "provisioning-client.pem"}"',
        f'client_key_file = "{d / "provisioning-client.key"}"',
        f"number_quarantine_s = {quarantine_s}",
        *([f'kdc_database_url = "{kdc_database_url}"'] if kdc_database_url else []),
        *([extra] if extra else []),
    ]
    for index, name in enumerate(headends):
        url = (headend_urls or {}).get(
            name, f"https://127.0.0.1:{headend_ports[index] if ports else 0}")
        lines += ["", f"[provisioning.headends.{name}]", f'url = "{url}"',
                  f'numbers = ["1555{index + 1}000100-1555{index + 1}000199"]']
    path = d / "provisioning.toml"
    path.write_text("\n".join(lines) + "\n")
    written.append(path)
    return written
