"""Decoders accept only DER: BER variants, trailing bytes and wrong message types are rejected
with MalformedMessage; what is accepted re-encodes to the same bytes."""

from datetime import UTC, datetime

import pytest

from common.codes import MessageType
from common.errors import MalformedMessage
from common.messages.ap_rep import ApRep, decode_ap_rep, encode_ap_rep
from common.messages.ap_req import decode_ap_req
from common.messages.asn1 import rfc4120
from common.messages.base import (
    decode_der,
    decode_der_reference,
    encode_der,
    encode_der_reference,
    snake_case,
)
from common.messages.kdc_req import decode_as_req, decode_tgs_req
from common.messages.krb_error import decode_krb_error
from common.messages.padata import (
    PaEncTsEnc,
    PaPacRequest,
    decode_authorization_data,
    decode_pa_enc_ts_enc,
    decode_pa_pac_request,
    encode_authorization_data,
    encode_pa_enc_ts_enc,
    encode_pa_pac_request,
    flatten_authorization_data,
    wrap_if_relevant,
)
from common.messages.types import AuthorizationDataEntry, EncryptedData, PaData
from tests.conftest import MIT_FIXTURES

AP_REP = ApRep(5, int(MessageType.KRB_AP_REP), EncryptedData(18, None, b"\x01" * 40))


def test_minimal_round_trip():
    data = encode_ap_rep(AP_REP)
    assert decode_ap_rep(data) == AP_REP


def test_trailing_bytes_rejected():
    with pytest.raises(MalformedMessage) as err:
        decode_ap_rep(encode_ap_rep(AP_REP) + b"\x00")
    assert err.value.status == "TRAILING_BYTES"


def test_non_minimal_length_rejected():
    data = encode_ap_rep(AP_REP)
    assert data[1] < 0x80
    ber = data[:1] + b"\x81" + data[1:]  # same value, long-form length: valid BER, not DER
    with pytest.raises(MalformedMessage) as err:
        decode_ap_rep(ber)
    assert err.value.status == "NOT_DER_LENGTH"


def test_indefinite_length_rejected():
    data = encode_ap_rep(AP_REP)
    ber = data[:1] + b"\x80" + data[2:] + b"\x00\x00"
    with pytest.raises(MalformedMessage):
        decode_ap_rep(ber)


def test_wrong_message_type_rejected():
    as_req = (MIT_FIXTURES / "asreq_pkinit_dh.der").read_bytes()
    with pytest.raises(MalformedMessage):
        decode_tgs_req(as_req)
    with pytest.raises(MalformedMessage):
        decode_krb_error(as_req)
    assert decode_as_req(as_req).msg_type == MessageType.KRB_AS_REQ


def test_kerberos_time_with_fraction_rejected():
    good = encode_pa_enc_ts_enc(PaEncTsEnc(datetime(2026, 12, 1, tzinfo=UTC), 5))
    assert b"20261201000000Z" in good
    bad = good.replace(b"\x18\x0f20261201000000Z", b"\x18\x1120261201000000.5Z")
    bad = bytes([bad[0], bad[1] + 2, bad[2], bad[3] + 2]) + bad[4:]
    with pytest.raises(MalformedMessage):
        decode_pa_enc_ts_enc(bad)


def test_if_relevant_nesting():
    inner = (AuthorizationDataEntry(-42, b"unprovisioned"), AuthorizationDataEntry(7, b"x"))
    outer = (wrap_if_relevant(inner), AuthorizationDataEntry(9, b"y"))
    data = encode_authorization_data(outer)
    assert decode_authorization_data(data) == outer
    assert flatten_authorization_data(outer) == (*inner, AuthorizationDataEntry(9, b"y"))


@pytest.mark.parametrize("asn1,field", [
    ("kdc-options", "kdc_options"), ("from", "from_"), ("clientDHNonce", "client_dh_nonce"),
    ("supportedCMSTypes", "supported_cms_types"), ("supportedKDFs", "supported_kdfs"),
    ("as-REQ", "as_req"), ("paChecksum2", "pa_checksum2"), ("dhKeyExpiration",
                                                            "dh_key_expiration"),
])
def test_field_names(asn1, field):
    assert snake_case(asn1) == field


@pytest.mark.parametrize("value,contents", [(-128, "80"), (-129, "ff7f"), (-1, "ff"), (0, "00"),
                                            (127, "7f"), (128, "0080"), (-32768, "8000")])
def test_integers_are_minimal_in_both_codecs(value, contents):
    """X.690 §8.3.2; pyasn1 alone writes -128 as ff 80 (its reference encoder is fixed)."""
    integer = bytes.fromhex(contents)
    padata_type = bytes([0xA1, len(integer) + 2, 0x02, len(integer)]) + integer
    body = padata_type + bytes.fromhex("a2050403616263")  # [2] OCTET STRING "abc"
    expected = bytes([0x30, len(body)]) + body
    item = PaData(value, b"abc")
    assert encode_der(item, rfc4120.PA_DATA()) == expected
    assert encode_der_reference(item, rfc4120.PA_DATA()) == expected
    assert decode_der(expected, rfc4120.PA_DATA()) == item
    assert decode_der_reference(expected, rfc4120.PA_DATA()) == item


def test_boolean_is_a_boolean_and_der():
    assert decode_pa_pac_request(bytes.fromhex("3005a0030101ff")) == PaPacRequest(True)
    assert decode_pa_pac_request(bytes.fromhex("3005a003010100")).include_pac is False
    for bad in ("3005a003010101", "3006a00401020000", "3003a00101"):
        with pytest.raises(MalformedMessage):
            decode_pa_pac_request(bytes.fromhex(bad))
    assert encode_pa_pac_request(PaPacRequest(True)) == bytes.fromhex("3005a0030101ff")


def test_years_before_1000_keep_four_digits():
    when = datetime(26, 11, 22, 22, 45, 26, tzinfo=UTC)
    data = encode_pa_enc_ts_enc(PaEncTsEnc(when, None))
    assert b"00261122224526Z" in data
    assert decode_pa_enc_ts_enc(data).patimestamp == when


@pytest.mark.parametrize("bits, value", [
    ("03050020000000", 0x20000000),   # 32 bits: what telekey sends
    ("03050120000000", 0x20000000),   # 31 bits, padded
    ("0303075080", 0x50800000),       # 9 bits, as one deployed client sends KDCOptions
    ("0306002000000080", 0x20000000),  # 40 bits: bits beyond 31 dropped
    ("030400000000", 0),              # 24 bits
    ("0301 00".replace(" ", ""), 0),  # no bits at all
])
def test_flags_of_any_length_are_read(bits, value):
    """RFC 4120 §5.2.8 says SIZE (32..MAX); like MIT, telekey reads any length (a documented
    leniency, docs/protocol.md) and writes 32."""
    assert decode_ap_req(encode_ap_req_with_flags(bits)).ap_options == value


def encode_ap_req_with_flags(flags_tlv: str) -> bytes:
    """MIT's AP-REQ with its ap-options BIT STRING replaced (lengths fixed up)."""
    original = (MIT_FIXTURES / "apreq_sc1.der").read_bytes()
    old = bytes.fromhex("a20703050020000000")
    assert old in original
    new_tlv = bytes.fromhex(flags_tlv)
    new = bytes([0xA2, len(new_tlv)]) + new_tlv
    inner = original[8:].replace(old, new)  # after 6e 82 xx xx 30 82 xx xx
    seq = b"\x30\x82" + len(inner).to_bytes(2, "big") + inner
    return b"\x6e\x82" + len(seq).to_bytes(2, "big") + seq
