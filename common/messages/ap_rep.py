"""RFC 4120 §5.5.2 KRB_AP_REP and EncAPRepPart."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
from common.messages.header import verify_header
from common.messages.types import EncryptedData, EncryptionKey


@asn1_type(asn1.AP_REP)
@dataclass(frozen=True, slots=True)
class ApRep:
    pvno: int
    msg_type: int
    enc_part: EncryptedData


@asn1_type(asn1.EncAPRepPart)
@dataclass(frozen=True, slots=True)
class EncApRepPart:
    ctime: datetime
    cusec: int
    subkey: EncryptionKey | None
    seq_number: int | None


decode_ap_rep, encode_ap_rep = codec(
    asn1.AP_REP, ApRep, lambda rep: verify_header(rep, MessageType.KRB_AP_REP))
decode_enc_ap_rep_part, encode_enc_ap_rep_part = codec(asn1.EncAPRepPart, EncApRepPart)
