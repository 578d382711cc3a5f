"""common.kerberos.as_exchange with MIT's own PKINIT AS-REQ (kinit 1.20, DH group 14,
RFC 8636 KDFs), processed at the time it was made: the reply is well formed, signed by the KDC
certificate, and its ticket carries the client named in the certificate."""

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.codes import ErrorCode, KeyUsage, PaDataType, TicketFlags
from common.crypto import Key
from common.crypto.cms import file_signer, signer_certificate, verify_signed_data
from common.errors import KerberosError
from common.kerberos.as_exchange import AsPolicy, handle_as_req, krbtgt_name
from common.kerberos.tickets import KeyEntry, PrincipalEntry
from common.messages.cms import decode_signed_data
from common.messages.kdc_rep import decode_as_rep
from common.messages.kdc_req import KdcReq, decode_as_req, encode_as_req
from common.messages.krb_error import decode_method_data
from common.messages.pkinit import (
    decode_auth_pack,
    decode_kdc_dh_key_info,
    decode_pa_pk_as_rep,
    decode_pa_pk_as_req,
)
from common.messages.ticket import decode_enc_ticket_part
from common.messages.types import find_padata
from tests.conftest import MIT_FIXTURES

REALM = "EXAMPLE.TEST"


def pem(name):
    return x509.load_pem_x509_certificate((MIT_FIXTURES / name).read_bytes())


class Principals(dict):
    def get_principal(self, name):
        return self.get(name)


@pytest.fixture
def krbtgt():
    return KeyEntry(1, Key.random(18))


@pytest.fixture
def principals(krbtgt):
    return Principals({"phone1": PrincipalEntry("phone1"),
                       f"krbtgt/{REALM}": PrincipalEntry(f"krbtgt/{REALM}", (krbtgt,))})


@pytest.fixture
def policy():
    key = load_pem_private_key((MIT_FIXTURES / "kdc.key").read_bytes(), None)
    return AsPolicy(realm=REALM, anchors=(pem("cacert.pem"),),
                    kdc_signer=file_signer(key, pem("kdc.pem")))


def mit_request():
    data = (MIT_FIXTURES / "asreq_pkinit_dh.der").read_bytes()
    req = decode_as_req(data)
    pa = decode_pa_pk_as_req(find_padata(req.padata, PaDataType.PA_PK_AS_REQ).padata_value)
    auth = decode_auth_pack(decode_signed_data(pa.signed_auth_pack).encap_content_info.e_content)
    return data, req, auth


def test_mit_dh_request_gets_signed_reply(policy, principals, krbtgt):
    data, req, auth = mit_request()
    now = auth.pk_authenticator.ctime + timedelta(seconds=1)
    rep = decode_as_rep(handle_as_req(data, policy=policy, principals=principals, now=now))
    assert rep.cname == req.req_body.cname and rep.crealm == REALM
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, PaDataType.PA_PK_AS_REP).padata_value)
    assert pk.dh_info.kdf.kdf_id == "1.3.6.1.5.2.3.6.2"  # MIT offers sha256 first
    signed = decode_signed_data(pk.dh_info.dh_signed_data)
    assert signer_certificate(signed) == pem("kdc.pem")
    info = decode_kdc_dh_key_info(verify_signed_data(signed, pem("kdc.pem")))
    assert info.nonce == auth.pk_authenticator.nonce
    assert pk.dh_info.server_dh_nonce is None  # MIT sends no clientDHNonce
    part = decode_enc_ticket_part(krbtgt.key.decrypt(KeyUsage.KDC_REP_TICKET,
                                                     rep.ticket.enc_part.cipher))
    assert part.cname.name_string == ("phone1",)
    assert part.flags & TicketFlags.INITIAL and part.flags & TicketFlags.PRE_AUTHENT
    assert rep.ticket.sname == krbtgt_name(REALM)


def test_request_without_pkinit_gets_preauth_required(policy, principals):
    data, req, auth = mit_request()
    bare = encode_as_req(KdcReq(req.pvno, req.msg_type, None, req.req_body))
    with pytest.raises(KerberosError) as err:
        handle_as_req(bare, policy=policy, principals=principals,
                      now=auth.pk_authenticator.ctime)
    assert err.value.code is ErrorCode.KDC_ERR_PREAUTH_REQUIRED
    methods = decode_method_data(err.value.e_data)
    assert [m.padata_type for m in methods] == [PaDataType.PA_PK_AS_REQ,
                                                PaDataType.PA_AS_FRESHNESS]
    assert len(methods[1].padata_value) == 24


def test_mit_token_is_not_ours_so_required_freshness_refuses(principals):
    """MIT's request carries MIT's KDC's token: with freshness required that is 24."""
    import dataclasses

    data, _, auth = mit_request()
    key = load_pem_private_key((MIT_FIXTURES / "kdc.key").read_bytes(), None)
    strict = dataclasses.replace(
        AsPolicy(realm=REALM, anchors=(pem("cacert.pem"),),
                 kdc_signer=file_signer(key, pem("kdc.pem"))), require_freshness=True)
    with pytest.raises(KerberosError) as err:
        handle_as_req(data, policy=strict, principals=principals,
                      now=auth.pk_authenticator.ctime)
    assert err.value.code is ErrorCode.KDC_ERR_PREAUTH_FAILED


def test_skewed_request_gets_skew_error(policy, principals):
    data, _, auth = mit_request()
    with pytest.raises(KerberosError) as err:
        handle_as_req(data, policy=policy, principals=principals,
                      now=auth.pk_authenticator.ctime + timedelta(minutes=6))
    assert err.value.code is ErrorCode.KRB_AP_ERR_SKEW
