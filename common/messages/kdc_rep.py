"""RFC 4120 §5.4.2 KDC-REP (AS-REP and TGS-REP) and EncKDCRepPart (with RFC 6806's
encrypted-pa-data).

MIT's KDC tags the enc-part of an AS reply as EncTGSRepPart ([APPLICATION 26]), as RFC 4120
§5.4.2 tells clients to tolerate; `decode_enc_kdc_rep_part` accepts both tags and says which.
"""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.errors import MalformedMessage
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import alias_schema, asn1_type, codec, decode_der, encode_der
from common.messages.header import verify_header
from common.messages.ticket import Ticket
from common.messages.types import (
    EncryptedData,
    EncryptionKey,
    HostAddress,
    LastReqEntry,
    PaData,
    PrincipalName,
)


@asn1_type(asn1.KDC_REP)
@dataclass(frozen=True, slots=True)
class KdcRep:
    pvno: int
    msg_type: int
    padata: tuple[PaData, ...] | None
    crealm: str
    cname: PrincipalName
    ticket: Ticket
    enc_part: EncryptedData


@asn1_type(asn1.EncKDCRepPart)
@dataclass(frozen=True, slots=True)
class EncKdcRepPart:
    key: EncryptionKey
    last_req: tuple[LastReqEntry, ...]
    nonce: int
    key_expiration: datetime | None
    flags: int
    authtime: datetime
    starttime: datetime | None
    endtime: datetime
    renew_till: datetime | None
    srealm: str
    sname: PrincipalName
    caddr: tuple[HostAddress, ...] | None
    encrypted_pa_data: tuple[PaData, ...] | None


for _schema in (asn1.AS_REP, asn1.TGS_REP):
    alias_schema(_schema, KdcRep)
for _schema in (asn1.EncASRepPart, asn1.EncTGSRepPart):
    alias_schema(_schema, EncKdcRepPart)

decode_as_rep, encode_as_rep = codec(
    asn1.AS_REP, KdcRep, lambda rep: verify_header(rep, MessageType.KRB_AS_REP))
decode_tgs_rep, encode_tgs_rep = codec(
    asn1.TGS_REP, KdcRep, lambda rep: verify_header(rep, MessageType.KRB_TGS_REP))
_ENC_AS = asn1.EncASRepPart()
_ENC_TGS = asn1.EncTGSRepPart()
ENC_AS_REP_PART_TAG = 25
ENC_TGS_REP_PART_TAG = 26


def decode_enc_kdc_rep_part(data: bytes) -> tuple[EncKdcRepPart, int]:
    """Decode EncASRepPart or EncTGSRepPart; returns the part and its APPLICATION tag."""
    if data[:1] == b"\x79":
        return decode_der(data, _ENC_AS), ENC_AS_REP_PART_TAG
    if data[:1] == b"\x7a":
        return decode_der(data, _ENC_TGS), ENC_TGS_REP_PART_TAG
    raise MalformedMessage("BAD_ASN1", "not EncASRepPart or EncTGSRepPart")


def encode_enc_kdc_rep_part(part: EncKdcRepPart, tag: int = ENC_AS_REP_PART_TAG) -> bytes:
    return encode_der(part, _ENC_AS if tag == ENC_AS_REP_PART_TAG else _ENC_TGS)
