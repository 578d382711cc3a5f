"""Encrypted-timestamp pre-authentication (RFC 4120 §5.2.7.2) for principals with keys — the
controller-to-controller link's ticket: common.kerberos.keytab_login against
common.kerberos.as_exchange."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.codes import ErrorCode, KeyUsage, PaDataType, TicketFlags
from common.crypto import Key
from common.crypto.cms import file_signer
from common.errors import KerberosError
from common.kerberos.as_exchange import AsPolicy, handle_as_req
from common.kerberos.keytab_login import build_keytab_as_req, process_keytab_as_rep
from common.kerberos.replay import ReplayCache
from common.kerberos.tickets import KeyEntry, PrincipalEntry
from common.messages.kdc_req import decode_as_req, encode_as_req
from common.messages.krb_error import decode_method_data
from common.messages.padata import decode_etype_info2
from common.messages.ticket import decode_enc_ticket_part
from common.messages.types import find_padata
from tests.conftest import MIT_FIXTURES

REALM = "EXAMPLE.TEST"
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SC1_KEY = Key(18, bytes(range(32)))
SC2_KEY = Key(18, bytes(range(32, 64)))


class Principals(dict):
    def get_principal(self, name):
        return self.get(name)


def pem(name):
    return x509.load_pem_x509_certificate((MIT_FIXTURES / name).read_bytes())


@pytest.fixture
def principals():
    return Principals({
        "sigctl/sc1.lab.test": PrincipalEntry("sigctl/sc1.lab.test", (KeyEntry(3, SC1_KEY),)),
        "sigctl/sc2.lab.test": PrincipalEntry("sigctl/sc2.lab.test", (KeyEntry(1, SC2_KEY),)),
        f"krbtgt/{REALM}": PrincipalEntry(f"krbtgt/{REALM}", (KeyEntry(1, Key.random(18)),))})


@pytest.fixture
def policy():
    key = load_pem_private_key((MIT_FIXTURES / "kdc.key").read_bytes(), None)
    return AsPolicy(realm=REALM, anchors=(pem("cacert.pem"),),
                    kdc_signer=file_signer(key, pem("kdc.pem")))


def _request(key=SC1_KEY, now=NOW):
    return build_keytab_as_req(client="sigctl/sc1.lab.test", service="sigctl/sc2.lab.test",
                               realm=REALM, key=key, now=now)


def test_keytab_login_gets_a_ticket_for_the_peer_controller(principals, policy):
    request = _request()
    reply = handle_as_req(request.data, policy=policy, principals=principals, now=NOW)
    rep, part = process_keytab_as_rep(reply, request)
    assert part.sname.name_string == ("sigctl", "sc2.lab.test")
    assert rep.padata is None
    ticket = decode_enc_ticket_part(SC2_KEY.decrypt(KeyUsage.KDC_REP_TICKET,
                                                    rep.ticket.enc_part.cipher))
    assert ticket.cname.name_string == ("sigctl", "sc1.lab.test")
    assert ticket.key.keyvalue == part.key.keyvalue
    assert ticket.flags & TicketFlags.PRE_AUTHENT and ticket.flags & TicketFlags.INITIAL


def test_preauth_required_offers_enc_timestamp_with_etype_info2(principals, policy):
    req = decode_as_req(_request().data)
    data = encode_as_req(type(req)(req.pvno, req.msg_type, None, req.req_body))
    with pytest.raises(KerberosError) as err:
        handle_as_req(data, policy=policy, principals=principals, now=NOW)
    assert err.value.code == ErrorCode.KDC_ERR_PREAUTH_REQUIRED
    methods = decode_method_data(err.value.e_data)
    assert find_padata(methods, PaDataType.PA_ENC_TIMESTAMP) is not None
    info = decode_etype_info2(find_padata(methods, PaDataType.PA_ETYPE_INFO2).padata_value)
    assert [(e.etype, e.salt) for e in info] == [(18, "EXAMPLE.TESTsigctlsc1.lab.test")]


@pytest.mark.parametrize("case, code", [
    ("wrong key", ErrorCode.KDC_ERR_PREAUTH_FAILED),
    ("skew", ErrorCode.KRB_AP_ERR_SKEW),
    ("replay", ErrorCode.KRB_AP_ERR_REPEAT),
])
def test_bad_enc_timestamp_is_refused(principals, policy, case, code):
    replay = ReplayCache(timedelta(minutes=10))
    if case == "wrong key":
        request = _request(key=Key(18, bytes(32)))
    elif case == "skew":
        request = _request(now=NOW - timedelta(minutes=6))
    else:
        request = _request()
        handle_as_req(request.data, policy=policy, principals=principals, now=NOW,
                      replay=replay)
    with pytest.raises(KerberosError) as err:
        handle_as_req(request.data, policy=policy, principals=principals, now=NOW,
                      replay=replay)
    assert err.value.code == code


def test_a_reply_for_another_request_is_refused(principals, policy):
    first, second = _request(), _request()
    reply = handle_as_req(first.data, policy=policy, principals=principals, now=NOW)
    with pytest.raises(KerberosError):
        process_keytab_as_rep(reply, second)
