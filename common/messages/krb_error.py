"""RFC 4120 §5.9.1 KRB_ERROR, the METHOD-DATA and TYPED-DATA it carries in e-data, and
`error_reply`, the one place a KerberosError becomes a KRB-ERROR (STYLE §4)."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import ErrorCode, MessageType
from common.errors import KerberosError
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
from common.messages.header import PVNO, verify_header
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
