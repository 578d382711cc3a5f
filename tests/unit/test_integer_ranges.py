"""Every INTEGER has its ASN.1 range (Int32, UInt32, Microseconds, certificate serials up to 20
octets): out of range is MalformedMessage in the lean codec and in the pyasn1 reference alike,
and a value of thousands of digits is never converted to text (Python refuses beyond 4,300
digits, which once made the KDC answer KRB_ERR_GENERIC "INTERNAL")."""

import pytest

import common.messages.cms
import common.messages.pkinit  # noqa: F401  (registers the dataclasses)
from common.errors import MalformedMessage
from common.messages.asn1 import rfc4556, rfc5652
from common.messages.base import decode_der, decode_der_reference
from common.messages.kdc_req import decode_as_req


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
        n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def integer(value_bytes: bytes) -> bytes:
    return tlv(0x02, value_bytes)


def as_req(nonce: bytes, pvno: bytes = b"\x05") -> bytes:
    body = tlv(0x30, tlv(0xA0, tlv(0x03, b"\x00" + b"\x00" * 4))
               + tlv(0xA2, tlv(0x1B, b"TEST.REALM"))
               + tlv(0xA5, tlv(0x18, b"20370913024805Z"))
               + tlv(0xA7, integer(nonce))
               + tlv(0xA8, tlv(0x30, integer(b"\x12"))))
    return tlv(0x6A, tlv(0x30, tlv(0xA1, integer(pvno)) + tlv(0xA2, integer(b"\x0a"))
                         + tlv(0xA4, body)))


HUGE = b"\x01" + b"\x00" * 20_000  # about 48,000 decimal digits


def test_a_well_formed_request_decodes():
    assert decode_as_req(as_req(b"\x12\x34")).req_body.nonce == 0x1234


@pytest.mark.parametrize("nonce, accepted", [
    (b"\x7f\xff\xff\xff", True),
    (b"\x00\xff\xff\xff\xff", True),    # UInt32's top
    (b"\x80\x00\x00\x00", True),        # negative Int32: accepted, as MIT does (signed nonces)
    (b"\x01\x00\x00\x00\x00", False),   # 2**32
    (b"\xff\x7f\xff\xff\xff", False),   # below -2**31
    (HUGE, False),
], ids=["int32-max", "uint32-max", "int32-min", "2^32", "below-int32", "huge"])
def test_nonce_range(nonce, accepted):
    data = as_req(nonce)
    for decode in (decode_as_req, lambda d: decode_der_reference(d, _as_req_schema())):
        if accepted:
            decode(data)
        else:
            with pytest.raises(MalformedMessage) as err:
                decode(data)
            str(err.value)  # the error itself never holds the huge value as text


def test_huge_pvno_is_malformed_not_internal():
    with pytest.raises(MalformedMessage) as err:
        decode_as_req(as_req(b"\x01", pvno=HUGE))
    assert err.value.status == "INTEGER_OUT_OF_RANGE"


def test_microseconds_range():
    def authenticator(cusec: bytes) -> bytes:
        return tlv(0x30, tlv(0xA0, integer(cusec)) + tlv(0xA1, tlv(0x18, b"20261206000000Z"))
                   + tlv(0xA2, integer(b"\x01")))

    assert decode_der(authenticator(b"\x0f\x42\x3f"), rfc4556.PKAuthenticator())  # 999999
    for bad in (b"\x0f\x42\x40", b"\xff", HUGE):  # 1000000, -1, huge
        for decode in (decode_der, decode_der_reference):
            with pytest.raises(MalformedMessage):
                decode(authenticator(bad), rfc4556.PKAuthenticator())


def test_certificate_serial_up_to_20_octets():
    name = tlv(0x30, b"")

    def ias(serial: bytes) -> bytes:
        return tlv(0x30, name + integer(serial))

    assert decode_der(ias(b"\x00" + b"\xff" * 20), rfc5652.IssuerAndSerialNumber())
    for bad in (b"\x01" + b"\x00" * 20, HUGE):
        for decode in (decode_der, decode_der_reference):
            with pytest.raises(MalformedMessage):
                decode(ias(bad), rfc5652.IssuerAndSerialNumber())


def _as_req_schema():
    from common.messages.asn1 import rfc4120

    return rfc4120.AS_REQ()
