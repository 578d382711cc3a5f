"""The certificate delivery (seed 001, FIG. 7 "new CTA certificate", FIG. 9; seed 004): what
the signaling controller sends a device over its ESP SA once the provisioning service has
issued its operator certificate, and the checks the device makes before it touches its token.
No I/O.

The delivery is a SIP MESSAGE (RFC 3428) from the controller to the device, inside the
device's ESP SA, so the device opens no listener of its own:

    MESSAGE sip:cta-<mac>@<REALM> SIP/2.0
    From: <sip:provisioning@<REALM>>;tag=...   To: <sip:cta-<mac>@<REALM>>
    Content-Type: application/vnd.telekey.certificate-delivery+json

    {"request": "<base64 DER: the seed 004 signed certificate request>",
     "certificate": "<base64 DER: the operator device certificate>",
     "chain": ["<base64 DER: certificates between it and the operator root>", ...]}

The device answers 200 OK when it acted on it (or holds that certificate already) and 403
Forbidden with `Warning: 399 <device> "<STATUS>"` when it refused it; nothing else changes
for a refused delivery. `verify_delivery` checks, in order: the request as
common/pki/selfcert.py `verify_request` does (signer under the operator root in the token,
signature, profile, this device, notBefore later than the current self-issued
certificate's); then the certificate: it chains to the operator root (CERTIFICATE_UNTRUSTED),
names this device (OTHER_DEVICE), carries a phone ID (NO_PHONE_ID), certifies the factory key
(KEY_MISMATCH), has the validity the signed request states (REQUEST_MISMATCH: the provisioning
server's signature vouches for this certificate), and starts later than the operator
certificate the device holds (REPLAY, seed 001 FIG. 9: "the new certificate's starting time is
greater than the starting time of the old certificate thereby ensuring the new certificate is
not a replay").
"""

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.calls import sip
from common.calls.sip import SipMessage
from common.errors import KerberosError, MalformedMessage
from common.pki.chain import verify_chain
from common.pki.device_policy import mac_principal, phone_id_of
from common.pki.selfcert import SelfCertProfile, SelfCertRefused, verify_request

CONTENT_TYPE = "application/vnd.telekey.certificate-delivery+json"
MAX_CHAIN = 4
MAX_BODY = 32_768


@dataclass(frozen=True, slots=True)
class CertificateDelivery:
    request: bytes  # DER ContentInfo(SignedData) of common/pki/selfcert.py
    certificate: bytes  # DER operator device certificate
    chain: tuple[bytes, ...] = ()


def encode_delivery(delivery: CertificateDelivery) -> bytes:
    return json.dumps({
        "request": base64.b64encode(delivery.request).decode(),
        "certificate": base64.b64encode(delivery.certificate).decode(),
        "chain": [base64.b64encode(c).decode() for c in delivery.chain]}).encode()


def decode_delivery(data: bytes) -> CertificateDelivery:
    """The MESSAGE body; MalformedMessage if it is not a delivery."""
    if len(data) > MAX_BODY:
        raise MalformedMessage("DELIVERY_TOO_LONG", str(len(data)))
    try:
        value = json.loads(data)
        chain = value.get("chain", [])
        if not isinstance(chain, list) or len(chain) > MAX_CHAIN:
            raise ValueError("chain")
        return CertificateDelivery(
            base64.b64decode(value["request"], validate=True),
            base64.b64decode(value["certificate"], validate=True),
            tuple(base64.b64decode(c, validate=True) for c in chain))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise MalformedMessage("BAD_DELIVERY", str(exc)[:200]) from exc


def device_uri(principal: str, realm: str) -> str:
    """`sip:cta-<mac>@REALM`, the device's address for a principal `cta/<mac>`."""
    return f"sip:{principal.replace('/', '-')}@{realm}"


def build_delivery_message(delivery: CertificateDelivery, *, principal: str, realm: str,
                           controller: str, call_id: str, branch: str, tag: str,
                           cseq: int = 1) -> bytes:
    """The SIP MESSAGE carrying `delivery` to device `principal`."""
    uri = device_uri(principal, realm)
    return sip.encode(sip.request("MESSAGE", uri, [
        ("via", f"SIP/2.0/UDP {controller};branch={branch}"), ("max-forwards", "70"),
        ("from", f"<sip:provisioning@{realm}>;tag={tag}"), ("to", f"<{uri}>"),
        ("call-id", call_id), ("cseq", f"{cseq} MESSAGE"), ("content-type", CONTENT_TYPE)],
        encode_delivery(delivery)))


def is_delivery(message: SipMessage) -> bool:
    return (message.is_request and message.method == "MESSAGE"
            and (message.header("content-type") or "").split(";")[0].strip().lower()
            == CONTENT_TYPE)


def answer(message: SipMessage, status: int, refusal: str | None = None,
           agent: str = "cta") -> bytes:
    """The device's response to a delivery; a refusal's status goes in a Warning header."""
    headers = [] if refusal is None else [
        ("warning", f'399 {agent} "{re.sub(r"[^A-Z0-9_]", "", refusal.upper())[:64]}"')]
    return sip.encode(sip.response(message, status, headers=headers))


def refusal_of(message: SipMessage) -> str | None:
    """The status tag in a refusal's Warning header."""
    match = re.search(r'"([A-Z0-9_]+)"', message.header("warning") or "")
    return match.group(1) if match else None


def verify_delivery(delivery: CertificateDelivery, *, operator_root: x509.Certificate,
                    device_mac: str, factory: x509.Certificate,
                    current_operator: x509.Certificate | None,
                    current_self_issued: x509.Certificate | None, now: datetime
                    ) -> tuple[SelfCertProfile, x509.Certificate]:
    """The request's profile and the operator certificate of a delivery the device may act
    on; SelfCertRefused (or MalformedMessage) otherwise (the module's docstring)."""
    profile = verify_request(
        delivery.request, operator_root=operator_root, device_mac=device_mac,
        current_not_before=None if current_self_issued is None
        else current_self_issued.not_valid_before_utc, now=now)
    try:
        cert = x509.load_der_x509_certificate(delivery.certificate)
        chain = [x509.load_der_x509_certificate(c) for c in delivery.chain]
    except ValueError as exc:
        raise MalformedMessage("BAD_CERTIFICATE", str(exc)[:200]) from exc
    try:
        verify_chain(cert, chain, [operator_root], now)
    except KerberosError as exc:
        raise SelfCertRefused("CERTIFICATE_UNTRUSTED", exc.status) from exc
    if mac_principal(cert) != "cta/" + device_mac.replace(":", "").lower():
        raise SelfCertRefused("OTHER_DEVICE", cert.subject.rfc4514_string())
    if phone_id_of(cert) is None:
        raise SelfCertRefused("NO_PHONE_ID", cert.subject.rfc4514_string())
    if _spki(cert) != _spki(factory):
        raise SelfCertRefused("KEY_MISMATCH", "it does not certify the factory key")
    if (cert.not_valid_before_utc, cert.not_valid_after_utc) != (profile.not_before,
                                                                  profile.not_after):
        raise SelfCertRefused("REQUEST_MISMATCH", "validity differs from the request's")
    if current_operator is not None and \
            cert.not_valid_before_utc <= current_operator.not_valid_before_utc:
        raise SelfCertRefused("REPLAY", f"validity start {cert.not_valid_before_utc}")
    return profile, cert


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
