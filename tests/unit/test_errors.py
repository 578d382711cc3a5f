"""Every KerberosError subclass carries its KRB-ERROR code; error_reply maps exceptions once."""

from datetime import UTC, datetime

import pytest

from common import errors
from common.codes import ErrorCode
from common.messages.krb_error import decode_krb_error, encode_krb_error, error_reply
from common.messages.types import PrincipalName

EXPECTED = {
    errors.MalformedMessage: ErrorCode.KRB_ERR_GENERIC,
    errors.FieldTooLong: ErrorCode.KRB_ERR_FIELD_TOOLONG,
    errors.ResponseTooBig: ErrorCode.KRB_ERR_RESPONSE_TOO_BIG,
    errors.IntegrityError: ErrorCode.KRB_AP_ERR_BAD_INTEGRITY,
    errors.ModifiedError: ErrorCode.KRB_AP_ERR_MODIFIED,
    errors.EncTypeNotSupported: ErrorCode.KDC_ERR_ETYPE_NOSUPP,
    errors.ChecksumTypeNotSupported: ErrorCode.KDC_ERR_SUMTYPE_NOSUPP,
    errors.ClockSkew: ErrorCode.KRB_AP_ERR_SKEW,
}
NOW = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
KRBTGT = PrincipalName.parse("krbtgt/EXAMPLE.TEST", 2)


def test_every_subclass_is_listed():
    subclasses = {c for c in vars(errors).values()
                  if isinstance(c, type) and issubclass(c, errors.KerberosError)
                  and c is not errors.KerberosError}
    assert subclasses == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_code(cls):
    assert cls.code is EXPECTED[cls]
    exc = cls("STATUS_TAG", "secret detail")
    reply = error_reply(exc, realm="EXAMPLE.TEST", sname=KRBTGT, now=NOW)
    assert reply.error_code == EXPECTED[cls]
    assert reply.e_text == "STATUS_TAG"
    wire = encode_krb_error(reply)
    assert b"secret detail" not in wire
    assert decode_krb_error(wire) == reply


def test_vague_errors_hide_status():
    reply = error_reply(errors.ClockSkew("CTIME_SKEW"), realm="R", sname=KRBTGT, now=NOW,
                        vague_errors=True)
    assert reply.e_text is None and reply.error_code == ErrorCode.KRB_AP_ERR_SKEW


def test_bug_becomes_generic_internal():
    reply = error_reply(ZeroDivisionError("oops"), realm="R", sname=KRBTGT, now=NOW)
    assert reply.error_code == ErrorCode.KRB_ERR_GENERIC and reply.e_text == "INTERNAL"
    assert reply.stime == NOW.replace(microsecond=0) and reply.susec == 123456


@pytest.mark.parametrize("microsecond", [0, 1, 127, 128, 255, 256, 32767, 32768, 999999])
@pytest.mark.parametrize("vague", [False, True])
def test_error_replies_are_the_codecs_bytes(microsecond, vague):
    """ErrorReplies splices the time into an error encoded once: the bytes must be exactly the
    codec's, for every length of susec's DER INTEGER and a long e-data (long-form lengths)."""
    from common.kerberos.as_exchange import PreauthRequired
    from common.messages.krb_error import ErrorReplies

    replies = ErrorReplies("EXAMPLE.TEST", KRBTGT, vague_errors=vague)
    kinds = [PreauthRequired("PREAUTH_REQUIRED", e_data=bytes(range(256)) * 2),
             errors.ClockSkew("SKEW"), errors.MalformedMessage("BAD"), ValueError("our bug")]
    for second in (0, 59):
        now = NOW.replace(second=second, microsecond=microsecond)
        for exc in kinds:
            expected = encode_krb_error(error_reply(exc, realm="EXAMPLE.TEST", sname=KRBTGT,
                                                    now=now, vague_errors=vague))
            assert replies.reply(exc, now) == expected
            assert replies.reply(exc, now) == expected  # again, from the pieces kept
