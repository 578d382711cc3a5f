"""PacketCable key-management framing and user-space ESP: round trips, HMAC coverage, the SA
key derivation known-answer vector (docs/protocol.md §7), the anti-replay window, and bad
input as a typed error (fuzzed)."""

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.crypto import Key
from common.errors import IntegrityError, KerberosError, MalformedMessage
from common.pktc import esp
from common.pktc import km_framing as pktc
from tests.conftest import MIT_FIXTURES

AP_REQ = (MIT_FIXTURES / "apreq_sc1.der").read_bytes()
AP_REP = (MIT_FIXTURES / "aprep_sc1.der").read_bytes()
HKEY = bytes(range(20))


def test_ap_request_round_trip_and_hmac_covers_everything():
    data = pktc.encode_ap_request(AP_REQ, 7, 0x1000, ((0, 0x14), (2, 0x0C)), False, HKEY)
    assert data[:3] == b"\x02\x01\x10"
    framed = pktc.decode(data)
    assert framed.message == pktc.ApRequestMsg(AP_REQ, 7, 0x1000, ((0, 0x14), (2, 0x0C)),
                                               False, data[-20:])
    pktc.verify_hmac(framed, HKEY)
    for i in (0, 5, len(data) - 25):
        bad = bytearray(data)
        bad[i] ^= 1
        with pytest.raises(KerberosError):
            pktc.verify_hmac(pktc.decode(bytes(bad)), HKEY)


def test_every_message_round_trips():
    when = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)
    krb_error = (MIT_FIXTURES / "krberror_preauth_required.der").read_bytes()
    cases = [
        (pktc.encode_wake_up(0xDEADBEEF, "sigctl/sc1.lab.test@LAB.TEST"),
         pktc.WakeUp(0xDEADBEEF, "sigctl/sc1.lab.test@LAB.TEST")),
        (pktc.encode_ap_reply(AP_REP, 0x2000, (0, 0x14), 3600, 300, True, True, HKEY),
         pktc.ApReplyMsg(AP_REP, 0x2000, (0, 0x14), 3600, 300, True, True, b"")),
        (pktc.encode_sec_param_recovered(HKEY), pktc.SecParamRecovered(b"")),
        (pktc.encode_rekey(1, "sigctl/sc1@R", when, 0x3000, ((2, 3),), 60, 10, False, HKEY),
         pktc.Rekey(1, "sigctl/sc1@R", when, 0x3000, ((2, 3),), 60, 10, False, b"")),
        (pktc.encode_error_reply(krb_error), pktc.ErrorReply(krb_error)),
    ]
    for data, expected in cases:
        framed = pktc.decode(data)
        if framed.signed is None:
            assert framed.message == expected
        else:  # the HMAC is the last 20 bytes and covers everything before it
            assert framed.message == dataclasses.replace(expected, hmac=data[-20:])
            assert framed.signed == data[:-20]
            pktc.verify_hmac(framed, HKEY)
    assert b"261202060000Z" in cases[3][0]


def test_malformed():
    good = pktc.encode_ap_request(AP_REQ, 7, 1, ((0, 0x14),), False, HKEY)
    for bad, status in ((b"", "PKTC_TRUNCATED"), (b"\x09\x01\x10", "PKTC_UNKNOWN_KMMID"),
                        (b"\x02\x02\x10", "PKTC_UNKNOWN_DOI"),
                        (b"\x02\x01\x20", "PKTC_UNSUPPORTED_VERSION"),
                        (good[:-1], "PKTC_TRUNCATED"), (good + b"\x00", "PKTC_TRAILING_BYTES"),
                        (b"\x01\x01\x10\x00\x00\x00\x01abc", "PKTC_UNTERMINATED_STRING")):
        with pytest.raises(MalformedMessage) as info:
            pktc.decode(bad)
        assert info.value.status == status


@given(st.binary(max_size=300))
def test_decode_fuzz_only_typed_errors(data):
    try:
        pktc.decode(data)
    except MalformedMessage:
        pass


@given(st.binary(min_size=3, max_size=200), st.integers(0, 200))
def test_decode_fuzz_mutations(noise, where):
    data = bytearray(pktc.encode_ap_request(AP_REQ, 7, 1, ((0, 0x14),), False, HKEY))
    data[where % len(data):where % len(data) + len(noise)] = noise
    try:
        pktc.decode(bytes(data))
    except MalformedMessage:
        pass


# --- SA keys and ESP -------------------------------------------------------------------

SUBKEY = Key(18, bytes(range(32)))
# telekey profile v1 known-answer vectors (docs/protocol.md §7): initiator SPI 0x00001000,
# responder SPI 0x00002000, aes256-cts-hmac-sha1-96 sub-key 00 01 .. 1f. Per suite:
# initiator->responder (encryption, salt, integrity), then responder->initiator.
KAT = {
    "AES-GCM-16": (
        "9476f388dc0e69f8332826880fd353ef6efdcbc21f2ca81d24746780eba8ec80", "90b4460e", "",
        "541731e8a77c3dbc9e9a4f1280ddab045e52a703de976567dd85cc923c99a47e", "e6fc36a9", ""),
    "AES-CBC/HMAC-SHA1-96": (
        "58f22143b50c18e08d5c2a4fcec0e698", "", "96938fc6dd88216bb182a93ba304cc3518285ca8",
        "0d0b8e636af87fa9a0222bccfd8b90b3", "", "d75c4b6714e1974803ab11eeac3e9926434462a8"),
    "3DES-CBC/HMAC-SHA1-96": (
        "fd5d081e2055a3fc23cd90411752d108daaca4f087b20d34", "",
        "b701d46141d8e7f9f68353e375899ddb63e808c7",
        "80be6ab1723dd6afc408e120a3c19188ba895ae6d681a7bc", "",
        "107233def77a186c4d8014b6434ea12661066383"),
}
HMAC_KAT = "5f14dc005ea49b1f722688cf7824454cea414e0f"


@pytest.mark.parametrize("suite", list(esp.SUITES.values()), ids=lambda s: s.name)
def test_sa_key_derivation_kat(suite):
    out, back = esp.derive_sa_keys(SUBKEY, suite, 0x1000, 0x2000)
    got = tuple(getattr(keys, f).hex() for keys in (out, back)
                for f in ("encryption", "salt", "integrity"))
    assert got == KAT[suite.name]
    one = suite.enc_key_bytes + suite.salt_bytes + suite.integ_key_bytes
    label = b"telekey sa v1" + bytes(suite.pktc) + bytes.fromhex("0000100000002000")
    assert bytes.fromhex("".join(got)) == SUBKEY.prf_plus(label, 2 * one)


@pytest.mark.parametrize("suite", list(esp.SUITES.values()), ids=lambda s: s.name)
def test_esp_round_trip_replay_and_icv(suite):
    keys, _ = esp.derive_sa_keys(SUBKEY, suite, 1, 2)
    out, inbound = esp.OutboundSa(0x2000, suite, keys), esp.InboundSa(0x2000, suite, keys)
    inner = esp.udp_datagram(5060, 7, b"ping")
    packets = [out.seal(inner) for _ in range(3)]
    assert (len(packets[0]) - 8 - suite.iv_bytes - suite.icv_bytes) % suite.block_bytes == 0
    assert inbound.open(packets[1]) == (17, inner)
    assert inbound.open(packets[0]) == (17, inner)  # out of order within the window
    assert esp.parse_udp_datagram(inbound.open(packets[2])[1]) == (5060, 7, b"ping")
    with pytest.raises(esp.EspDropped, match="ESP_REPLAY"):
        inbound.open(packets[1])
    tampered = bytearray(out.seal(inner))
    tampered[-1] ^= 1
    with pytest.raises(esp.EspDropped, match="ESP_BAD_ICV"):
        inbound.open(bytes(tampered))
    assert inbound.open(out.seal(inner))[1] == inner  # the bad packet changed nothing


def test_replay_window_slides():
    keys, _ = esp.derive_sa_keys(SUBKEY, esp.AES_GCM_16, 1, 2)
    out, inbound = esp.OutboundSa(9, esp.AES_GCM_16, keys), esp.InboundSa(9, esp.AES_GCM_16,
                                                                          keys)
    old = out.seal(b"x")
    for _ in range(esp.WINDOW + 1):
        inbound.open(out.seal(b"y"))
    with pytest.raises(esp.EspDropped, match="ESP_REPLAY"):
        inbound.open(old)  # fell off the back of the window


@given(st.binary(max_size=120))
def test_esp_open_fuzz(data):
    keys, _ = esp.derive_sa_keys(SUBKEY, esp.AES_CBC_SHA1, 1, 2)
    try:
        esp.InboundSa(int.from_bytes(data[:4].ljust(4, b"\0"), "big"), esp.AES_CBC_SHA1,
                      keys).open(data)
    except (MalformedMessage, esp.EspDropped):
        pass


def test_hmac_key_kat():
    assert pktc.hmac_key(SUBKEY).hex() == HMAC_KAT
    with pytest.raises(IntegrityError):
        pktc.verify_hmac(pktc.decode(pktc.encode_sec_param_recovered(HKEY)), bytes(20))
