"""PKINIT requests with one thing wrong at a time, and the KRB-ERROR code each must get
(RFC 4556 §3.1.3, RFC 4120 §7.5.9). Shared by the core test and the live-daemon test."""

import dataclasses
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.crypto.cms import file_signer
from common.kerberos.pkinit_client import PkinitOptions, build_pkinit_as_req, krbtgt
from common.messages.types import PrincipalName
from tests.conftest import MIT_FIXTURES

REALM = "EXAMPLE.TEST"


def pem(name):
    return x509.load_pem_x509_certificate((MIT_FIXTURES / name).read_bytes())


def signer(name: str):
    key = load_pem_private_key((MIT_FIXTURES / f"{name}.key").read_bytes(), None)
    return file_signer(key, pem(f"{name}.pem"))


def other_ca() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Other CA")])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def flip_last_byte(data: bytes) -> bytes:
    """The SignerInfo's signature is the last field of the SignedData: corrupt it."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def request(now: datetime, *, client="phone1", who="phone1", **options):
    return build_pkinit_as_req(
        cname=PrincipalName(1, (client,)), realm=REALM, sname=krbtgt(REALM), signer=signer(who),
        now=now, till=now + timedelta(hours=10), options=PkinitOptions(**options))


def _no_checksum(pack):
    return dataclasses.replace(pack, pk_authenticator=dataclasses.replace(
        pack.pk_authenticator, pa_checksum=None))


def _wrong_checksum(pack):
    return dataclasses.replace(pack, pk_authenticator=dataclasses.replace(
        pack.pk_authenticator, pa_checksum=bytes(20)))


def _group2_public_value(pack):
    """A 1024-bit MODP group 2 public value (OpenSSL 3 will not generate one, so by hand)."""
    import secrets

    from common.crypto.dh import known_groups
    from common.messages.cms import AlgorithmIdentifier, SubjectPublicKeyInfo
    from common.messages.pkinit import (
        DH_PUBLIC_NUMBER,
        DomainParameters,
        encode_dh_public_value,
        encode_domain_parameters,
    )

    group = next(g for g in known_groups() if g.number == 2)
    params = encode_domain_parameters(DomainParameters(group.p, group.g, group.q, None, None))
    y = pow(group.g, secrets.randbits(256), group.p)
    return dataclasses.replace(pack, client_public_value=SubjectPublicKeyInfo(
        AlgorithmIdentifier(DH_PUBLIC_NUMBER, params), encode_dh_public_value(y)))


def _wrong_checksum2(pack):
    from common.messages.cms import AlgorithmIdentifier
    from common.messages.pkinit import PaChecksum2

    return dataclasses.replace(pack, pk_authenticator=dataclasses.replace(
        pack.pk_authenticator, pa_checksum2=PaChecksum2(
            bytes(32), AlgorithmIdentifier("2.16.840.1.101.3.4.2.1", None))))


# name -> (builder(now) -> request bytes, expected code). The KDC runs at `now`, except for
# EXPIRED, where both sides live 3000 days later (the fixture certificates end in 2029; the MIT
# test CA's key is not available to mint an expired certificate).
EXPIRED = timedelta(days=3000)
CASES = {
    "expired_certificate": (lambda now: request(now).data, 71),
    "wrong_eku": (lambda now: request(now, client="phone1", who="kdc").data, 77),
    "bad_cms_signature": (lambda now: request(now, tamper_signed=flip_last_byte).data, 64),
    "missing_pa_checksum": (lambda now: request(now, tamper_auth_pack=_no_checksum).data, 79),
    "wrong_pa_checksum": (lambda now: request(now, tamper_auth_pack=_wrong_checksum).data, 41),
    "wrong_pa_checksum2": (lambda now: request(now, tamper_auth_pack=_wrong_checksum2).data, 41),
    "clock_skew": (lambda now: request(now - timedelta(minutes=10)).data, 37),
    "dh_1024_bits": (lambda now: request(now, tamper_auth_pack=_group2_public_value).data, 65),
    "unknown_principal": (lambda now: request(now, client="nobody").data, 6),
    "name_mismatch": (lambda now: request(now, client="phone2").data, 75),
}
