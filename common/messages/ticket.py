"""RFC 4120 §5.3 Ticket and EncTicketPart."""

from dataclasses import dataclass
from datetime import datetime

from common.errors import MalformedMessage
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, decode_der, encode_der
from common.messages.types import (
    AuthorizationDataEntry,
    EncryptedData,
    EncryptionKey,
    HostAddress,
    PrincipalName,
    TransitedEncoding,
)

TKT_VNO = 5


@asn1_type(asn1.Ticket)
@dataclass(frozen=True, slots=True)
class Ticket:
    tkt_vno: int
    realm: str
    sname: PrincipalName
    enc_part: EncryptedData


@asn1_type(asn1.EncTicketPart)
@dataclass(frozen=True, slots=True)
class EncTicketPart:
    flags: int
    key: EncryptionKey
    crealm: str
    cname: PrincipalName
    transited: TransitedEncoding
    authtime: datetime
    starttime: datetime | None
    endtime: datetime
    renew_till: datetime | None
    caddr: tuple[HostAddress, ...] | None
    authorization_data: tuple[AuthorizationDataEntry, ...] | None


_TICKET = asn1.Ticket()
_ENC_TICKET_PART = asn1.EncTicketPart()


def decode_ticket(data: bytes) -> Ticket:
    ticket: Ticket = decode_der(data, _TICKET)
    if ticket.tkt_vno != TKT_VNO:
        raise MalformedMessage("BAD_TKT_VNO", f"tkt-vno {ticket.tkt_vno}")
    return ticket


def encode_ticket(ticket: Ticket) -> bytes:
    return encode_der(ticket, _TICKET)


def decode_enc_ticket_part(data: bytes) -> EncTicketPart:
    result: EncTicketPart = decode_der(data, _ENC_TICKET_PART)
    return result


def encode_enc_ticket_part(part: EncTicketPart) -> bytes:
    return encode_der(part, _ENC_TICKET_PART)
