"""RFC 4120 §5.5.2 KRB_AP_REP and EncAPRepPart."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, decode_der, encode_der
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


_AP_REP = asn1.AP_REP()
_ENC_AP_REP_PART = asn1.EncAPRepPart()


def decode_ap_rep(data: bytes) -> ApRep:
    rep: ApRep = decode_der(data, _AP_REP)
    verify_header(rep, MessageType.KRB_AP_REP)
    return rep


def encode_ap_rep(rep: ApRep) -> bytes:
    return encode_der(rep, _AP_REP)


def decode_enc_ap_rep_part(data: bytes) -> EncApRepPart:
    part: EncApRepPart = decode_der(data, _ENC_AP_REP_PART)
    return part


def encode_enc_ap_rep_part(part: EncApRepPart) -> bytes:
    return encode_der(part, _ENC_AP_REP_PART)
