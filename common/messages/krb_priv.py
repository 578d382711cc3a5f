"""RFC 4120 §5.7 KRB_PRIV and EncKrbPrivPart (confidential user data)."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, decode_der, encode_der
from common.messages.header import verify_header
from common.messages.types import EncryptedData, HostAddress


@asn1_type(asn1.KRB_PRIV)
@dataclass(frozen=True, slots=True)
class KrbPriv:
    pvno: int
    msg_type: int
    enc_part: EncryptedData


@asn1_type(asn1.EncKrbPrivPart)
@dataclass(frozen=True, slots=True)
class EncKrbPrivPart:
    user_data: bytes
    timestamp: datetime | None
    usec: int | None
    seq_number: int | None
    s_address: HostAddress
    r_address: HostAddress | None


_KRB_PRIV = asn1.KRB_PRIV()
_ENC_PART = asn1.EncKrbPrivPart()


def decode_krb_priv(data: bytes) -> KrbPriv:
    msg: KrbPriv = decode_der(data, _KRB_PRIV)
    verify_header(msg, MessageType.KRB_PRIV)
    return msg


def encode_krb_priv(msg: KrbPriv) -> bytes:
    return encode_der(msg, _KRB_PRIV)


def decode_enc_krb_priv_part(data: bytes) -> EncKrbPrivPart:
    part: EncKrbPrivPart = decode_der(data, _ENC_PART)
    return part


def encode_enc_krb_priv_part(part: EncKrbPrivPart) -> bytes:
    return encode_der(part, _ENC_PART)
