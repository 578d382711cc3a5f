"""The AP exchange core: MIT's AP-REQs (fixtures, with MIT's keytab, at their creation time)
are accepted; our AP-REQ/AP-REP round-trip; each defect gets its KRB-ERROR code."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from common.crypto import Key
from common.errors import KerberosError
from common.kerberos.ap_exchange import (
    KeytabKeys,
    accept_ap_req,
    build_ap_rep,
    build_ap_req,
    process_ap_rep,
)
from common.kerberos.keytab import decode_keytab
from common.kerberos.replay import ReplayCache
from common.kerberos.tickets import KeyEntry, issue_ticket
from common.messages.types import PrincipalName
from tests.conftest import MIT_FIXTURES

SKEW = timedelta(minutes=5)


def mit_keys():
    return KeytabKeys(decode_keytab((MIT_FIXTURES / "sigctl-sc1.keytab").read_bytes()))


@pytest.mark.parametrize("name", ["apreq_sc1", "apreq_sc1_clientsubkey", "apreq_sc1_wire"])
def test_mit_ap_req_accepted_with_mit_keytab(name):
    meta = json.loads((MIT_FIXTURES / f"{name}.der.json").read_text())
    now = datetime.fromtimestamp(meta["created"], UTC)
    accepted = accept_ap_req((MIT_FIXTURES / f"{name}.der").read_bytes(), keys=mit_keys(),
                             now=now, max_skew=SKEW, replay=ReplayCache(2 * SKEW))
    assert accepted.server == "sigctl/sc1.example.test@EXAMPLE.TEST"
    assert accepted.client.startswith("phone1@")
    if "session_key" in meta:
        assert accepted.session_key.data.hex() == meta["session_key"]["key_hex"]


def test_gss_token_body_accepted():
    """python-gssapi's token with the RFC 2743 header stripped is a plain AP-REQ whose
    authenticator carries a 0x8003 checksum."""
    data = (MIT_FIXTURES / "apreq_sc1_gss.der").read_bytes()
    meta = json.loads((MIT_FIXTURES / "apreq_sc1_gss.der.json").read_text())
    if data[0] == 0x60:  # strip the GSS framing: 60 len 06 09 <krb5 oid> 01 00
        start = data.index(b"\x01\x00", 2) + 2
        data = data[start:]
    now = datetime.fromtimestamp(meta["created"], UTC)
    accepted = accept_ap_req(data, keys=mit_keys(), now=now, max_skew=SKEW, replay=None)
    assert accepted.authenticator.cksum.cksumtype == 0x8003


def _our_ticket(now, endtime=None, realm="LAB.TEST"):
    service_key = Key.random(18)
    issued = issue_ticket(realm=realm, cname=PrincipalName(1, ("cta", "001a2b3c4d5e")),
                          crealm=realm, sname=PrincipalName(2, ("sigctl", "sc1")),
                          server_key=KeyEntry(1, service_key), session_enctype=18, flags=0,
                          authtime=now.replace(microsecond=0),
                          endtime=(endtime or now + timedelta(days=7)).replace(microsecond=0),
                          authorization_data=None)
    return issued, service_key


def _lookup(service_key):
    def keys(sname, realm, enctype, kvno):
        return service_key
    return keys


def test_round_trip_with_binding_and_subkey():
    now = datetime.now(UTC)
    issued, service_key = _our_ticket(now)
    request = build_ap_req(ticket=issued.ticket, session_key=issued.session_key,
                           cname=PrincipalName(1, ("cta", "001a2b3c4d5e")), crealm="LAB.TEST",
                           now=now, binding=b"spi and suites")
    accepted = accept_ap_req(request.data, keys=_lookup(service_key), now=now, max_skew=SKEW,
                             replay=ReplayCache(2 * SKEW), binding=b"spi and suites")
    subkey = Key.random(18)
    part = process_ap_rep(build_ap_rep(accepted, subkey), request, issued.session_key)
    assert part.subkey.keyvalue == subkey.data


def _code(fn):
    with pytest.raises(KerberosError) as info:
        fn()
    return int(info.value.code)


def test_defects_get_their_codes():
    now = datetime.now(UTC)
    issued, service_key = _our_ticket(now)
    cname = PrincipalName(1, ("cta", "001a2b3c4d5e"))

    def request(at=now, binding=b"b", ticket=issued.ticket):
        return build_ap_req(ticket=ticket, session_key=issued.session_key, cname=cname,
                            crealm="LAB.TEST", now=at, binding=binding).data

    def accept(data, at=now, keys=None, replay=None, binding=b"b"):
        return accept_ap_req(data, keys=keys or _lookup(service_key), now=at, max_skew=SKEW,
                             replay=replay, binding=binding)

    assert _code(lambda: accept(request(), binding=b"other")) == 41  # MODIFIED
    assert _code(lambda: accept(request(at=now - timedelta(minutes=6)))) == 37  # SKEW
    assert _code(lambda: accept(request(), keys=_lookup(Key.random(18)))) == 31  # integrity
    expired, key2 = _our_ticket(now - timedelta(days=8), endtime=now - timedelta(hours=1))
    assert _code(lambda: accept(build_ap_req(
        ticket=expired.ticket, session_key=expired.session_key, cname=cname,
        crealm="LAB.TEST", now=now).data, keys=_lookup(key2))) == 32
    replay = ReplayCache(2 * SKEW)
    data = request()
    accept(data, replay=replay)
    assert _code(lambda: accept(data, replay=replay)) == 34  # REPEAT
    # A ticket for another service: NOT_US from a keytab that does not hold it.
    other = replace(issued.ticket, sname=PrincipalName(2, ("sigctl", "elsewhere")))
    mit = mit_keys()
    assert _code(lambda: accept(request(ticket=other), keys=mit)) == 35
    assert _code(lambda: accept(b"\x6e\x03\x02\x01\x05")) == 60  # malformed


def test_keytab_kvno_and_enctype():
    keys = mit_keys()
    sname, realm = ("sigctl", "sc1.example.test"), "EXAMPLE.TEST"
    assert keys(sname, realm, 18, None).enctype == 18
    assert _code(lambda: keys(sname, realm, 18, 99)) == 44
    assert _code(lambda: keys(sname, realm, 23, None)) == 45


def test_replay_cache_survives_a_wall_clock_step():
    """With elapsed (monotonic) time given, an entry outlives a forward step of the wall clock
    and the step back: the same fingerprint is still a replay."""
    from datetime import UTC, datetime, timedelta

    from common.kerberos.replay import Replay, ReplayCache

    t0 = datetime(2026, 12, 6, tzinfo=UTC)
    cache = ReplayCache(timedelta(minutes=10))
    cache.check_and_add(b"a", t0, 100.0)
    cache.check_and_add(b"b", t0 + timedelta(minutes=30), 101.0)  # forward 30 min: a stays
    with pytest.raises(Replay):
        cache.check_and_add(b"a", t0, 102.0)  # and back
    cache.check_and_add(b"c", t0 + timedelta(minutes=30), 100.0 + 601)  # both windows passed
    cache.check_and_add(b"a", t0 + timedelta(minutes=30), 100.0 + 602)
    wall_only = ReplayCache(timedelta(minutes=10))
    wall_only.check_and_add(b"a", t0)
    wall_only.check_and_add(b"b", t0 + timedelta(minutes=30))
    wall_only.check_and_add(b"a", t0)  # without elapsed time the step made it forget
