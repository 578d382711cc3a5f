"""RFC 4120 §5.6 KRB_SAFE (integrity-protected user data)."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
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


decode_krb_safe, encode_krb_safe = codec(
    asn1.KRB_SAFE, KrbSafe, lambda msg: verify_header(msg, MessageType.KRB_SAFE))
# encode_krb_safe_body gives the bytes the KRB-SAFE checksum covers (§5.6.1, key usage 15).
decode_krb_safe_body, encode_krb_safe_body = codec(asn1.KRB_SAFE_BODY, KrbSafeBody)
