"""common.crypto.cms: MIT's own PKINIT signatures verify (client AuthPack signed with
phone1.pem, KDC DH reply signed with kdc.pem); tampering is caught; what we sign verifies."""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.codes import ErrorCode, PaDataType
from common.crypto.cms import (
    InvalidSignatureError,
    file_signer,
    sign_signed_data,
    signer_certificate,
    verify_signed_data,
)
from common.messages.cms import EncapsulatedContentInfo, decode_signed_data
from common.messages.kdc_rep import decode_as_rep
from common.messages.kdc_req import decode_as_req
from common.messages.pkinit import ID_PKINIT_DHKEY_DATA, decode_pa_pk_as_rep, decode_pa_pk_as_req
from common.messages.types import find_padata
from tests.conftest import MIT_FIXTURES


def pem(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((MIT_FIXTURES / name).read_bytes())


def client_signed_data(name: str = "asreq_pkinit_dh.der"):
    req = decode_as_req((MIT_FIXTURES / name).read_bytes())
    pa = decode_pa_pk_as_req(find_padata(req.padata, PaDataType.PA_PK_AS_REQ).padata_value)
    return decode_signed_data(pa.signed_auth_pack)


@pytest.mark.parametrize("name", ["asreq_pkinit_dh.der", "asreq_pkinit_rsa.der"])
def test_mit_client_signature_verifies(name):
    signed = client_signed_data(name)
    cert = signer_certificate(signed)
    assert cert == pem("phone1.pem")
    assert verify_signed_data(signed, cert) == signed.encap_content_info.e_content


def test_mit_kdc_signature_verifies():
    rep = decode_as_rep((MIT_FIXTURES / "asrep_pkinit_dh.der").read_bytes())
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, PaDataType.PA_PK_AS_REP).padata_value)
    signed = decode_signed_data(pk.dh_info.dh_signed_data)
    cert = signer_certificate(signed, [pem("kdc.pem")])
    assert cert == pem("kdc.pem")
    verify_signed_data(signed, cert)


def test_tampered_content_and_wrong_key_fail():
    signed = client_signed_data()
    content = bytearray(signed.encap_content_info.e_content)
    content[-1] ^= 1
    tampered = signed.__class__(**{
        **{f: getattr(signed, f) for f in signed.__dataclass_fields__},
        "encap_content_info": EncapsulatedContentInfo(
            signed.encap_content_info.e_content_type, bytes(content))})
    with pytest.raises(InvalidSignatureError) as err:
        verify_signed_data(tampered, pem("phone1.pem"))
    assert err.value.status == "MESSAGE_DIGEST_MISMATCH"
    assert err.value.code is ErrorCode.KDC_ERR_INVALID_SIG
    with pytest.raises(InvalidSignatureError):
        verify_signed_data(signed, pem("kdc.pem"))


def test_what_we_sign_verifies_and_names_us():
    key = load_pem_private_key((MIT_FIXTURES / "kdc.key").read_bytes(), None)
    signer = file_signer(key, pem("kdc.pem"), (pem("cacert.pem"),))
    der = sign_signed_data(ID_PKINIT_DHKEY_DATA, b"\x30\x00", signer)
    signed = decode_signed_data(der)
    assert signed.encap_content_info.e_content_type == ID_PKINIT_DHKEY_DATA
    assert signer_certificate(signed) == pem("kdc.pem")
    assert verify_signed_data(signed, pem("kdc.pem")) == b"\x30\x00"
    assert len(signed.certificates) == 2


def test_mit_rsa_reply_opens_with_client_key():
    """MIT's RSA-mode encKeyPack, opened with phone1's key: a SignedData ReplyKeyPack."""
    from cryptography.hazmat.primitives.asymmetric import padding

    from common.crypto.cms import open_envelope
    from common.messages.pkinit import ID_PKINIT_RKEY_DATA, decode_reply_key_pack

    rep = decode_as_rep((MIT_FIXTURES / "asrep_pkinit_rsa.der").read_bytes())
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, PaDataType.PA_PK_AS_REP).padata_value)
    key = load_pem_private_key((MIT_FIXTURES / "phone1.key").read_bytes(), None)
    inner = open_envelope(pk.enc_key_pack, lambda k: key.decrypt(k, padding.PKCS1v15()))
    signed = decode_signed_data(inner)
    assert signed.encap_content_info.e_content_type == ID_PKINIT_RKEY_DATA
    verify_signed_data(signed, signer_certificate(signed, [pem("kdc.pem")]))
    pack = decode_reply_key_pack(signed.encap_content_info.e_content)
    assert pack.reply_key.keytype == rep.enc_part.etype


@pytest.mark.parametrize("cipher", ["1.2.840.113549.3.7", "2.16.840.1.101.3.4.1.42"])
def test_envelope_round_trip(cipher):
    import os

    from cryptography.hazmat.primitives.asymmetric import padding

    from common.crypto.cms import envelope, open_envelope

    key = load_pem_private_key((MIT_FIXTURES / "phone1.key").read_bytes(), None)
    sealed = envelope(b"\x30\x03\x02\x01\x05", pem("phone1.pem"), cipher, os.urandom)
    assert open_envelope(sealed, lambda k: key.decrypt(k, padding.PKCS1v15())) == \
        b"\x30\x03\x02\x01\x05"
