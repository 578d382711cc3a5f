"""Seed 002, FIG. 4 (common/enterprise/registration.py): the phone's and the controller's cores
wired back to back with a fixed clock, no sockets. Both sides reach the same ESP SA; FIG. 4's
failure handling: silence for a bad ICV, a replay, a token missing; GRJ (the only
unauthenticated answer) for stale key information and for an extension homed elsewhere;
retransmissions answered with the same reply; the lockout after N failures for T seconds;
and the SA construction against its known answers (tests/vectors/data/enterprise_ras.json)."""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.enterprise.keys import (
    C_B,
    IcvMismatch,
    Profile,
    check_value,
    generator_key,
    master_key_from_seed,
)
from common.enterprise.ras import NOT_HOMED, STALE_KEY, decode_message, encode_message
from common.enterprise.registration import (
    Gatekeeper,
    GatekeeperPolicy,
    KeyAnswer,
    PhoneKey,
    PhoneRegistration,
    derive_registration_sa,
    registration_hmac_key,
)
from common.errors import MalformedMessage
from common.pktc import esp

VECTORS = json.loads((Path(__file__).parents[1] / "vectors/data/enterprise_ras.json").read_text())
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PHONE = ("127.0.0.1", 40000)
G = bytes.fromhex("00015ec288c4083a0123456789abcdef")


class Pins(dict):
    def pin(self, ext):
        return self.get(ext)


def keys(profile: Profile, seed: bytes = bytes(range(32))) -> PhoneKey:
    km = master_key_from_seed(seed, profile)
    return PhoneKey(profile, G, generator_key(km, G, profile), check_value(km, profile))


def gatekeeper(profile=Profile.DEFAULT, **policy) -> Gatekeeper:
    return Gatekeeper(GatekeeperPolicy("sigctl/sc1.lab.test", profile, ("127.0.0.1", 1719),
                                       ("127.0.0.1", 4500), **policy), Pins({"2001": "1234"}))


def answer(key: PhoneKey) -> KeyAnswer:
    return KeyAnswer(key.generator_key, key.check_value)


def grq_round(gk, phone, key, peer=PHONE, now=NOW, mono=1.0, kg=None, phone_now=None):
    data = phone.grq(phone_now or now, peer)
    begun = gk.begin(data, peer, now, mono)
    assert begun.need_key is not None, begun
    return data, gk.finish_grq(begun.need_key, kg or answer(key), now, mono)


def register(gk, phone, key, peer=PHONE, mono=1.0):
    grq, gcf = grq_round(gk, phone, key, peer, mono=mono)
    assert gcf.result == "OK" and gcf.reply is not None
    event = phone.receive(gcf.reply, NOW, mono)
    assert event.kind == "rrq"
    begun = gk.begin(event.reply, peer, NOW, mono)
    assert begun.need_spi is not None, begun
    rcf = gk.finish_rrq(begun.need_spi, 0x2000, NOW, mono)
    return grq, gcf, event.reply, rcf, phone.receive(rcf.reply, NOW, mono)


@pytest.mark.parametrize("profile", list(Profile))
def test_both_sides_reach_the_same_sa(profile):
    key = keys(profile)
    gk, phone = gatekeeper(profile), PhoneRegistration(ext="2001", pin="1234", key=key)
    _, _, _, rcf, event = register(gk, phone, key)
    assert event.kind == "registered" and rcf.result == "OK"
    registration = rcf.registration
    assert event.sa.keys_out == registration.to_us and event.sa.keys_in == registration.to_phone
    assert event.sa.outbound.spi == 0x2000 == registration.controller_spi
    assert event.sa.inbound.spi == registration.phone_spi
    assert event.sa.hmac_key == registration.hmac_key
    assert event.session_id == registration.session_id and event.esp_address == ("127.0.0.1",
                                                                                  4500)
    # ESP both ways on those keys.
    to_controller = esp.InboundSa(0x2000, registration.suite, registration.to_us)
    assert to_controller.open(event.sa.outbound.seal(b"up"))[1] == b"up"
    to_phone = esp.OutboundSa(registration.phone_spi, registration.suite,
                              registration.to_phone)
    assert event.sa.inbound.open(to_phone.seal(b"down"))[1] == b"down"


@pytest.mark.parametrize("case", VECTORS["sa_cases"], ids=lambda c: c["name"])
def test_sa_keys_known_answers(case):
    profile = Profile(case["profile"])
    kg = bytes.fromhex(case["kg"])
    re, rg = bytes(range(0x10, 0x20)), bytes(range(0x20, 0x30))
    digest = hashlib.sha1 if profile is Profile.SEED else hashlib.sha256
    ks = hmac.new(kg, C_B + b"1234" + re + rg, digest).digest()[:len(kg) if profile is
                                                                Profile.SEED else 32]
    assert ks.hex() == case["ks"]
    suite = {s.name: s for s in esp.SUITES.values()}[case["suite"]]
    out, in_ = derive_registration_sa(ks, profile, suite, 0x1000, 0x2000)
    assert [out.encryption.hex(), out.salt.hex(), out.integrity.hex()] == case["out"]
    assert [in_.encryption.hex(), in_.salt.hex(), in_.integrity.hex()] == case["in"]
    assert registration_hmac_key(ks, profile).hex() == case["hmac"]


def test_retransmissions_get_the_same_reply_and_replays_silence():
    key = keys(Profile.DEFAULT)
    gk, phone = gatekeeper(), PhoneRegistration(ext="2001", pin="1234", key=key)
    grq, gcf, rrq, rcf, _ = register(gk, phone, key)
    assert gk.begin(grq, PHONE, NOW, 2.0).reply == gcf.reply
    assert gk.begin(rrq, PHONE, NOW, 2.0).reply == rcf.reply
    elsewhere = ("127.0.0.1", 40001)
    replayed = gk.begin(grq, elsewhere, NOW, 2.0)
    outcome = gk.finish_grq(replayed.need_key, answer(key), NOW, 2.0)
    assert (outcome.result, outcome.reply) == ("REPLAY", None)
    outcome = gk.begin(rrq, elsewhere, NOW, 2.0)
    assert (outcome.result, outcome.reply) == ("NO_CHALLENGE", None)
    # Once the lookaside window has passed, the same address gets silence as well.
    outcome = gk.begin(rrq, PHONE, NOW, 100.0)
    assert (outcome.result, outcome.reply) == ("NO_CHALLENGE", None)


def test_rg_is_short_lived_and_grq_must_be_recent():
    key = keys(Profile.DEFAULT)
    gk, phone = gatekeeper(challenge_lifetime_s=30), PhoneRegistration(ext="2001", pin="1234",
                                                                       key=key)
    _, gcf = grq_round(gk, phone, key)
    rrq = phone.receive(gcf.reply, NOW, 1.0).reply
    assert gk.begin(rrq, PHONE, NOW, 40.0).result == "NO_CHALLENGE"
    _, late = grq_round(gk, phone, key, phone_now=NOW - timedelta(seconds=301))
    assert (late.result, late.reply) == ("STALE_TIMESTAMP", None)


@pytest.mark.parametrize("refused", [KeyAnswer(None, None), "other-cvm"])
def test_stale_key_information_gets_grj(refused):
    old = keys(Profile.DEFAULT)
    current = keys(Profile.DEFAULT, bytes(range(1, 33)))
    kg = refused if isinstance(refused, KeyAnswer) else answer(current)
    gk, phone = gatekeeper(), PhoneRegistration(ext="2001", pin="1234", key=old)
    _, outcome = grq_round(gk, phone, old, kg=kg)
    assert outcome.result == "GRJ_STALE_KEY"
    assert decode_message(outcome.reply).icv_input is None  # unauthenticated
    event = phone.receive(outcome.reply, NOW, 1.0)
    assert (event.kind, event.reason) == ("rejected", STALE_KEY)


def test_extension_homed_elsewhere_gets_grj_with_the_alternates():
    key = keys(Profile.DEFAULT)
    alternates = (("192.0.2.7", 1719),)
    gk = gatekeeper(alternates=alternates)
    phone = PhoneRegistration(ext="3001", pin="1234", key=key)
    _, outcome = grq_round(gk, phone, key)
    assert outcome.result == "GRJ_NOT_HOMED"
    event = phone.receive(outcome.reply, NOW, 1.0)
    assert (event.kind, event.reason, event.alternates) == ("rejected", NOT_HOMED, alternates)
    # Without alternates to offer, nothing is said.
    silent = gatekeeper().begin(phone.grq(NOW, PHONE), PHONE, NOW, 1.0)
    assert (silent.result, silent.reply) == ("UNKNOWN_EXTENSION", None)


def test_wrong_pin_meets_silence_and_the_address_is_locked_out_for_a_while():
    key = keys(Profile.DEFAULT)
    gk = gatekeeper(lockout_failures=3, lockout_s=60)
    guesser = PhoneRegistration(ext="2001", pin="0000", key=key)
    peer = ("192.0.2.66", 5000)
    outcomes = [grq_round(gk, guesser, key, peer, mono=10.0 + i)[1] for i in range(3)]
    assert [(o.result, o.reply, o.locked_out) for o in outcomes] == [
        ("BAD_ICV", None, False), ("BAD_ICV", None, False), ("BAD_ICV", None, True)]
    honest = PhoneRegistration(ext="2001", pin="1234", key=key)
    locked = gk.begin(honest.grq(NOW, peer), peer, NOW, 20.0)
    assert (locked.result, locked.reply) == ("LOCKED_OUT", None)
    assert gk.begin(honest.grq(NOW, PHONE), PHONE, NOW, 20.0).need_key is not None  # others
    _, outcome = grq_round(gk, honest, key, peer, mono=73.0)  # T later
    assert outcome.result == "OK"
    assert gk.lockouts == 1


def test_phone_ignores_what_does_not_answer_it():
    key = keys(Profile.DEFAULT)
    gk = gatekeeper()
    phone = PhoneRegistration(ext="2001", pin="1234", key=key)
    other = PhoneRegistration(ext="2001", pin="1234", key=key)
    _, gcf = grq_round(gk, other, key)
    phone.grq(NOW, PHONE)
    with pytest.raises(MalformedMessage):  # another attempt's GCF (its Re)
        phone.receive(gcf.reply, NOW, 1.0)
    # A GCF for our Re under another K_a (a wrong PIN at the controller's end).
    forger = PhoneRegistration(ext="2001", pin="9999", key=key)
    forger.re, forger.seq = phone.re, phone.seq
    from common.enterprise.ras import Gcf, Token

    token = Token(int(NOW.timestamp()), phone.seq, "x", "2001", re=phone.re, rg=bytes(16))
    forged = encode_message(Gcf(phone.seq, "x", ("127.0.0.1", 1719), token), forger.auth_key)
    with pytest.raises(IcvMismatch):
        phone.receive(forged, NOW, 1.0)
