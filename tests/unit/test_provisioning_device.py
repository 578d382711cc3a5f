"""The device's side of provisioning without a token or sockets: the FIG. 5A/5B state machines
(common/provisioning/device_states.py) through a whole life, and the checks a certificate
delivery must pass before the device acts on it (common/provisioning/delivery.py): a forged,
old, mismatched or replayed delivery is refused with its reason."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from common.calls import sip
from common.codes import ErrorCode
from common.crypto.cms import file_signer
from common.errors import MalformedMessage
from common.pki.certs import build_ca, issue_device_certificate, phone_id
from common.pki.selfcert import KEY_ECDSA_P256, SelfCertProfile, SelfCertRefused, build_request
from common.provisioning.delivery import (
    CertificateDelivery,
    answer,
    build_delivery_message,
    decode_delivery,
    is_delivery,
    refusal_of,
    verify_delivery,
)
from common.provisioning.device_states import DeviceEvent, DeviceStates, policy_refusal

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAC = "00:1a:2b:3c:4d:5e"
E = DeviceEvent


def test_a_device_life_through_both_machines() -> None:
    states = DeviceStates()
    walk = [(E.LOGIN_FAILED, "HFC_NOT_CONFIGURED", "TELEPHONY_NOT_CONFIGURED"),
            (E.LOGIN_FACTORY, "UNPROVISIONED_HFC_ACCESS", "UNPROVISIONED_TELEPHONY_ACCESS"),
            (E.AP_REFUSED, "UNPROVISIONED_HFC_ACCESS", "UNPROVISIONED_TELEPHONY_ACCESS"),
            (E.SA_ESTABLISHED, "UNPROVISIONED_HFC_ACCESS", "UNPROVISIONED_SECURITY_CONTEXT"),
            (E.SA_LOST, "UNPROVISIONED_HFC_ACCESS", "UNPROVISIONED_TELEPHONY_ACCESS"),
            (E.SA_ESTABLISHED, "UNPROVISIONED_HFC_ACCESS", "UNPROVISIONED_SECURITY_CONTEXT"),
            (E.CERTIFICATE_RECEIVED, "FULLY_REGISTERED_WITH_HFC",
             "RECEIVED_OPERATOR_CERTIFICATE"),
            (E.LOGIN_OPERATOR, "PROVISIONED_HFC_ACCESS", "PROVISIONED_TELEPHONY_ACCESS"),
            (E.SA_ESTABLISHED, "PROVISIONED_HFC_ACCESS", "PROVISIONED_TELEPHONY_ACCESS"),
            (E.CERTIFICATE_RECEIVED, "PROVISIONED_HFC_ACCESS",  # a service change (FIG. 9)
             "RECEIVED_OPERATOR_CERTIFICATE"),
            (E.LOGIN_OPERATOR, "PROVISIONED_HFC_ACCESS", "PROVISIONED_TELEPHONY_ACCESS"),
            (E.OPERATOR_REFUSED, "HFC_NOT_CONFIGURED", "TELEPHONY_NOT_CONFIGURED"),
            (E.LOGIN_FACTORY, "UNPROVISIONED_HFC_ACCESS", "UNPROVISIONED_TELEPHONY_ACCESS"),
            (E.TICKET_EXPIRED, "UNPROVISIONED_HFC_ACCESS", "TELEPHONY_NOT_CONFIGURED")]
    for n, (event, hfc, telephony) in enumerate(walk):
        states.feed(event, T0 + timedelta(seconds=n))
        assert (states.hfc, states.telephony) == (hfc, telephony), event
    assert states.history[0].event is E.LOGIN_FACTORY  # a failed login changed nothing
    assert states.since["telephony"] == T0 + timedelta(seconds=len(walk) - 1)


def test_which_kdc_errors_condemn_the_operator_certificate() -> None:
    assert policy_refusal(ErrorCode.KDC_ERR_CLIENT_REVOKED)
    assert policy_refusal(ErrorCode.KDC_ERR_REVOKED_CERTIFICATE)
    assert policy_refusal(ErrorCode.KDC_ERR_CANT_VERIFY_CERTIFICATE)
    assert not policy_refusal(ErrorCode.KRB_AP_ERR_SKEW)
    assert not policy_refusal(ErrorCode.KDC_ERR_PREAUTH_FAILED)
    assert not policy_refusal(None)  # no answer from the KDC


class Pki:
    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = build_ca(self.root_key, "operator CA", "LAB.TEST", T0 - timedelta(days=1))
        signer_key = ec.generate_private_key(ec.SECP256R1())
        self.signer = file_signer(signer_key, self._leaf(signer_key, self.root,
                                                         self.root_key, "provisioning"))
        self.factory_key = rsa.generate_private_key(65537, 2048)
        maker_key = ec.generate_private_key(ec.SECP256R1())
        maker = build_ca(maker_key, "maker", "Maker", T0 - timedelta(days=1))
        self.factory = issue_device_certificate(maker, maker_key, self.factory_key.public_key(),
                                                MAC, T0 - timedelta(days=1))

    @staticmethod
    def _leaf(key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate,
              issuer_key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
                .issuer_name(issuer.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(T0 - timedelta(days=1)).not_valid_after(T0 + timedelta(days=9))
                .sign(issuer_key, hashes.SHA256()))

    def delivery(self, issued: datetime, *, signer=None, key=None, mac: str = MAC,
                 request_start: datetime | None = None) -> CertificateDelivery:
        cert = issue_device_certificate(self.root, self.root_key,
                                        (key or self.factory_key).public_key(), mac, issued,
                                        timedelta(days=365), phone_id_value=phone_id("15551000100"),
                                        organization="LAB.TEST")
        start = request_start or cert.not_valid_before_utc
        profile = SelfCertProfile(1, start, cert.not_valid_after_utc, "LAB.TEST", mac,
                                  KEY_ECDSA_P256)
        return CertificateDelivery(build_request(profile, signer or self.signer),
                                   cert.public_bytes(Encoding.DER))

    def verify(self, delivery: CertificateDelivery, current: x509.Certificate | None = None):
        return verify_delivery(delivery, operator_root=self.root, device_mac=MAC,
                               factory=self.factory, current_operator=current,
                               current_self_issued=None, now=T0 + timedelta(minutes=1))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def test_a_good_delivery_and_its_message(pki: Pki) -> None:
    delivery = pki.delivery(T0)
    profile, cert = pki.verify(delivery)
    assert profile.device_id == MAC and cert.not_valid_before_utc == profile.not_before
    message = sip.parse(build_delivery_message(
        delivery, principal="cta/001a2b3c4d5e", realm="LAB.TEST",
        controller="sigctl/sc1.lab.test", call_id="c1@sc1", branch="z9hG4bKc1", tag="t1"))
    assert is_delivery(message) and message.uri == "sip:cta-001a2b3c4d5e@LAB.TEST"
    assert decode_delivery(message.body) == delivery
    refused = sip.parse(answer(message, 403, "REPLAY"))
    assert (refused.status, refusal_of(refused), refused.call_id) == (403, "REPLAY", "c1@sc1")


@pytest.mark.parametrize("case, status", [
    ("forged signer", "SIGNER_NOT_UNDER_OPERATOR_ROOT"),
    ("another device", "OTHER_DEVICE"),
    ("another key", "KEY_MISMATCH"),
    ("request for another certificate", "REQUEST_MISMATCH"),
    ("replayed", "REPLAY"),
    ("older", "REPLAY"),
])
def test_refused_deliveries(pki: Pki, case: str, status: str) -> None:
    current = None
    if case == "forged signer":
        key = ec.generate_private_key(ec.SECP256R1())
        stranger = build_ca(key, "someone", "Elsewhere", T0 - timedelta(days=1))
        delivery = pki.delivery(T0, signer=file_signer(key, stranger))
    elif case == "another device":
        delivery = pki.delivery(T0)
        other = pki.delivery(T0, mac="00:1a:2b:3c:4d:5f")
        delivery = replace(delivery, certificate=other.certificate)
    elif case == "another key":
        delivery = pki.delivery(T0, key=rsa.generate_private_key(65537, 2048))
    elif case == "request for another certificate":
        delivery = pki.delivery(T0, request_start=T0 + timedelta(hours=1))
    else:
        delivery = pki.delivery(T0 if case == "replayed" else T0 - timedelta(hours=1))
        current = x509.load_der_x509_certificate(pki.delivery(T0).certificate)
    with pytest.raises(SelfCertRefused) as refused:
        pki.verify(delivery, current)
    assert refused.value.status == status


def test_malformed_deliveries() -> None:
    for body in (b"not json", b'{"request": "!!", "certificate": ""}', b"[]",
                 b'{"request": "", "certificate": "", "chain": ["", "", "", "", ""]}',
                 b"{" + b" " * 40_000 + b"}"):
        with pytest.raises(MalformedMessage):
            decode_delivery(body)
