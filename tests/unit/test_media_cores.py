"""RTP header and G.711 µ-law (common/calls/rtp.py), SDP (common/calls/sdp.py) and the
call-control and user-agent cores under fuzzing: known answers, typed errors, nothing else
escapes."""

from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.calls.control import CallControl
from common.calls.rtp import RtpPacket, decode_rtp, encode_rtp, ulaw_decode, ulaw_encode
from common.calls.sdp import MediaDescription, encode_sdp, parse_sdp
from common.calls.sip import SipError
from common.calls.user_agent import UserAgent
from common.errors import MalformedMessage

# G.711 µ-law known answers (ITU-T G.711 reference g711.c; the same as Python's audioop).
ULAW = [(0, 0xFF), (1, 0xFF), (-1, 0x7E), (100, 0xF2), (-100, 0x72), (1000, 0xCE),
        (-5000, 0x2B), (32767, 0x80), (-32768, 0x00), (8159 * 4, 0x80)]


@pytest.mark.parametrize("sample, code", ULAW, ids=[str(s) for s, _ in ULAW])
def test_ulaw_known_answers(sample, code):
    assert ulaw_encode(array("h", [sample])) == bytes([code])


def test_ulaw_decode_known_answers_and_idempotence():
    assert list(ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xCE, 0x2B]))) == [
        0, 0, 32124, -32124, 988, -5116]
    everything = bytes(range(256))
    assert ulaw_encode(ulaw_decode(everything)) == everything.replace(b"\x7f", b"\xff")


def test_rtp_header_known_bytes_and_round_trip():
    packet = RtpPacket(0, 0x1234, 0x01020304, 0xDEADBEEF, b"\xff" * 4, marker=True)
    data = encode_rtp(packet)
    assert data.hex() == "80801234" "01020304" "deadbeef" "ffffffff"
    assert decode_rtp(data) == packet


@pytest.mark.parametrize("data, status", [
    (b"\x80\x00", "RTP_TOO_SHORT"),
    (b"\x40" + bytes(11), "RTP_VERSION"),
    (b"\x8f" + bytes(11), "RTP_TRUNCATED"),  # 15 CSRCs announced, none present
    (b"\x90" + bytes(11), "RTP_TRUNCATED_EXTENSION"),
])
def test_rtp_defects_are_typed(data, status):
    with pytest.raises(MalformedMessage) as err:
        decode_rtp(data)
    assert err.value.status == status


@given(st.binary(max_size=64))
def test_rtp_fuzz(data):
    try:
        decode_rtp(data)
    except MalformedMessage:
        pass


def test_sdp_round_trip_and_refusals():
    media = MediaDescription("127.0.0.1", 40000, 40002, "AEAD_AES_128_GCM")
    assert parse_sdp(encode_sdp(media, 7)) == media
    text = encode_sdp(media, 7)
    for bad in (text.replace(b"telekey-esp:40002", b"x"), text.replace(b"40000", b"0"),
                text.replace(b"AEAD_AES_128_GCM", b"NULL"), text.replace(b"IP4 127.0.0.1",
                                                                         b"IP4 nowhere"),
                b"\xff\xfe"):
        with pytest.raises(SipError) as err:
            parse_sdp(bad)
        assert err.value.status == 488


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_sdp_fuzz(data):
    try:
        parse_sdp(data)
    except SipError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400) | st.builds(
    lambda body: b"INVITE sip:2002@LAB.TEST SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
                 b"Max-Forwards: 70\r\nFrom: <sip:a@LAB.TEST>;tag=1\r\nTo: <sip:2002@LAB.TEST>"
                 b"\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nCall-Key: " + body + b"\r\n\r\n",
    st.binary(max_size=80)))
def test_controller_and_user_agent_take_any_bytes(data):
    """Anything from a device or a peer gives an Outcome (maybe a 4xx), never an exception;
    the user agent likewise."""
    control = CallControl(principal="sigctl/sc1", realm="LAB.TEST", lines={"2002": "cta/b"},
                          routes={}, online=lambda _: True)
    for leg in (("device", "cta/a"), ("peer", "sigctl/sc2")):
        control.receive(leg, data)
    UserAgent(realm="LAB.TEST", identity="1001").receive_from_controller(data)


@pytest.mark.parametrize("profile", ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"])
def test_srtp_profiles_round_trip_through_libsrtp_and_hide_the_payload(profile):
    from common.calls.keys import CallKey, srtp_keys
    from common.crypto import Key
    from cta.media import srtp_session

    forward, backward = srtp_keys(CallKey(Key(18, bytes(range(32))), 4096).key, profile)
    sender = srtp_session(forward, profile, outbound=True)
    receiver = srtp_session(forward, profile, outbound=False)
    wrong = srtp_session(backward, profile, outbound=False)
    packet = encode_rtp(RtpPacket(0, 7, 160, 99, b"audio-frame" * 14))
    protected = sender.protect(packet)
    assert b"audio-frame" not in protected
    assert len(protected) == len(packet) + (16 if profile == "AEAD_AES_128_GCM" else 10)
    assert receiver.unprotect(protected) == packet
    from pylibsrtp import Error

    with pytest.raises(Error):
        wrong.unprotect(protected)


def test_escrow_records_are_purged_after_their_retention(tmp_path):
    from sigctl.escrow_store import EscrowStore

    store = EscrowStore(f"sqlite:///{tmp_path}/escrow.db")
    store.add("call-1", b"sealed-1", "sigctl/sc1", max_call_s=3600)
    store.add("call-2", b"sealed-2", "sigctl/sc1", max_call_s=3600)
    store.ended("call-1", retention_s=0)
    assert store.purge() == 1
    assert store.sealed("call-1", "officer") is None
    assert store.sealed("call-2", "officer") == b"sealed-2"
    assert [r for _, _, r in store.accesses("call-1")] == ["not_found"]
    assert (tmp_path / "escrow.db").stat().st_mode & 0o777 == 0o600
