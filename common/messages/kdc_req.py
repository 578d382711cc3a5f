"""RFC 4120 §5.4.1 KDC-REQ (AS-REQ and TGS-REQ) and KDC-REQ-BODY.

Checksums over the request body — PKINIT's paChecksum (RFC 4556 §3.2.1), the TGS-REQ
authenticator's (RFC 4120 §7.2.2 key usage 6) — are checked over `received_req_body(data)`,
the body's bytes as they arrived. (Decoding is strict DER, so `encode_kdc_req_body` of the
decoded body gives the same bytes; slicing them out costs less than encoding them again.)
"""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.errors import MalformedMessage
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import alias_schema, asn1_type, codec
from common.messages.der import read_header
from common.messages.header import verify_header
from common.messages.ticket import Ticket
from common.messages.types import EncryptedData, HostAddress, PaData, PrincipalName


@asn1_type(asn1.KDC_REQ_BODY)
@dataclass(frozen=True, slots=True)
class KdcReqBody:
    kdc_options: int
    cname: PrincipalName | None
    realm: str
    sname: PrincipalName | None
    from_: datetime | None
    till: datetime
    rtime: datetime | None
    nonce: int
    etype: tuple[int, ...]
    addresses: tuple[HostAddress, ...] | None
    enc_authorization_data: EncryptedData | None
    additional_tickets: tuple[Ticket, ...] | None


@asn1_type(asn1.KDC_REQ)
@dataclass(frozen=True, slots=True)
class KdcReq:
    pvno: int
    msg_type: int
    padata: tuple[PaData, ...] | None
    req_body: KdcReqBody


alias_schema(asn1.AS_REQ, KdcReq)
alias_schema(asn1.TGS_REQ, KdcReq)

decode_as_req, encode_as_req = codec(
    asn1.AS_REQ, KdcReq, lambda req: verify_header(req, MessageType.KRB_AS_REQ))
decode_tgs_req, encode_tgs_req = codec(
    asn1.TGS_REQ, KdcReq, lambda req: verify_header(req, MessageType.KRB_TGS_REQ))
decode_kdc_req_body, encode_kdc_req_body = codec(asn1.KDC_REQ_BODY, KdcReqBody)


def received_req_body(data: bytes) -> bytes:
    """The KDC-REQ-BODY TLV of a DER AS-REQ or TGS-REQ exactly as received: the contents of
    its [4] field. For a request that decoded, so the structure is known to be sound."""
    start, end = read_header(data, 1, len(data))  # [APPLICATION 10 or 12]
    pos, end = read_header(data, start + 1, end)  # SEQUENCE
    while pos < end:
        tag = data[pos]
        contents, next_pos = read_header(data, pos + 1, end)
        if tag == 0xA4:
            return data[contents:next_pos]
        pos = next_pos
    raise MalformedMessage("MISSING_REQ_BODY")
