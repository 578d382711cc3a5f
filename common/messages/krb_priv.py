"""RFC 4120 §5.7 KRB_PRIV and EncKrbPrivPart (confidential user data)."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
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


decode_krb_priv, encode_krb_priv = codec(
    asn1.KRB_PRIV, KrbPriv, lambda msg: verify_header(msg, MessageType.KRB_PRIV))
decode_enc_krb_priv_part, encode_enc_krb_priv_part = codec(asn1.EncKrbPrivPart, EncKrbPrivPart)
