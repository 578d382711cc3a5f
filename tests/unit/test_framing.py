"""RFC 4120 §7.2.2 TCP record marking (common.kerberos.tcp_framing)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.codes import ErrorCode
from common.errors import FieldTooLong
from common.kerberos.tcp_framing import RecordBuffer, encode_record


def test_encode_record_prefixes_big_endian_length():
    assert encode_record(b"abc") == b"\x00\x00\x00\x03abc"


def test_records_split_across_reads():
    buf = RecordBuffer(max_record=100)
    stream = encode_record(b"first") + encode_record(b"") + encode_record(b"third")
    for byte in stream[:-1]:
        buf.feed(bytes([byte]))
    assert buf.next_record() == b"first"
    assert buf.next_record() == b""
    assert buf.next_record() is None
    buf.feed(stream[-1:])
    assert buf.next_record() == b"third"
    assert buf.next_record() is None and buf.pending == 0


def test_high_bit_is_field_too_long():
    with pytest.raises(FieldTooLong) as err:
        RecordBuffer(max_record=100).feed(b"\x80\x00\x00\x01x")
    assert err.value.code is ErrorCode.KRB_ERR_FIELD_TOOLONG
    assert err.value.status == "RECORD_HIGH_BIT"


def test_length_over_cap_is_field_too_long_before_the_body_arrives():
    buf = RecordBuffer(max_record=10)
    with pytest.raises(FieldTooLong):
        buf.feed(b"\x00\x00\x00\x0b")


@given(st.lists(st.binary(max_size=50), max_size=10), st.integers(1, 17))
def test_any_chunking_reassembles(records, chunk):
    stream = b"".join(encode_record(r) for r in records)
    buf = RecordBuffer(max_record=64)
    out = []
    for i in range(0, len(stream), chunk):
        buf.feed(stream[i : i + chunk])
        while (record := buf.next_record()) is not None:
            out.append(record)
    assert out == records


def test_pipelined_record_before_a_bad_length_is_returned_first():
    """A valid record and a bad length word in one segment: the record comes out, then the
    error (it used to be lost with the error, and the KDC answered neither)."""
    buf = RecordBuffer(max_record=100)
    buf.feed(encode_record(b"good") + b"\x80\x00\x00\x01")
    assert buf.next_record() == b"good"
    with pytest.raises(FieldTooLong) as err:
        buf.next_record()
    assert err.value.status == "RECORD_HIGH_BIT"
    with pytest.raises(FieldTooLong):
        buf.feed(b"more")
