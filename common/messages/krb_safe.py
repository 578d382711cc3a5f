"""RFC 4120 §5.6 KRB_SAFE (integrity-protected user data)."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, decode_der, encode_der
from common.messages.header import verify_header
from common.messages.types import Checksum, HostAddress


@asn1_type(asn1.KRB_SAFE_BODY)
@dataclass(frozen=True, slots=True)
class KrbSafeBody:
    user_data: bytes
    timestamp: datetime | None
    usec: int | None
    seq_number: int | None
    s_address: HostAddress
    r_address: HostAddress | None


@asn1_type(asn1.KRB_SAFE)
@dataclass(frozen=True, slots=True)
class KrbSafe:
    pvno: int
    msg_type: int
    safe_body: KrbSafeBody
    cksum: Checksum


_KRB_SAFE = asn1.KRB_SAFE()
_BODY = asn1.KRB_SAFE_BODY()


def decode_krb_safe(data: bytes) -> KrbSafe:
    msg: KrbSafe = decode_der(data, _KRB_SAFE)
    verify_header(msg, MessageType.KRB_SAFE)
    return msg


def encode_krb_safe(msg: KrbSafe) -> bytes:
    return encode_der(msg, _KRB_SAFE)


def encode_krb_safe_body(body: KrbSafeBody) -> bytes:
    """The bytes the KRB-SAFE checksum covers (RFC 4120 §5.6.1, key usage 15)."""
    return encode_der(body, _BODY)
