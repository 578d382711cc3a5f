"""Issuing tickets and KDC replies (RFC 4120 §3.1.3, §5.3, §5.4.2): shared by the AS and TGS
exchanges. No I/O; time and randomness are parameters."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.codes import ErrorCode, KeyUsage, MessageType
from common.crypto import Key
from common.errors import EncTypeNotSupported, KerberosError
from common.messages.kdc_rep import (
    ENC_AS_REP_PART_TAG,
    EncKdcRepPart,
    KdcRep,
    encode_enc_kdc_rep_part,
)
from common.messages.ticket import EncTicketPart, Ticket, encode_enc_ticket_part
from common.messages.types import (
    AuthorizationDataEntry,
    EncryptedData,
    EncryptionKey,
    LastReqEntry,
    PaData,
    PrincipalName,
    TransitedEncoding,
)


class PrincipalUnknown(KerberosError):
    """RFC 4120 §3.1.3: the client principal is not in the database."""

    code = ErrorCode.KDC_ERR_C_PRINCIPAL_UNKNOWN


class ServerUnknown(KerberosError):
    """RFC 4120 §3.1.3: the server principal is not in the database."""

    code = ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN


@dataclass(frozen=True, slots=True)
class KeyEntry:
    kvno: int
    key: Key


@dataclass(frozen=True, slots=True)
class PrincipalEntry:
    """What the KDC knows about a principal (name without realm, e.g. 'sigctl/sc1.example')."""

    name: str
    keys: tuple[KeyEntry, ...] = ()
    max_life: timedelta | None = None
    authorization_data: tuple[AuthorizationDataEntry, ...] = ()

    def key_for(self, enctypes: tuple[int, ...]) -> KeyEntry | None:
        """The highest-kvno key of the first enctype in `enctypes` this principal has."""
        for enctype in enctypes:
            keys = [k for k in self.keys if k.key.enctype == enctype]
            if keys:
                return max(keys, key=lambda k: k.kvno)
        return None


def choose_enctype(requested: tuple[int, ...], allowed: tuple[int, ...]) -> int:
    """The first of the client's enctypes that the KDC allows (RFC 4120 §3.1.3)."""
    for enctype in requested:
        if enctype in allowed:
            return enctype
    raise EncTypeNotSupported("ETYPE_NOSUPP", f"client offered {requested}")


@dataclass(frozen=True, slots=True)
class IssuedTicket:
    ticket: Ticket
    part: EncTicketPart
    session_key: Key


def issue_ticket(*, realm: str, cname: PrincipalName, crealm: str, sname: PrincipalName,
                 server_key: KeyEntry, session_enctype: int, flags: int, authtime: datetime,
                 endtime: datetime, renew_till: datetime | None = None,
                 authorization_data: tuple[AuthorizationDataEntry, ...] | None = None,
                 random: Callable[[int], bytes] = os.urandom) -> IssuedTicket:
    """A ticket for `sname` with a fresh session key, encrypted in the server's key (usage 2)."""
    session = Key.random(session_enctype, random)
    part = EncTicketPart(
        flags=flags, key=EncryptionKey(session.enctype, session.data), crealm=crealm,
        cname=cname, transited=TransitedEncoding(1, b""), authtime=authtime, starttime=None,
        endtime=endtime, renew_till=renew_till, caddr=None,
        authorization_data=authorization_data or None)
    cipher = server_key.key.encrypt(KeyUsage.KDC_REP_TICKET, encode_enc_ticket_part(part))
    ticket = Ticket(5, realm, sname, EncryptedData(server_key.key.enctype, server_key.kvno,
                                                   cipher))
    return IssuedTicket(ticket, part, session)


def build_kdc_rep(*, msg_type: MessageType, issued: IssuedTicket, nonce: int, reply_key: Key,
                  reply_usage: KeyUsage, padata: tuple[PaData, ...] | None, now: datetime,
                  enc_part_tag: int = ENC_AS_REP_PART_TAG) -> KdcRep:
    """The AS-REP or TGS-REP around an issued ticket (RFC 4120 §5.4.2)."""
    part = issued.part
    enc = EncKdcRepPart(
        key=part.key, last_req=(LastReqEntry(0, now.replace(microsecond=0)),), nonce=nonce,
        key_expiration=None, flags=part.flags, authtime=part.authtime,
        starttime=part.starttime, endtime=part.endtime, renew_till=part.renew_till,
        srealm=issued.ticket.realm, sname=issued.ticket.sname, caddr=None,
        encrypted_pa_data=None)
    cipher = reply_key.encrypt(reply_usage, encode_enc_kdc_rep_part(enc, enc_part_tag))
    return KdcRep(5, int(msg_type), padata, part.crealm, part.cname, issued.ticket,
                  EncryptedData(reply_key.enctype, None, cipher))
