"""RFC 4120 §5.9.1 KRB_ERROR, the METHOD-DATA and TYPED-DATA it carries in e-data, and
`error_reply`, the one place a KerberosError becomes a KRB-ERROR (STYLE §4); `ErrorReplies`,
the same encoded for a server that sends the same few errors again and again."""

from dataclasses import dataclass
from datetime import UTC, datetime

from common.codes import ErrorCode, MessageType
from common.errors import KerberosError
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
from common.messages.der import encode_length, read_header
from common.messages.header import PVNO, verify_header
from common.messages.primitives import format_kerberos_time
from common.messages.types import PaData, PrincipalName, TypedDataEntry


@asn1_type(asn1.KRB_ERROR)
@dataclass(frozen=True, slots=True)
class KrbError:
    pvno: int
    msg_type: int
    ctime: datetime | None
    cusec: int | None
    stime: datetime
    susec: int
    error_code: int
    crealm: str | None
    cname: PrincipalName | None
    realm: str
    sname: PrincipalName
    e_text: str | None
    e_data: bytes | None


decode_krb_error, encode_krb_error = codec(
    asn1.KRB_ERROR, KrbError, lambda err: verify_header(err, MessageType.KRB_ERROR))
# METHOD-DATA is the e-data of KDC_ERR_PREAUTH_REQUIRED; TYPED-DATA carries, for example,
# TD-DH-PARAMETERS with PKINIT error 65 (RFC 4120 §5.9.1, RFC 4556 §3.2.2).
decode_method_data, encode_method_data = codec(asn1.METHOD_DATA, tuple[PaData, ...])
decode_typed_data, encode_typed_data = codec(asn1.TYPED_DATA, tuple[TypedDataEntry, ...])


def error_reply(exc: BaseException, *, realm: str, sname: PrincipalName, now: datetime,
                vague_errors: bool = False, crealm: str | None = None,
                cname: PrincipalName | None = None, e_data: bytes | None = None) -> KrbError:
    """Map any exception to the KRB-ERROR the peer sees.

    A KerberosError gets its own code and its `status` as e-text (none when `vague_errors`); any
    other exception is our bug: KRB_ERR_GENERIC with e-text "INTERNAL" (the caller logs it).
    `detail` is never sent. `now` supplies stime/susec, which clients use to learn clock skew.
    """
    if isinstance(exc, KerberosError):
        code = int(exc.code)
        text = None if vague_errors else exc.status
        e_data = e_data if e_data is not None else exc.e_data
    else:
        code = int(ErrorCode.KRB_ERR_GENERIC)
        text = "INTERNAL"
    return KrbError(pvno=PVNO, msg_type=int(MessageType.KRB_ERROR), ctime=None, cusec=None,
                    stime=now.replace(microsecond=0), susec=now.microsecond, error_code=code,
                    crealm=crealm, cname=cname, realm=realm, sname=sname, e_text=text,
                    e_data=e_data)


class ErrorReplies:
    """`reply(exc, now)` is encode_krb_error(error_reply(exc, realm=..., sname=..., now=now,
    vague_errors=...)), byte for byte (tests/unit/test_errors.py), for a server whose errors
    repeat: every device's first AS-REQ gets the same PREAUTH_REQUIRED (code, e-text, realm,
    sname, and e-data carrying the second's freshness token); only stime and susec differ.
    Each distinct error is encoded once and cut around its stime and susec, and a reply
    splices the time between the two pieces: a few byte operations instead of building and
    encoding the message, which is most of the cost of a PREAUTH_REQUIRED (docs/performance.md)."""

    def __init__(self, realm: str, sname: PrincipalName, vague_errors: bool = False,
                 max_entries: int = 64) -> None:
        self.realm, self.sname, self.vague_errors = realm, sname, vague_errors
        self._max_entries = max_entries
        self._pieces: dict[tuple[int, str | None, bytes | None], tuple[bytes, bytes]] = {}

    def reply(self, exc: BaseException, now: datetime) -> bytes:
        if isinstance(exc, KerberosError):
            key = (int(exc.code), None if self.vague_errors else exc.status, exc.e_data)
        else:
            key = (int(ErrorCode.KRB_ERR_GENERIC), "INTERNAL", None)
        pieces = self._pieces.get(key)
        if pieces is None:
            if len(self._pieces) >= self._max_entries:
                self._pieces.clear()
            pieces = self._pieces[key] = _cut_around_time(encode_krb_error(error_reply(
                exc, realm=self.realm, sname=self.sname, now=_REFERENCE,
                vague_errors=self.vague_errors)))
        before, after = pieces
        microseconds = now.microsecond
        susec = microseconds.to_bytes((microseconds.bit_length() + 8) // 8, "big")
        fields = b"".join((before, b"\xa4\x11\x18\x0f",
                           format_kerberos_time(now.replace(microsecond=0)).encode(),
                           bytes((0xA5, len(susec) + 2, 0x02, len(susec))), susec, after))
        sequence = b"\x30" + encode_length(len(fields)) + fields
        return b"\x7e" + encode_length(len(sequence)) + sequence


_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)


def _cut_around_time(error: bytes) -> tuple[bytes, bytes]:
    """The KRB-ERROR's SEQUENCE contents before [4] stime and after [5] susec."""
    start, end = read_header(error, 1, len(error))  # [APPLICATION 30]
    position, end = read_header(error, start + 1, end)  # SEQUENCE
    stime = susec_end = None
    while position < end:
        tag = error[position]
        _, field_end = read_header(error, position + 1, end)
        if tag == 0xA4:
            stime = position
        elif tag == 0xA5:
            susec_end = field_end
        position = field_end
    assert stime is not None and susec_end is not None  # both are required fields
    return error[read_header(error, start + 1, len(error))[0]:stime], error[susec_end:end]
