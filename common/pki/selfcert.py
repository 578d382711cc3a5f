"""Self-issued device certificates (seed 004), the parts with no I/O: the signed request the
provisioning server sends (CMS SignedData over a SelfCertProfile, eContentType
ID_SELFCERT_PROFILE), its verification by the device, and the certificate the device then
issues itself with its factory certificate-signing key.

Checks on a request, in order: DER; the eContentType; the signer's certificate chains to the
operator root the device holds (and to no other root); the CMS signature; the profile's
version, validity (notBefore < notAfter) and device ID (must be this device's MAC); and
freshness: notBefore must be later than that of the certificate the device already issued
itself, so a replayed (or older) request is refused.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from common.codes import ErrorCode
from common.crypto.cms import (
    Signer,
    certificates_in,
    sign_signed_data,
    signer_certificate,
    verify_signed_data,
)
from common.errors import KerberosError
from common.messages.asn1 import selfcert as asn1
from common.messages.base import asn1_type, codec
from common.messages.cms import SubjectPublicKeyInfo, decode_signed_data, decode_spki
from common.pki.chain import verify_chain

# UUID arc (X.667): telekey has no enterprise number. Its arc is above 2^32-1, which some
# libraries refuse (Heimdal drops certificates carrying such an OID), but only telekey's own
# devices read this content type, so it stays (docs/protocol.md §5, phone ID).
ID_SELFCERT_PROFILE = "2.25.147685396830501606439889228675142073421.1"
KEY_ECDSA_P256, KEY_RSA_2048 = 1, 2


class SelfCertRefused(KerberosError):
    """A certificate request the device will not act on (status says why)."""

    code = ErrorCode.KDC_ERR_POLICY


@asn1_type(asn1.DeliveredKey)
@dataclass(frozen=True, slots=True)
class DeliveredKey:
    public_key: SubjectPublicKeyInfo
    encrypted_key: bytes
    wrapped_private_key: bytes


@asn1_type(asn1.SelfCertProfile)
@dataclass(frozen=True, slots=True)
class SelfCertProfile:
    version: int
    not_before: datetime
    not_after: datetime
    network_id: str
    device_id: str
    key_algorithm: int | None
    delivered_key: DeliveredKey | None = None


def deliver_key(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
                factory_public: rsa.RSAPublicKey,
                random: Callable[[int], bytes] = os.urandom) -> DeliveredKey:
    """The server side of key delivery: the private key as PKCS#8, wrapped (RFC 5649) under a
    fresh AES-256 key that only the device's factory key can recover. The device unwraps both
    inside its token, so the private key never exists in the agent's memory."""
    wrapping_key = random(32)
    pkcs8 = private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    spki = decode_spki(private_key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    return DeliveredKey(spki, factory_public.encrypt(wrapping_key, padding.PKCS1v15()),
                        aes_key_wrap_with_padding(wrapping_key, pkcs8))


decode_profile, encode_profile = codec(asn1.SelfCertProfile, SelfCertProfile)


def build_request(profile: SelfCertProfile, signer: Signer) -> bytes:
    """The provisioning server's signed request (DER ContentInfo(SignedData))."""
    return sign_signed_data(ID_SELFCERT_PROFILE, encode_profile(profile), signer)


def verify_request(data: bytes, *, operator_root: x509.Certificate, device_mac: str,
                   current_not_before: datetime | None, now: datetime) -> SelfCertProfile:
    """The profile of a request the device may act on, or SelfCertRefused / MalformedMessage."""
    signed = decode_signed_data(data)
    if signed.encap_content_info.e_content_type != ID_SELFCERT_PROFILE:
        raise SelfCertRefused("NOT_A_SELFCERT_REQUEST")
    cert = signer_certificate(signed)
    try:
        verify_chain(cert, certificates_in(signed), [operator_root], now)
    except KerberosError as exc:
        raise SelfCertRefused("SIGNER_NOT_UNDER_OPERATOR_ROOT", exc.status) from exc
    try:
        profile = decode_profile(verify_signed_data(signed, cert))
    except KerberosError as exc:
        raise SelfCertRefused("BAD_SIGNATURE", exc.status) from exc
    if profile.version != 1 or profile.not_before >= profile.not_after:
        raise SelfCertRefused("BAD_PROFILE")
    if profile.device_id.lower() != device_mac.lower():
        raise SelfCertRefused("OTHER_DEVICE", profile.device_id)
    if current_not_before is not None and profile.not_before <= current_not_before:
        raise SelfCertRefused("REPLAY", f"validity start {profile.not_before.isoformat()}")
    return profile


def build_self_issued(profile: SelfCertProfile, public: rsa.RSAPublicKey |
                      ec.EllipticCurvePublicKey, issuer: x509.Certificate,
                      issuer_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
                      serial: int) -> x509.Certificate:
    """The device's own certificate: the profile's validity, the device ID (MAC) as CN and
    the network ID as O, signed by the factory certificate-signing key (`issuer_key` may be a
    token-backed key object)."""
    subject = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, profile.network_id),
                         x509.NameAttribute(x509.NameOID.COMMON_NAME, profile.device_id)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject)
            .public_key(public).serial_number(serial)
            .not_valid_before(profile.not_before).not_valid_after(profile.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
            .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False,
                                         False), critical=False)
            .sign(issuer_key, hashes.SHA256()))
