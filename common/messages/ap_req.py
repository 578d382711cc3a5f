"""RFC 4120 §5.5.1 KRB_AP_REQ and the Authenticator."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.errors import MalformedMessage
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
from common.messages.header import verify_header
from common.messages.ticket import Ticket
from common.messages.types import (
    AuthorizationDataEntry,
    Checksum,
    EncryptedData,
    EncryptionKey,
    PrincipalName,
)


@asn1_type(asn1.AP_REQ)
@dataclass(frozen=True, slots=True)
class ApReq:
    pvno: int
    msg_type: int
    ap_options: int
    ticket: Ticket
    authenticator: EncryptedData


@asn1_type(asn1.Authenticator)
@dataclass(frozen=True, slots=True)
class Authenticator:
    authenticator_vno: int
    crealm: str
    cname: PrincipalName
    cksum: Checksum | None
    cusec: int
    ctime: datetime
    subkey: EncryptionKey | None
    seq_number: int | None
    authorization_data: tuple[AuthorizationDataEntry, ...] | None


def _verify_authenticator(auth: Authenticator) -> None:
    if auth.authenticator_vno != 5:
        raise MalformedMessage("BAD_AUTHENTICATOR_VNO", f"{auth.authenticator_vno}")


decode_ap_req, encode_ap_req = codec(
    asn1.AP_REQ, ApReq, lambda req: verify_header(req, MessageType.KRB_AP_REQ))
decode_authenticator, encode_authenticator = codec(asn1.Authenticator, Authenticator,
                                                   _verify_authenticator)
