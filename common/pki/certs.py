"""Building the certificates a realm needs (no I/O): a CA, the KDC's PKINIT certificate
(id-pkinit-san krbtgt/REALM@REALM of type NT-SRV-INST and EKU id-pkinit-KPKdc, RFC 4556
§3.2.4, MIT's convention since 1.18) and PKINIT client certificates (id-pkinit-san
principal@REALM, EKU id-pkinit-KPClientAuth). Device PKI (manufacturer CA, MAC subjects,
self-issued certificates) is the device-agent issue's (#4)."""

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from common.codes import NameType
from common.messages.pkinit import (
    ID_PKINIT_KP_CLIENT_AUTH,
    ID_PKINIT_KP_KDC,
    ID_PKINIT_SAN,
    Krb5PrincipalName,
    encode_krb5_principal_name,
)
from common.messages.types import PrincipalName

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def pkinit_san(realm: str, name: PrincipalName) -> x509.OtherName:
    return x509.OtherName(ObjectIdentifier(ID_PKINIT_SAN),
                          encode_krb5_principal_name(Krb5PrincipalName(realm, name)))


def build_ca(key: PrivateKey, common_name: str, organization: str, now: datetime,
             lifetime: timedelta = timedelta(days=3650)) -> x509.Certificate:
    name = _name(common_name, organization)
    public = key.public_key()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))


def _issue(ca: x509.Certificate, ca_key: PrivateKey, public: rsa.RSAPublicKey |
           ec.EllipticCurvePublicKey, subject: x509.Name, san: x509.OtherName, eku: str,
           now: datetime, lifetime: timedelta) -> x509.Certificate:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
            .add_extension(x509.KeyUsage(True, True, True, False, True, False, False, False,
                                         False), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(eku)]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))


def issue_kdc_certificate(ca: x509.Certificate, ca_key: PrivateKey,
                          public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, realm: str,
                          host: str, now: datetime,
                          lifetime: timedelta = timedelta(days=825)) -> x509.Certificate:
    san = pkinit_san(realm, PrincipalName(NameType.NT_SRV_INST, ("krbtgt", realm)))
    return _issue(ca, ca_key, public, _name(host, realm), san, ID_PKINIT_KP_KDC, now, lifetime)


def issue_client_certificate(ca: x509.Certificate, ca_key: PrivateKey,
                             public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, realm: str,
                             principal: str, now: datetime,
                             lifetime: timedelta = timedelta(days=365)) -> x509.Certificate:
    san = pkinit_san(realm, PrincipalName(NameType.NT_PRINCIPAL, tuple(principal.split("/"))))
    return _issue(ca, ca_key, public, _name(f"{principal}@{realm}", realm), san,
                  ID_PKINIT_KP_CLIENT_AUTH, now, lifetime)


# The phone ID of an operator-issued device certificate (DESIGN.md §2), SHA-256 of the phone
# number, is the subject's serialNumber attribute (2.5.4.5) in hex: a standard field that every
# certificate library keeps (64 hex digits, exactly X.520's upper bound for serialNumber).
#
# Certificates issued before carried it in a private extension instead, an OCTET STRING under
# the UUID-derived arc below (ITU-T X.667). That OID has an arc above 2^32-1, and Heimdal's
# certificate library silently drops any certificate carrying it; it is still read
# (device_policy.phone_id_of), never written.
PHONE_ID_OID = "2.25.147685396830501606439889228675142073421"


def phone_id(phone_number: str) -> bytes:
    """SHA-256 of the phone number's digits (the seed profile used SHA-1)."""
    import hashlib

    return hashlib.sha256("".join(c for c in phone_number if c.isdigit()).encode()).digest()


def issue_device_certificate(ca: x509.Certificate, ca_key: PrivateKey,
                             public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, mac: str,
                             now: datetime, lifetime: timedelta = timedelta(days=3650),
                             phone_id_value: bytes | None = None,
                             organization: str = "Manufacturer") -> x509.Certificate:
    """A device certificate with the MAC as subject CN and no PKINIT SAN: a factory certificate
    (manufacturer CA) or, with `phone_id_value` (the subject's serialNumber, in hex), an
    operator-issued one (operator CA)."""
    subject = _name(mac, organization)
    if phone_id_value is not None:
        subject = x509.Name([*subject, x509.NameAttribute(NameOID.SERIAL_NUMBER,
                                                          phone_id_value.hex())])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(ca.subject).public_key(public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + lifetime)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
               .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False,
                                            False), critical=False))
    return builder.sign(ca_key, hashes.SHA256())


def issue_device_signing_certificate(ca: x509.Certificate, ca_key: PrivateKey,
                                     public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
                                     mac: str, now: datetime,
                                     lifetime: timedelta = timedelta(days=3650)
                                     ) -> x509.Certificate:
    """The device's factory certificate-signing certificate (seed 004): a CA limited to one
    level, so the device can issue itself certificates that chain to the manufacturer."""
    return (x509.CertificateBuilder().subject_name(_name(f"{mac} signing", "Manufacturer"))
            .issuer_name(ca.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, False, False,
                                         False), critical=True)
            .sign(ca_key, hashes.SHA256()))
