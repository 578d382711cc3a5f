"""The AS exchange core with telekey's own PKINIT client: full round trips (DH with and without
the RFC 8636 KDF, group 16, RSA key transport) and, one defect at a time, the KRB-ERROR code
each bad request gets."""

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.crypto import Key
from common.errors import KerberosError
from common.kerberos.as_exchange import AsPolicy, handle_as_req
from common.kerberos.pkinit_client import process_pkinit_as_rep
from common.kerberos.replay import ReplayCache
from common.kerberos.tickets import KeyEntry, PrincipalEntry
from common.messages.krb_error import decode_typed_data
from common.messages.pkinit import decode_domain_parameters, decode_td_dh_parameters
from common.messages.ticket import decode_enc_ticket_part
from tests.conftest import MIT_FIXTURES
from tests.pkinit_cases import CASES, EXPIRED, REALM, other_ca, pem, request, signer


class Principals(dict):
    def get_principal(self, name):
        return self.get(name)


PRINCIPALS = Principals({
    "phone1": PrincipalEntry("phone1"), "phone2": PrincipalEntry("phone2"),
    f"krbtgt/{REALM}": PrincipalEntry(f"krbtgt/{REALM}", tuple(
        KeyEntry(1, Key.random(e)) for e in (20, 18, 19, 17)))})


def policy(**changes):
    settings = {"anchors": (pem("cacert.pem"),), "kdc_signer": signer("kdc"), **changes}
    return AsPolicy(realm=REALM, **settings)


def kdc(data, now, the_policy=None, replay=None):
    return handle_as_req(data, policy=the_policy or policy(), principals=PRINCIPALS, now=now,
                         replay=replay)


@pytest.mark.parametrize("options", [{}, {"kdfs": ()}, {"group": 16}, {"group": 0},
                                     {"group": 0, "enctypes": (20,)},
                                     {"pa_checksum2": "sha256"}, {"pa_checksum2": "sha512"},
                                     {"curve": "1.2.840.10045.3.1.7"},
                                     {"curve": "1.3.132.0.34", "kdfs": ()}],
                         ids=["dh14-kdf", "dh14-octetstring2key", "dh16", "rsa", "rsa-aes384",
                              "checksum2-sha256", "checksum2-sha512", "ecdh-p256",
                              "ecdh-p384-octetstring2key"])
def test_round_trip(options):
    now = datetime.now(UTC)
    req = request(now, **options)
    key = load_pem_private_key((MIT_FIXTURES / "phone1.key").read_bytes(), None)
    result = process_pkinit_as_rep(kdc(req.data, now), req, realm=REALM,
                                   anchors=[pem("cacert.pem")], now=now,
                                   decrypt_key=lambda k: key.decrypt(k, padding.PKCS1v15()))
    assert result.enc_part.sname.name_string == ("krbtgt", REALM)
    assert result.reply.enc_part.etype == options.get("enctypes", (18,))[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_defect_gets_its_code(name):
    build, code = CASES[name]
    now = datetime.now(UTC)
    if name == "expired_certificate":
        now += EXPIRED
    with pytest.raises(KerberosError) as err:
        kdc(build(now), now)
    assert int(err.value.code) == code, err.value


def test_untrusted_chain_is_70():
    now = datetime.now(UTC)
    with pytest.raises(KerberosError) as err:
        kdc(request(now).data, now, policy(anchors=(other_ca(),)))
    assert int(err.value.code) == 70


def test_replay_is_34():
    now = datetime.now(UTC)
    replay = ReplayCache(policy().max_skew * 2)
    data = request(now).data
    kdc(data, now, replay=replay)
    with pytest.raises(KerberosError) as err:
        kdc(data, now, replay=replay)
    assert int(err.value.code) == 34


def test_small_group_error_lists_accepted_groups():
    now = datetime.now(UTC)
    with pytest.raises(KerberosError) as err:
        kdc(CASES["dh_1024_bits"][0](now), now)
    (entry,) = decode_typed_data(err.value.e_data)
    assert entry.data_type == 109
    groups = decode_td_dh_parameters(entry.data_value)
    assert [decode_domain_parameters(g.parameters).p.bit_length() for g in groups] == \
        [2048, 3072, 4096]


def test_kdc_reply_checked_by_client():
    """A reply signed by a certificate that is not the KDC's is refused by our client."""
    now = datetime.now(UTC)
    req = request(now)
    forged = kdc(req.data, now, policy(kdc_signer=signer("phone1")))
    with pytest.raises(KerberosError):
        process_pkinit_as_rep(forged, req, realm=REALM, anchors=[pem("cacert.pem")], now=now)


def test_dh_key_reuse_within_window_and_expiration_sent():
    from datetime import timedelta

    from common.kerberos.as_exchange import PkinitState
    from common.messages.cms import decode_signed_data
    from common.messages.kdc_rep import decode_as_rep
    from common.messages.pkinit import decode_kdc_dh_key_info, decode_pa_pk_as_rep
    from common.messages.types import find_padata

    state = PkinitState()
    reuse = policy(dh_key_reuse=timedelta(seconds=60))
    now = datetime.now(UTC)

    def kdc_public(at):
        req = request(at)
        rep = decode_as_rep(handle_as_req(req.data, policy=reuse, principals=PRINCIPALS, now=at,
                                          state=state))
        pk = decode_pa_pk_as_rep(find_padata(rep.padata, 17).padata_value)
        info = decode_kdc_dh_key_info(
            decode_signed_data(pk.dh_info.dh_signed_data).encap_content_info.e_content)
        return info.subject_public_key, info.dh_key_expiration

    first, expires = kdc_public(now)
    second, _ = kdc_public(now + timedelta(seconds=30))
    third, _ = kdc_public(now + timedelta(seconds=61))
    assert first == second != third
    assert expires == now.replace(microsecond=0) + timedelta(seconds=60)
    assert kdc_public(now)[1] is not None


def test_thumbprint_cache_remembers_chain_until_invalidated():
    from common.kerberos.as_exchange import PkinitState

    state = PkinitState()
    now = datetime.now(UTC)
    handle_as_req(request(now).data, policy=policy(), principals=PRINCIPALS, now=now,
                  state=state)
    assert len(state.verified_chains) == 1
    # With the anchor gone, a cached chain still passes until invalidated.
    untrusting = policy(anchors=(other_ca(),))
    handle_as_req(request(now).data, policy=untrusting, principals=PRINCIPALS, now=now,
                  state=state)
    state.invalidate()
    with pytest.raises(KerberosError) as err:
        handle_as_req(request(now).data, policy=untrusting, principals=PRINCIPALS, now=now,
                      state=state)
    assert int(err.value.code) == 70


def test_freshness_token_round_trip_and_expiry():
    from datetime import timedelta

    from common.kerberos.as_exchange import make_freshness_token
    from common.messages.kdc_req import KdcReq, decode_as_req, encode_as_req
    from common.messages.krb_error import decode_method_data

    now = datetime.now(UTC)
    strict = policy(require_freshness=True)
    bare = decode_as_req(request(now).data)
    with pytest.raises(KerberosError) as err:
        kdc(encode_as_req(KdcReq(5, 10, None, bare.req_body)), now, strict)
    token = decode_method_data(err.value.e_data)[1].padata_value
    assert kdc(request(now, freshness_token=token).data, now, strict)
    with pytest.raises(KerberosError) as err:
        kdc(request(now).data, now, strict)
    assert int(err.value.code) == 24
    newest = max(PRINCIPALS.get_principal(f"krbtgt/{REALM}").keys,
                 key=lambda k: (k.kvno, k.key.enctype)).key
    old = make_freshness_token(newest.prf(b"telekey-freshness-v1"), now - timedelta(hours=1))
    with pytest.raises(KerberosError) as err:
        kdc(request(now, freshness_token=old).data, now, strict)
    assert int(err.value.code) == 90


def test_controller_tickets_last_seven_days_by_default():
    from datetime import timedelta

    from common.kerberos.pkinit_client import build_pkinit_as_req
    from common.messages.kdc_rep import decode_as_rep
    from common.messages.types import PrincipalName
    from tests.pkinit_cases import signer as client_signer

    store = Principals(PRINCIPALS)
    store["sigctl/sc1.example.test"] = PrincipalEntry("sigctl/sc1.example.test",
                                                      (KeyEntry(1, Key.random(18)),))
    now = datetime.now(UTC).replace(microsecond=0)
    for sname, till, expected in (("sigctl/sc1.example.test", timedelta(days=30), 7),
                                  (f"krbtgt/{REALM}", timedelta(days=30), None)):
        req = build_pkinit_as_req(
            cname=PrincipalName(1, ("phone1",)), realm=REALM,
            sname=PrincipalName(2, tuple(sname.split("/"))), signer=client_signer("phone1"),
            now=now, till=now + till)
        rep = decode_as_rep(handle_as_req(req.data, policy=policy(), principals=store, now=now))
        key = store.get_principal(sname).keys[0].key
        part = decode_enc_ticket_part(key.decrypt(2, rep.ticket.enc_part.cipher))
        lifetime = part.endtime - part.authtime
        assert lifetime == (timedelta(days=expected) if expected else policy().default_lifetime)


def test_client_refuses_reply_for_another_request_wrong_nonce():
    """A genuine, correctly signed KDC reply, but to a different request: its KDCDHKeyInfo
    carries the other request's nonce."""
    now = datetime.now(UTC)
    mine, other = request(now), request(now)
    reply = kdc(other.data, now)
    with pytest.raises(KerberosError) as err:
        process_pkinit_as_rep(reply, mine, realm=REALM, anchors=[pem("cacert.pem")], now=now)
    assert err.value.status == "NONCE_MISMATCH"


def test_client_refuses_reply_with_bad_kdc_signature():
    """The KDC's SignedData with one signature byte changed."""
    from common.messages.kdc_rep import KdcRep, decode_as_rep, encode_as_rep
    from common.messages.pkinit import (
        DhRepInfo,
        PaPkAsRep,
        decode_pa_pk_as_rep,
        encode_pa_pk_as_rep,
    )
    from common.messages.types import PaData, find_padata

    now = datetime.now(UTC)
    req = request(now)
    rep = decode_as_rep(kdc(req.data, now))
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, 17).padata_value)
    signed = pk.dh_info.dh_signed_data
    broken = signed[:-1] + bytes([signed[-1] ^ 1])  # the signature is the last field
    tampered = PaPkAsRep(DhRepInfo(broken, pk.dh_info.server_dh_nonce, pk.dh_info.kdf), None)
    forged = encode_as_rep(KdcRep(rep.pvno, rep.msg_type,
                                  (PaData(17, encode_pa_pk_as_rep(tampered)),), rep.crealm,
                                  rep.cname, rep.ticket, rep.enc_part))
    with pytest.raises(KerberosError) as err:
        process_pkinit_as_rep(forged, req, realm=REALM, anchors=[pem("cacert.pem")], now=now)
    assert err.value.status == "BAD_SIGNATURE"
