"""Cores of the call issue (#6), no I/O yet: the SIP subset (round trips, every malformation a
400-class SipError, fuzzed), per-call keys (known-answer vectors, docs/protocol.md §8) and
lawful-intercept escrow sealing."""

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from common.calls import escrow, sip
from common.calls import keys as call_keys
from common.crypto import Key
from common.errors import IntegrityError

INVITE = (b"INVITE sip:6115550100@LAB.TEST SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds\r\n"
          b"Max-Forwards: 70\r\n"
          b"From: <sip:6115550199@LAB.TEST>;tag=1928301774\r\n"
          b"To: <sip:6115550100@LAB.TEST>\r\n"
          b"i: a84b4c76e66710@127.0.0.1\r\n"
          b"CSeq: 314159 INVITE\r\n"
          b"Contact: <sip:6115550199@127.0.0.1>\r\n"
          b"Content-Length: 4\r\n\r\nbody")


def test_parse_and_respond():
    message = sip.parse(INVITE)
    assert (message.method, message.uri) == ("INVITE", "sip:6115550100@LAB.TEST")
    assert message.call_id == "a84b4c76e66710@127.0.0.1"  # compact form i:
    assert message.cseq == (314159, "INVITE") and message.body == b"body"
    ringing = sip.parse(sip.encode(sip.response(message, 180)))
    assert not ringing.is_request and ringing.status == 180 and ringing.method == "INVITE"
    assert ringing.header("via") == message.header("via")
    assert sip.parse(sip.encode(message)) == sip.parse(sip.encode(sip.parse(
        sip.encode(message))))


@pytest.mark.parametrize("data, reason", [
    (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "CSeq Method Mismatch"),
    (INVITE.replace(b"Content-Length: 4", b"Content-Length: 9"), "Bad Content-Length"),
    (INVITE.replace(b"Max-Forwards: 70\r\n", b""), "Missing Max-Forwards"),
    (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "Bad Request Line"),
    (INVITE.replace(b"\r\n\r\n", b"\r\n"), "No End Of Headers"),
    (INVITE.replace(b"Max-Forwards: 70", b"Max Forwards 70"), "Bad Header"),
    (b"\xff\xfe\r\n\r\n", "Not UTF-8"),
])
def test_malformed_is_400_with_reason(data, reason):
    with pytest.raises(sip.SipError) as info:
        sip.parse(data)
    assert (info.value.status, info.value.reason) == (400, reason)
    refusal = sip.refusal(data, info.value)
    if refusal is not None:
        answer = sip.parse(refusal)
        assert answer.status == 400 and answer.call_id == "a84b4c76e66710@127.0.0.1"


@given(st.binary(max_size=400))
def test_parser_fuzz_only_sip_errors(data):
    try:
        sip.parse(data)
    except sip.SipError as exc:
        assert 400 <= exc.status < 500


# telekey profile v1 known-answer vectors, call key 00 01 .. 1f (aes256-cts-hmac-sha1-96).
KEY = Key(18, bytes(range(32)))
SRTP_KAT = {
    "AES_CM_128_HMAC_SHA1_80": ("ff06806490f447cb8192cd9315de14e2",
                                "3d9d90e4ea2350400715b8c84b59",
                                "ca1b14453a3ae9ce42a5229f536b9c7f",
                                "83763a67d102b63a853b147ccf34"),
    "AEAD_AES_128_GCM": ("0fb673e024b19609ada44261d4bbf6bd", "a362781f18299596fcf74b6a",
                         "b192a1e753f46c49f7903891619125fa", "16e17559c99c98e7965fb9a0"),
}


@pytest.mark.parametrize("profile", list(SRTP_KAT))
def test_srtp_key_kat(profile):
    forward, back = call_keys.srtp_keys(KEY, profile)
    got = (forward.master_key.hex(), forward.master_salt.hex(), back.master_key.hex(),
           back.master_salt.hex())
    assert got == SRTP_KAT[profile]


def test_ack_hash_kat_and_new_keys():
    assert call_keys.ack_hash(KEY, 0x1000).hex() == (
        "7f708fd5b20aad969757ea29262badb4ddeb3b4c1a5d5ed8f00b48a2ddebb22c")
    assert call_keys.ack_hash(KEY, 0x1002) != call_keys.ack_hash(KEY, 0x1000)
    made = call_keys.new_call_key()
    assert made.spi % 2 == 0 and made.spi >= 256 and made.key.enctype == 18


def test_escrow_seal_and_open():
    authority = X25519PrivateKey.generate()
    record = escrow.seal(b"srtp keys", authority.public_key(), "call-1")
    assert escrow.open_sealed(record, authority, "call-1") == b"srtp keys"
    assert b"srtp keys" not in record
    with pytest.raises(IntegrityError):
        escrow.open_sealed(record, X25519PrivateKey.generate(), "call-1")
    with pytest.raises(IntegrityError):
        escrow.open_sealed(record, authority, "call-2")


def test_invite_admission():
    from common.calls.admission import admit_invite
    from common.messages.restriction import DeviceRestriction

    def invite(uri):
        return sip.parse(INVITE.replace(b"sip:6115550100@LAB.TEST SIP/2.0",
                                        uri.encode() + b" SIP/2.0"))

    unprovisioned = DeviceRestriction(1, ("611", "911"))
    reachable = {"611", "911", "6115550100"}
    cases = [("sip:6115550100@LAB.TEST", None, 0), ("sip:6115550100@LAB.TEST", unprovisioned, 403),
             ("sip:611@LAB.TEST", unprovisioned, 0), ("sip:911@lab.test", unprovisioned, 0),
             ("sip:5550000@LAB.TEST", None, 404), ("sip:6115550100@OTHER.TEST", None, 404),
             ("sip:alice@LAB.TEST", None, 404)]
    for uri, restriction, status in cases:
        result = admit_invite(invite(uri), realm="LAB.TEST", restriction=restriction,
                              reachable=reachable)
        assert result.status == status, uri
