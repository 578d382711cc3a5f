"""The TGS exchange core with telekey's TGS client: a round trip that carries the TGT's
restriction to the new ticket, and one defect at a time with its KRB-ERROR code (the AP-REQ
checks are common/ap_exchange.accept_ap_req with the TGS key usages)."""

from datetime import UTC, datetime, timedelta

import pytest

from common.crypto import Key
from common.errors import KerberosError
from common.kerberos.replay import ReplayCache
from common.kerberos.tgs_client import build_tgs_req, process_tgs_rep
from common.kerberos.tgs_exchange import handle_tgs_req
from common.kerberos.tickets import KeyEntry, PrincipalEntry, issue_ticket
from common.messages.kdc_req import decode_tgs_req, encode_tgs_req
from common.messages.restriction import (
    DeviceRestriction,
    find_restriction,
    restriction_authorization_data,
)
from common.messages.ticket import decode_enc_ticket_part
from common.messages.types import PrincipalName

REALM = "LAB.TEST"
CNAME = PrincipalName(1, ("cta", "001a2b3c4d5e"))
SKEW = timedelta(minutes=5)
KRBTGT_KEY = Key.random(18)
SERVICE_KEY = Key.random(18)


class Principals(dict):
    def get_principal(self, name):
        return self.get(name)


PRINCIPALS = Principals({
    f"krbtgt/{REALM}": PrincipalEntry(f"krbtgt/{REALM}", (KeyEntry(1, KRBTGT_KEY),)),
    "sigctl/sc2": PrincipalEntry("sigctl/sc2", (KeyEntry(3, SERVICE_KEY),))})


def tgt(now, endtime=None):
    return issue_ticket(realm=REALM, cname=CNAME, crealm=REALM,
                        sname=PrincipalName(2, ("krbtgt", REALM)),
                        server_key=KeyEntry(1, KRBTGT_KEY), session_enctype=18, flags=0,
                        authtime=now.replace(microsecond=0),
                        endtime=(endtime or now + timedelta(hours=10)).replace(microsecond=0),
                        authorization_data=restriction_authorization_data(
                            DeviceRestriction(1, ("611",))))


def request(now, issued, at=None):
    return build_tgs_req(tgt=issued.ticket, session_key=issued.session_key, cname=CNAME,
                         realm=REALM, sname=PrincipalName(2, ("sigctl", "sc2")), now=at or now,
                         lifetime=timedelta(days=7))


def kdc(data, now, replay=None):
    return handle_tgs_req(data, realm=REALM, principals=PRINCIPALS, now=now, enctypes=(18,),
                          max_skew=SKEW, default_lifetime=timedelta(days=7), replay=replay)


def code(fn):
    with pytest.raises(KerberosError) as info:
        fn()
    return int(info.value.code)


def test_round_trip_keeps_restriction():
    now = datetime.now(UTC)
    req = request(now, tgt(now))
    rep, part = process_tgs_rep(kdc(req.data, now), req)
    assert part.sname.name_string == ("sigctl", "sc2")
    ticket = decode_enc_ticket_part(SERVICE_KEY.decrypt(2, rep.ticket.enc_part.cipher))
    assert find_restriction(ticket.authorization_data).allowed_numbers == ("611",)


def test_defects():
    now = datetime.now(UTC)
    issued = tgt(now)
    assert code(lambda: kdc(request(now, issued, at=now - timedelta(minutes=6)).data,
                            now)) == 37
    expired = tgt(now - timedelta(days=1), endtime=now - timedelta(hours=1))
    assert code(lambda: kdc(request(now, expired).data, now)) == 32
    replay = ReplayCache(2 * SKEW)
    data = request(now, issued).data
    kdc(data, now, replay)
    assert code(lambda: kdc(data, now, replay)) == 34
    # The body changed after the authenticator's checksum was made: 41.
    from dataclasses import replace

    req = decode_tgs_req(request(now, issued).data)
    altered = replace(req, req_body=replace(req.req_body, nonce=req.req_body.nonce ^ 1))
    assert code(lambda: kdc(encode_tgs_req(altered), now)) == 41
    # A TGT from another realm's KDC is not ours.
    foreign = issue_ticket(realm="OTHER.TEST", cname=CNAME, crealm=REALM,
                           sname=PrincipalName(2, ("krbtgt", "OTHER.TEST")),
                           server_key=KeyEntry(1, KRBTGT_KEY), session_enctype=18, flags=0,
                           authtime=now.replace(microsecond=0),
                           endtime=(now + timedelta(hours=1)).replace(microsecond=0))
    assert code(lambda: kdc(request(now, foreign).data, now)) == 7  # S_PRINCIPAL_UNKNOWN
