"""The operator CA inside the provisioning service (seed 001: "Provisioning CA"): operator device
certificates (common/pki/certs.py `issue_device_certificate`, with the phone ID of the
assigned number), the CRL of those revoked (RFC 5280 §5, read by the KDC's `crl_files`), and
seed 004 certificate requests signed for a device."""

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import NameOID

from common.crypto.cms import Signer, file_signer
from common.pki.certs import issue_device_certificate, phone_id
from common.pki.selfcert import KEY_ECDSA_P256, SelfCertProfile, build_request
from runtime.key_files import read_secret_bytes

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
REASONS = {"superseded": x509.ReasonFlags.superseded,
           "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
           "keyCompromise": x509.ReasonFlags.key_compromise}


def load_private_key(path: Path) -> PrivateKey:
    key = load_pem_private_key(read_secret_bytes(path), None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: the key must be RSA or ECDSA")
    return key


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    reason: str | None


class OperatorCa:
    """The CA certificate and key that sign operator device certificates and the CRL."""

    def __init__(self, certificate: x509.Certificate, key: PrivateKey) -> None:
        self.certificate = certificate
        self.key = key
        names = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        self.organization = str(names[0].value) if names else "Operator"

    @classmethod
    def from_files(cls, cert_file: Path, key_file: Path) -> "OperatorCa":
        return cls(x509.load_pem_x509_certificate(cert_file.read_bytes()),
                   load_private_key(key_file))

    def issue(self, factory: x509.Certificate, mac: str, number: str, now: datetime,
              lifetime: timedelta) -> x509.Certificate:
        """The operator device certificate for a device's reported key and MAC, carrying the
        phone ID of `number` (seed 001, FIG. 7 "new CTA certificate")."""
        public = factory.public_key()
        if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("the device's key must be RSA or ECDSA")
        return issue_device_certificate(self.certificate, self.key, public, mac, now, lifetime,
                                        phone_id_value=phone_id(number),
                                        organization=self.organization)

    def crl(self, revoked: list[Revoked], now: datetime, lifetime: timedelta) -> bytes:
        """The DER CRL listing `revoked` (RFC 5280 §5), thisUpdate `now`."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject)
                   .last_update(now).next_update(now + lifetime))
        for item in revoked:
            entry = (x509.RevokedCertificateBuilder().serial_number(item.serial)
                     .revocation_date(item.revoked_at))
            if item.reason in REASONS:
                entry = entry.add_extension(x509.CRLReason(REASONS[item.reason]), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.key, hashes.SHA256()).public_bytes(Encoding.DER)


def write_public_file(path: Path, data: bytes) -> None:
    """Replace `path` by `data` atomically (a new file renamed over it): a reader such as a
    starting KDC sees the old CRL or the new one, never part of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


class RequestSigner:
    """Signs seed 004 certificate requests (common/pki/selfcert.py) for devices."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self._signer: Signer = file_signer(load_private_key(key_file),
                                           x509.load_pem_x509_certificate(
                                               cert_file.read_bytes()))

    def request(self, mac: str, realm: str, not_before: datetime, not_after: datetime
                ) -> bytes:
        profile = SelfCertProfile(1, not_before, not_after, realm, mac, KEY_ECDSA_P256, None)
        return build_request(profile, self._signer)
