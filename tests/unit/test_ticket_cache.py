"""The opened-ticket cache: a ticket is decrypted once, yet every check still runs on every
AP-REQ, nothing opened under an old key is reused, and the cache stays bounded."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from common.crypto import Key
from common.errors import IntegrityError, KerberosError
from common.kerberos.ap_exchange import accept_ap_req, build_ap_req
from common.kerberos.replay import ReplayCache
from common.kerberos.ticket_cache import TicketCache, open_ticket
from common.kerberos.tickets import KeyEntry, issue_ticket
from common.messages.types import EncryptedData, PrincipalName

SKEW = timedelta(minutes=5)
CNAME = PrincipalName(1, ("cta", "001a2b3c4d5e"))


def _ticket(now, service_key, days=7):
    return issue_ticket(realm="LAB.TEST", cname=CNAME, crealm="LAB.TEST",
                        sname=PrincipalName(2, ("sigctl", "sc1")),
                        server_key=KeyEntry(1, service_key), session_enctype=18, flags=0,
                        authtime=now.replace(microsecond=0),
                        endtime=(now + timedelta(days=days)).replace(microsecond=0),
                        authorization_data=None)


def _request(issued, now, binding=b"b"):
    return build_ap_req(ticket=issued.ticket, session_key=issued.session_key, cname=CNAME,
                        crealm="LAB.TEST", now=now, binding=binding).data


def _setup():
    """(now, service key, a ticket under it, an empty cache of 8, a replay cache)."""
    now = datetime.now(UTC)
    service_key = Key.random(18)
    return now, service_key, _ticket(now, service_key), TicketCache(8), ReplayCache(2 * SKEW)


def test_second_request_with_the_same_ticket_is_not_decrypted_again():
    now, service_key, issued, cache, replay = _setup()
    accepted = [accept_ap_req(_request(issued, now), keys=lambda *_: service_key, now=now,
                              max_skew=SKEW, replay=replay, binding=b"b", tickets=cache)
                for _ in range(3)]
    assert (cache.misses, cache.hits, len(cache)) == (1, 2, 1)
    # The same opened ticket (and session key, with its derived usage keys) each time, and
    # the same values as decrypting without a cache.
    assert accepted[0].session_key is accepted[2].session_key
    assert accepted[0].session_key == issued.session_key
    assert accepted[2].ticket == open_ticket(issued.ticket, service_key).part


def test_every_check_still_runs_on_a_hit():
    now, service_key, issued, cache, replay = _setup()

    def accept(data, at=now, binding=b"b"):
        return accept_ap_req(data, keys=lambda *_: service_key, now=at, max_skew=SKEW,
                             replay=replay, binding=binding, tickets=cache)

    first = _request(issued, now)
    accept(first)
    with pytest.raises(KerberosError) as repeat:
        accept(first)
    assert repeat.value.code == 34  # the replay cache, on a cached ticket
    with pytest.raises(KerberosError) as modified:
        accept(_request(issued, now), binding=b"other")
    assert modified.value.code == 41
    with pytest.raises(KerberosError) as skew:
        accept(_request(issued, now - timedelta(minutes=6)))
    assert skew.value.code == 37
    # A week later the same ticket has expired: refused, and forgotten.
    later = now + timedelta(days=8)
    with pytest.raises(KerberosError) as expired:
        accept(_request(issued, later), at=later)
    assert expired.value.code == 32
    assert len(cache) == 0
    assert cache.hits == 4  # the replay, the checksum, the skew and the expiry: all hits


def test_only_the_same_service_key_reuses_an_entry():
    """A reload of unchanged keys (new Key objects, same bytes) keeps the entry; a different
    key opens the ticket again, and fails on a ticket it cannot open."""
    now = datetime.now(UTC)
    old = Key.random(18)
    issued = _ticket(now, old)
    cache = TicketCache(8)
    cache.open(issued.ticket, old)
    assert cache.open(issued.ticket, Key(18, old.data)).service_key is old
    assert (cache.misses, cache.hits) == (1, 1)
    with pytest.raises(IntegrityError):
        cache.open(issued.ticket, Key.random(18))
    assert cache.misses == 2
    assert cache.open(issued.ticket, old).service_key is old  # the failure replaced nothing
    assert cache.hits == 2


def test_bad_ciphertext_is_never_kept():
    now = datetime.now(UTC)
    service_key = Key.random(18)
    issued = _ticket(now, service_key)
    cipher = bytearray(issued.ticket.enc_part.cipher)
    cipher[20] ^= 1
    bad = replace(issued.ticket, enc_part=EncryptedData(18, 1, bytes(cipher)))
    cache = TicketCache(8)
    for _ in range(2):
        with pytest.raises(IntegrityError):
            cache.open(bad, service_key)
    assert (len(cache), cache.misses, cache.hits) == (0, 2, 0)


def test_bounded_least_recently_used_first():
    now = datetime.now(UTC)
    service_key = Key.random(18)
    tickets = [_ticket(now, service_key).ticket for _ in range(3)]
    cache = TicketCache(2)
    cache.open(tickets[0], service_key)
    cache.open(tickets[1], service_key)
    cache.open(tickets[0], service_key)  # now the most recent
    cache.open(tickets[2], service_key)  # evicts tickets[1]
    assert len(cache) == 2
    cache.open(tickets[0], service_key)
    assert cache.hits == 2
    cache.open(tickets[1], service_key)
    assert cache.misses == 4
    off = TicketCache(0)
    off.open(tickets[0], service_key)
    off.open(tickets[0], service_key)
    assert (len(off), off.misses) == (0, 2)
