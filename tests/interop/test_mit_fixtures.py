"""Bytes made by MIT Kerberos 1.20.1 (../shared/interop/mit/fixtures, copied to tests/interop/mit):
every message decodes and re-encodes byte-identically, nested PKINIT/CMS structures too, and
MIT's tickets decrypt with MIT's keytabs to the keys the .json sidecars name."""

import hashlib
import json
from datetime import UTC, datetime

import pytest

from common.codes import KeyUsage, PaDataType, TypedDataType
from common.crypto import Key
from common.kerberos.keytab import decode_keytab, encode_keytab, find_key
from common.messages.ap_rep import decode_ap_rep, decode_enc_ap_rep_part, encode_ap_rep
from common.messages.ap_req import decode_ap_req, decode_authenticator, encode_ap_req
from common.messages.cms import (
    ID_ENVELOPED_DATA,
    decode_content_info,
    decode_enveloped_data,
    decode_signed_data,
    encode_enveloped_data,
    encode_signed_attributes,
    encode_signed_data,
)
from common.messages.kdc_rep import decode_as_rep, decode_tgs_rep, encode_as_rep, encode_tgs_rep
from common.messages.kdc_req import (
    decode_as_req,
    decode_tgs_req,
    encode_as_req,
    encode_kdc_req_body,
    encode_tgs_req,
)
from common.messages.krb_error import (
    decode_krb_error,
    decode_method_data,
    decode_typed_data,
    encode_krb_error,
    encode_method_data,
    encode_typed_data,
)
from common.messages.pkinit import (
    DH_PUBLIC_NUMBER,
    ID_PKINIT_AUTH_DATA,
    ID_PKINIT_DHKEY_DATA,
    decode_auth_pack,
    decode_kdc_dh_key_info,
    decode_pa_pk_as_rep,
    decode_pa_pk_as_req,
    decode_td_dh_parameters,
    encode_auth_pack,
    encode_kdc_dh_key_info,
    encode_pa_pk_as_rep,
    encode_pa_pk_as_req,
    encode_td_dh_parameters,
)
from common.messages.ticket import decode_enc_ticket_part, encode_enc_ticket_part
from common.messages.types import find_padata
from tests.conftest import MIT_FIXTURES

CODECS = {
    0x6A: (decode_as_req, encode_as_req),
    0x6B: (decode_as_rep, encode_as_rep),
    0x6C: (decode_tgs_req, encode_tgs_req),
    0x6D: (decode_tgs_rep, encode_tgs_rep),
    0x6E: (decode_ap_req, encode_ap_req),
    0x6F: (decode_ap_rep, encode_ap_rep),
    0x7E: (decode_krb_error, encode_krb_error),
}
DER_FILES = sorted(MIT_FIXTURES.glob("*.der"))


def load(name: str) -> bytes:
    return (MIT_FIXTURES / name).read_bytes()


def sidecar(name: str) -> dict:
    return json.loads((MIT_FIXTURES / f"{name}.json").read_text())


def test_every_fixture_is_covered():
    assert len(DER_FILES) == 19
    assert {f.read_bytes()[0] for f in DER_FILES} <= set(CODECS)


@pytest.mark.parametrize("path", DER_FILES, ids=[p.name for p in DER_FILES])
def test_fixture_round_trips_byte_identically(path):
    data = path.read_bytes()
    decode, encode = CODECS[data[0]]
    assert encode(decode(data)) == data


@pytest.mark.parametrize("name", ["asreq_pkinit_dh.der", "asreq_pkinit_dh_udp.der",
                                  "asreq_pkinit_rsa.der"])
def test_pkinit_as_req_nested(name):
    data = load(name)
    req = decode_as_req(data)
    pa = find_padata(req.padata, PaDataType.PA_PK_AS_REQ)
    pk_req = decode_pa_pk_as_req(pa.padata_value)
    assert encode_pa_pk_as_req(pk_req) == pa.padata_value
    signed = decode_signed_data(pk_req.signed_auth_pack)
    assert encode_signed_data(signed) == pk_req.signed_auth_pack
    assert signed.encap_content_info.e_content_type == ID_PKINIT_AUTH_DATA
    signer = signed.signer_infos[0]
    # The signed attributes re-encode (with the SET tag) to the bytes inside the message.
    assert encode_signed_attributes(signer.signed_attrs)[1:] in pk_req.signed_auth_pack
    auth_pack = decode_auth_pack(signed.encap_content_info.e_content)
    assert encode_auth_pack(auth_pack) == signed.encap_content_info.e_content
    # RFC 4556 §3.2.1: paChecksum is SHA-1 of the DER KDC-REQ-BODY. Strict DER means the
    # re-encoded body is the received body, so this is the check a KDC makes.
    body = encode_kdc_req_body(req.req_body)
    assert body in data
    assert auth_pack.pk_authenticator.pa_checksum == hashlib.sha1(body).digest()
    if "rsa" in name:
        assert auth_pack.client_public_value is None  # RSA key transport
    else:
        assert auth_pack.client_public_value is not None
        assert auth_pack.supported_kdfs  # MIT 1.20 offers the RFC 8636 KDFs
        assert find_padata(req.padata, PaDataType.PA_AS_FRESHNESS) is not None
        assert auth_pack.pk_authenticator.freshness_token


def test_pkinit_dh_reply_nested():
    request = decode_auth_pack(decode_signed_data(decode_pa_pk_as_req(find_padata(
        decode_as_req(load("asreq_pkinit_dh.der")).padata, 16).padata_value).signed_auth_pack
    ).encap_content_info.e_content)
    rep = decode_as_rep(load("asrep_pkinit_dh.der"))
    pa = find_padata(rep.padata, PaDataType.PA_PK_AS_REP)
    pk_rep = decode_pa_pk_as_rep(pa.padata_value)
    assert encode_pa_pk_as_rep(pk_rep) == pa.padata_value
    assert pk_rep.enc_key_pack is None and pk_rep.dh_info is not None
    assert pk_rep.dh_info.kdf.kdf_id == "1.3.6.1.5.2.3.6.2"  # sha256, MIT's first choice
    signed = decode_signed_data(pk_rep.dh_info.dh_signed_data)
    assert signed.encap_content_info.e_content_type == ID_PKINIT_DHKEY_DATA
    key_info = decode_kdc_dh_key_info(signed.encap_content_info.e_content)
    assert encode_kdc_dh_key_info(key_info) == signed.encap_content_info.e_content
    assert key_info.nonce == request.pk_authenticator.nonce


def test_pkinit_rsa_reply_nested():
    rep = decode_as_rep(load("asrep_pkinit_rsa.der"))
    pk_rep = decode_pa_pk_as_rep(find_padata(rep.padata, PaDataType.PA_PK_AS_REP).padata_value)
    assert pk_rep.dh_info is None
    assert decode_content_info(pk_rep.enc_key_pack).content_type == ID_ENVELOPED_DATA
    enveloped = decode_enveloped_data(pk_rep.enc_key_pack)
    assert encode_enveloped_data(enveloped) == pk_rep.enc_key_pack
    assert enveloped.recipient_infos[0].key_encryption_algorithm.algorithm == \
        "1.2.840.113549.1.1.1"  # rsaEncryption
    # MIT 1.20's client offers only des-ede3-cbc for the content (platform notes).
    assert enveloped.encrypted_content_info.content_encryption_algorithm.algorithm == \
        "1.2.840.113549.3.7"


def test_preauth_required_error_advertises_pkinit_and_freshness():
    err = decode_krb_error(load("krberror_preauth_required.der"))
    assert err.error_code == 25
    methods = decode_method_data(err.e_data)
    assert encode_method_data(methods) == err.e_data
    types = [m.padata_type for m in methods]
    assert PaDataType.PA_PK_AS_REQ in types and PaDataType.PA_AS_FRESHNESS in types
    assert find_padata(methods, PaDataType.PA_PK_AS_REQ).padata_value == b""
    assert find_padata(methods, PaDataType.PA_AS_FRESHNESS).padata_value


def test_dh_parameters_error_lists_groups():
    err = decode_krb_error(load("krberror_dh_key_parameters_not_accepted.der"))
    assert err.error_code == 65
    typed = decode_typed_data(err.e_data)
    assert encode_typed_data(typed) == err.e_data
    td = next(t for t in typed if t.data_type == TypedDataType.TD_DH_PARAMETERS)
    groups = decode_td_dh_parameters(td.data_value)
    assert encode_td_dh_parameters(groups) == td.data_value
    assert groups and all(g.algorithm == DH_PUBLIC_NUMBER for g in groups)


def _created(name: str) -> datetime:
    return datetime.fromtimestamp(sidecar(name)["created"], UTC)


@pytest.mark.parametrize("name,keytab", [
    ("apreq_sc1.der", "sigctl-sc1.keytab"),
    ("apreq_sc1_clientsubkey.der", "sigctl-sc1.keytab"),
    ("apreq_sc2.der", "sigctl-sc2.keytab"),
])
def test_mit_ap_req_decrypts_with_mit_keytab(name, keytab):
    meta = sidecar(name)
    req = decode_ap_req(load(name))
    entries = decode_keytab(load(keytab))
    principal = f"{req.ticket.sname}@{req.ticket.realm}"
    assert principal == meta["server"]
    entry = find_key(entries, principal, req.ticket.enc_part.etype, req.ticket.enc_part.kvno)
    service_key = Key(entry.enctype, entry.key)
    plain = service_key.decrypt(KeyUsage.KDC_REP_TICKET, req.ticket.enc_part.cipher)
    part = decode_enc_ticket_part(plain)
    assert encode_enc_ticket_part(part) == plain
    assert part.key.keytype == meta["session_key"]["enctype"]
    assert part.key.keyvalue.hex() == meta["session_key"]["key_hex"]
    assert f"{part.cname}@{part.crealm}" == meta["client"]
    assert int(part.authtime.timestamp()) == meta["ticket_times"]["authtime"]
    assert int(part.endtime.timestamp()) == meta["ticket_times"]["endtime"]

    session = Key(part.key.keytype, part.key.keyvalue)
    auth = decode_authenticator(session.decrypt(KeyUsage.AP_REQ_AUTH, req.authenticator.cipher))
    assert f"{auth.cname}@{auth.crealm}" == meta["client"]
    assert abs((auth.ctime - _created(name)).total_seconds()) <= 1
    if meta["client_subkey"]:
        assert auth.subkey.keyvalue.hex() == meta["client_subkey"]["key_hex"]
    else:
        assert auth.subkey is None


@pytest.mark.parametrize("req_name,rep_name", [
    ("apreq_sc1.der", "aprep_sc1.der"),
    ("apreq_sc1_clientsubkey.der", "aprep_sc1_clientsubkey.der"),
    ("apreq_sc2.der", "aprep_sc2.der"),
])
def test_mit_ap_rep_carries_acceptor_subkey(req_name, rep_name):
    meta = sidecar(rep_name)
    session = Key(meta["session_key"]["enctype"], bytes.fromhex(meta["session_key"]["key_hex"]))
    rep = decode_ap_rep(load(rep_name))
    part = decode_enc_ap_rep_part(session.decrypt(KeyUsage.AP_REP_ENCPART, rep.enc_part.cipher))
    assert part.subkey.keyvalue.hex() == meta["acceptor_subkey"]["key_hex"]


def test_tgs_req_carries_ap_req():
    req = decode_tgs_req(load("tgsreq_sc1.der"))
    pa = find_padata(req.padata, PaDataType.PA_TGS_REQ)
    ap_req = decode_ap_req(pa.padata_value)
    assert encode_ap_req(ap_req) == pa.padata_value
    assert str(ap_req.ticket.sname).startswith("krbtgt/")
    krbtgt = find_key(decode_keytab(load("all.keytab")),
                      f"{ap_req.ticket.sname}@{ap_req.ticket.realm}",
                      ap_req.ticket.enc_part.etype)
    plain = Key(krbtgt.enctype, krbtgt.key).decrypt(KeyUsage.KDC_REP_TICKET,
                                                     ap_req.ticket.enc_part.cipher)
    assert decode_enc_ticket_part(plain).cname.name_string == ("phone1",)
    assert str(decode_tgs_rep(load("tgsrep_sc1.der")).ticket.sname) == "sigctl/sc1.example.test"


@pytest.mark.parametrize("name", ["sigctl-sc1.keytab", "sigctl-sc2.keytab", "all.keytab"])
def test_mit_keytab_round_trips(name):
    data = load(name)
    entries = decode_keytab(data)
    assert entries
    assert encode_keytab(entries) == data
