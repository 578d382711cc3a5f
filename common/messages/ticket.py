"""RFC 4120 §5.3 Ticket and EncTicketPart."""

from dataclasses import dataclass
from datetime import datetime

from common.errors import MalformedMessage
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
from common.messages.types import (
    AuthorizationDataEntry,
    EncryptedData,
    EncryptionKey,
    HostAddress,
    PrincipalName,
    TransitedEncoding,
)

TKT_VNO = 5


@asn1_type(asn1.Ticket, keep=4096)  # a device's ticket comes back in each of its AP-REQs
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


def _verify_ticket(ticket: Ticket) -> None:
    if ticket.tkt_vno != TKT_VNO:
        raise MalformedMessage("BAD_TKT_VNO", f"tkt-vno {ticket.tkt_vno}")


decode_ticket, encode_ticket = codec(asn1.Ticket, Ticket, _verify_ticket)
decode_enc_ticket_part, encode_enc_ticket_part = codec(asn1.EncTicketPart, EncTicketPart)
