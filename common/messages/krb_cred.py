"""RFC 4120 §5.8 KRB_CRED, EncKrbCredPart and KrbCredInfo (forwarded credentials)."""

from dataclasses import dataclass
from datetime import datetime

from common.codes import MessageType
from common.messages.asn1 import rfc4120 as asn1
from common.messages.base import asn1_type, codec
from common.messages.header import verify_header
from common.messages.ticket import Ticket
from common.messages.types import EncryptedData, EncryptionKey, HostAddress, PrincipalName


@asn1_type(asn1.KRB_CRED)
@dataclass(frozen=True, slots=True)
class KrbCred:
    pvno: int
    msg_type: int
    tickets: tuple[Ticket, ...]
    enc_part: EncryptedData


@asn1_type(asn1.KrbCredInfo)
@dataclass(frozen=True, slots=True)
class KrbCredInfo:
    key: EncryptionKey
    prealm: str | None
    pname: PrincipalName | None
    flags: int | None
    authtime: datetime | None
    starttime: datetime | None
    endtime: datetime | None
    renew_till: datetime | None
    srealm: str | None
    sname: PrincipalName | None
    caddr: tuple[HostAddress, ...] | None


@asn1_type(asn1.EncKrbCredPart)
@dataclass(frozen=True, slots=True)
class EncKrbCredPart:
    ticket_info: tuple[KrbCredInfo, ...]
    nonce: int | None
    timestamp: datetime | None
    usec: int | None
    s_address: HostAddress | None
    r_address: HostAddress | None


decode_krb_cred, encode_krb_cred = codec(
    asn1.KRB_CRED, KrbCred, lambda msg: verify_header(msg, MessageType.KRB_CRED))
decode_enc_krb_cred_part, encode_enc_krb_cred_part = codec(asn1.EncKrbCredPart, EncKrbCredPart)
