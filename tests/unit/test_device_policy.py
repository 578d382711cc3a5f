"""Seed 001's certificate rules in the AS exchange (common/pki/device_policy.py): factory
certificates bind by MAC and get the unprovisioned restriction; self-issued chains are
accepted; operator device certificates need an active customer; CRLs are honoured."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.codes import KeyUsage
from common.crypto import Key
from common.crypto.cms import file_signer
from common.errors import KerberosError
from common.kerberos.as_exchange import AsPolicy, PkinitState, handle_as_req
from common.kerberos.pkinit_client import PkinitOptions, build_pkinit_as_req, krbtgt
from common.kerberos.tickets import KeyEntry, PrincipalEntry
from common.messages.kdc_rep import decode_as_rep
from common.messages.restriction import STATE_UNPROVISIONED, find_restriction
from common.messages.ticket import decode_enc_ticket_part
from common.messages.types import PrincipalName
from common.pki.certs import build_ca, issue_device_certificate, phone_id
from common.pki.device_policy import Customer
from tests.pkinit_cases import signer

REALM = "EXAMPLE.TEST"
NOW = datetime.now(UTC)
MAC = "00:1a:2b:3c:4d:5e"
PRINCIPAL = "cta/001a2b3c4d5e"
KRBTGT_KEY = KeyEntry(1, Key.random(18))
MANUFACTURER_KEY = ec.generate_private_key(ec.SECP256R1())
MANUFACTURER_CA = build_ca(MANUFACTURER_KEY, "Manufacturer CA", "Manufacturer", NOW)
OPERATOR_KEY = rsa.generate_private_key(65537, 2048)
OPERATOR_CA = build_ca(OPERATOR_KEY, "Operator CA", REALM, NOW)
DEVICE_KEY = rsa.generate_private_key(65537, 2048)


class Store(dict):
    def get_principal(self, name):
        return self.get(name)

    def customer_by_phone_id(self, pid):
        return self.get(("customer", pid))


def policy(**changes):
    settings = {"anchors": (OPERATOR_CA,), "kdc_signer": signer("kdc"),
                "manufacturer_anchors": (MANUFACTURER_CA,),
                "unprovisioned_numbers": ("611", "911"), **changes}
    return AsPolicy(realm=REALM, **settings)


def login(cert, key=DEVICE_KEY, chain=(), cname=PRINCIPAL, store=None, the_policy=None,
          state=None):
    store = store if store is not None else Store()
    store[f"krbtgt/{REALM}"] = PrincipalEntry(f"krbtgt/{REALM}", (KRBTGT_KEY,))
    req = build_pkinit_as_req(cname=PrincipalName(1, tuple(cname.split("/"))), realm=REALM,
                              sname=krbtgt(REALM), signer=file_signer(key, cert, chain),
                              now=NOW, till=NOW + timedelta(hours=1),
                              options=PkinitOptions())
    rep = decode_as_rep(handle_as_req(req.data, policy=the_policy or policy(), principals=store,
                                      now=NOW, customers=store,
                                      state=state or PkinitState()))
    return decode_enc_ticket_part(KRBTGT_KEY.key.decrypt(KeyUsage.KDC_REP_TICKET,
                                                         rep.ticket.enc_part.cipher))


def factory_certificate():
    return issue_device_certificate(MANUFACTURER_CA, MANUFACTURER_KEY, DEVICE_KEY.public_key(),
                                    MAC, NOW)


def test_factory_certificate_binds_by_mac_and_is_unprovisioned():
    part = login(factory_certificate())
    assert part.cname.name_string == ("cta", "001a2b3c4d5e")
    restriction = find_restriction(part.authorization_data)
    assert restriction.state == STATE_UNPROVISIONED
    assert restriction.allowed_numbers == ("611", "911")


def test_factory_certificate_for_another_name_is_75():
    with pytest.raises(KerberosError) as err:
        login(factory_certificate(), cname="cta/00aabbccddee")
    assert int(err.value.code) == 75


def test_self_issued_chain_is_accepted():
    """device cert -> device signing cert (in the token, seed 004) -> manufacturer CA."""
    signing_key = ec.generate_private_key(ec.SECP256R1())
    signing_cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME,
                                                                f"{MAC} signing")]))
                    .issuer_name(MANUFACTURER_CA.subject).public_key(signing_key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(NOW - timedelta(days=1))
                    .not_valid_after(NOW + timedelta(days=365))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .sign(MANUFACTURER_KEY, hashes.SHA256()))
    new_key = ec.generate_private_key(ec.SECP256R1())
    self_issued = issue_device_certificate(signing_cert, signing_key, new_key.public_key(), MAC,
                                           NOW, timedelta(days=30))
    part = login(self_issued, key=new_key, chain=(signing_cert,))
    assert part.cname.name_string == ("cta", "001a2b3c4d5e")


def operator_certificate(number="+1 555 0100"):
    return issue_device_certificate(OPERATOR_CA, OPERATOR_KEY, DEVICE_KEY.public_key(), MAC,
                                    NOW, phone_id_value=phone_id(number), organization=REALM)


def test_operator_certificate_with_active_customer_is_unrestricted():
    store = Store({("customer", phone_id("+1 555 0100")):
                   Customer("+15550100", phone_id("+1 555 0100"), MAC, True)})
    part = login(operator_certificate(), store=store)
    assert find_restriction(part.authorization_data) is None


@pytest.mark.parametrize("active", [False, None], ids=["suspended", "unknown"])
def test_operator_certificate_without_active_customer_is_18(active):
    store = Store()
    if active is not None:
        store[("customer", phone_id("+1 555 0100"))] = Customer("+15550100",
                                                                 phone_id("+1 555 0100"), MAC,
                                                                 active)
    with pytest.raises(KerberosError) as err:
        login(operator_certificate(), store=store)
    assert int(err.value.code) == 18


def revoking(cert):
    return (x509.CertificateRevocationListBuilder().issuer_name(OPERATOR_CA.subject)
           .last_update(NOW - timedelta(hours=1)).next_update(NOW + timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                    .serial_number(cert.serial_number)
                                    .revocation_date(NOW - timedelta(minutes=30)).build())
           .sign(OPERATOR_KEY, hashes.SHA256()))


def test_revoked_operator_certificate_is_72():
    cert = operator_certificate()
    store = Store({("customer", phone_id("+1 555 0100")):
                   Customer("+15550100", phone_id("+1 555 0100"), MAC, True)})
    with pytest.raises(KerberosError) as err:
        login(cert, store=store, the_policy=policy(crls=(revoking(cert),)))
    assert int(err.value.code) == 72


def test_cached_chain_still_checks_customer_and_policy():
    """A chain verified once is not verified again, but the customer record is read at every
    login, and a policy with other CRLs binds the certificate again."""
    cert, state = operator_certificate(), PkinitState()
    store = Store({("customer", phone_id("+1 555 0100")):
                   Customer("+15550100", phone_id("+1 555 0100"), MAC, True)})
    login(cert, store=store, state=state)
    assert len(state.verified_chains) == 1
    store[("customer", phone_id("+1 555 0100"))] = Customer("+15550100",
                                                             phone_id("+1 555 0100"), MAC, False)
    with pytest.raises(KerberosError) as suspended:
        login(cert, store=store, state=state)
    assert int(suspended.value.code) == 18
    store[("customer", phone_id("+1 555 0100"))] = Customer("+15550100",
                                                             phone_id("+1 555 0100"), MAC, True)
    with pytest.raises(KerberosError) as revoked:
        login(cert, store=store, the_policy=policy(crls=(revoking(cert),)), state=state)
    assert int(revoked.value.code) == 72
    login(cert, store=store, state=state)  # the first policy again: accepted


def test_device_restriction_known_answer():
    """docs/protocol.md's known-answer vector, in both codecs."""
    from common.messages.asn1.telekey import DeviceRestriction as Schema
    from common.messages.base import encode_der_reference
    from common.messages.restriction import (
        DeviceRestriction,
        decode_device_restriction,
        encode_device_restriction,
    )

    value = DeviceRestriction(1, ("611", "911"))
    expected = bytes.fromhex("3013a003020101a10c300a0c033631310c03393131")
    assert encode_device_restriction(value) == expected
    assert encode_der_reference(value, Schema()) == expected
    assert decode_device_restriction(expected) == value


def test_phone_id_in_the_subject_serial_number_and_the_legacy_extension_still_read():
    """New operator certificates carry the phone ID as the subject's serialNumber (a field
    Heimdal keeps) and no private OID (one with an arc above 2^32-1 made Heimdal drop the
    certificate); a certificate with the old extension still logs in."""
    from cryptography.x509.oid import ObjectIdentifier

    from common.pki.certs import PHONE_ID_OID
    from common.pki.device_policy import phone_id_of

    pid = phone_id("+1 555 0100")
    new = operator_certificate()
    assert [a.value for a in new.subject.get_attributes_for_oid(
        x509.NameOID.SERIAL_NUMBER)] == [pid.hex()]
    assert all(e.oid.dotted_string != PHONE_ID_OID for e in new.extensions)
    assert phone_id_of(new) == pid
    legacy = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, MAC)]))
              .issuer_name(OPERATOR_CA.subject).public_key(DEVICE_KEY.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(NOW - timedelta(minutes=5))
              .not_valid_after(NOW + timedelta(days=30))
              .add_extension(x509.UnrecognizedExtension(ObjectIdentifier(PHONE_ID_OID),
                                                        b"\x04\x20" + pid), critical=False)
              .sign(OPERATOR_KEY, hashes.SHA256()))
    assert phone_id_of(legacy) == pid
    store = Store({("customer", pid): Customer("+15550100", pid, MAC, True)})
    part = login(legacy, store=store)
    assert find_restriction(part.authorization_data) is None
