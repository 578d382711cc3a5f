"""The AP exchange (RFC 4120 §3.2) for a signaling controller and a device. No I/O.

Acceptor (`accept_ap_req`): find the service key by the ticket's sname, enctype and kvno
(NOKEY 45 / BADKEYVER 44 / NOT_US 35), decrypt the ticket (BAD_INTEGRITY 31), check its
validity window (TKT_EXPIRED 32, TKT_NYV 33), decrypt the authenticator with the session key,
match its client to the ticket's (BADMATCH 36), ctime within the skew (SKEW 37), the keyed
checksum over the caller's binding data when the authenticator carries one (MODIFIED 41;
a GSS-API 0x8003 checksum, as MIT's GSS acceptor-facing clients send, is accepted when
well-formed), and the replay cache (REPEAT 34, keyed by the authenticator ciphertext as MIT
does). `build_ap_rep` answers with a fresh random sub-key.

Initiator (`build_ap_req`, `process_ap_rep`): the device side.
"""

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.codes import ErrorCode, KeyUsage, MessageType
from common.crypto import Key
from common.crypto.rfc3961 import KC, KE, KI
from common.errors import ClockSkew, KerberosError, MalformedMessage, ModifiedError
from common.kerberos.keytab import KeytabEntry
from common.kerberos.replay import ReplayCache
from common.kerberos.ticket_cache import TicketCache, open_ticket
from common.messages.ap_rep import (
    ApRep,
    EncApRepPart,
    decode_ap_rep,
    decode_enc_ap_rep_part,
    encode_ap_rep,
    encode_enc_ap_rep_part,
)
from common.messages.ap_req import (
    ApReq,
    Authenticator,
    decode_ap_req,
    decode_authenticator,
    encode_ap_req,
    encode_authenticator,
)
from common.messages.restriction import DeviceRestriction
from common.messages.ticket import EncTicketPart, Ticket
from common.messages.types import Checksum, EncryptedData, EncryptionKey, PrincipalName

GSS_CHECKSUM = 0x8003  # RFC 4121 §4.1.1
MUTUAL_REQUIRED = 0x20000000  # ap-options bit 2


class TicketExpired(KerberosError):
    code = ErrorCode.KRB_AP_ERR_TKT_EXPIRED


class TicketNotYetValid(KerberosError):
    code = ErrorCode.KRB_AP_ERR_TKT_NYV


class NotUs(KerberosError):
    code = ErrorCode.KRB_AP_ERR_NOT_US


class NoKey(KerberosError):
    code = ErrorCode.KRB_AP_ERR_NOKEY


class BadKeyVersion(KerberosError):
    code = ErrorCode.KRB_AP_ERR_BADKEYVER


class BadMatch(KerberosError):
    code = ErrorCode.KRB_AP_ERR_BADMATCH


class MutualFailed(KerberosError):
    code = ErrorCode.KRB_AP_ERR_MUT_FAIL


# (sname components, realm, enctype, kvno or None) -> key; raise NoKey/BadKeyVersion
KeyLookup = Callable[[tuple[str, ...], str, int, int | None], Key]


class KeytabKeys:
    """A KeyLookup over keytab entries (ours or MIT's): Key objects are built once, so their
    usage keys are derived once per service key, not once per ticket."""

    def __init__(self, entries: list[KeytabEntry]) -> None:
        self._keys: dict[tuple[str, int, int], Key] = {}
        self._principals: set[str] = set()
        for entry in entries:
            self._keys[(entry.principal, entry.enctype, entry.kvno)] = Key(entry.enctype,
                                                                           entry.key)
            self._principals.add(entry.principal)
        self._latest = {(p, e): max(k for (p2, e2, k) in self._keys if (p2, e2) == (p, e))
                        for (p, e, _) in self._keys}

    def __call__(self, sname: tuple[str, ...], realm: str, enctype: int,
                 kvno: int | None) -> Key:
        principal = "/".join(sname) + "@" + realm
        if principal not in self._principals:
            raise NotUs("NOT_US", principal)
        if (principal, enctype) not in self._latest:
            raise NoKey("NO_KEY_FOR_ENCTYPE", f"{principal} {enctype}")
        key = self._keys.get((principal, enctype,
                              kvno if kvno is not None else self._latest[(principal, enctype)]))
        if key is None:
            raise BadKeyVersion("NO_KEY_FOR_KVNO", f"{principal} kvno {kvno}")
        return key


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified AP-REQ."""
    ap_req: ApReq
    ticket: EncTicketPart
    authenticator: Authenticator
    session_key: Key
    restriction: DeviceRestriction | None

    @property
    def client(self) -> str:
        return "/".join(self.ticket.cname.name_string) + "@" + self.ticket.crealm

    @property
    def server(self) -> str:
        sname = self.ap_req.ticket.sname
        return "/".join(sname.name_string) + "@" + self.ap_req.ticket.realm


def accept_ap_req(data: bytes, *, keys: KeyLookup, now: datetime, max_skew: timedelta,
                  replay: ReplayCache | None, binding: bytes | None = None,
                  usage_auth: int = KeyUsage.AP_REQ_AUTH,
                  usage_cksum: int = KeyUsage.AP_REQ_AUTH_CKSUM,
                  require_checksum: bool = False, for_ap_rep: bool = True,
                  tickets: TicketCache | None = None, mono: float | None = None) -> Accepted:
    """Verify an AP-REQ (see the module text); `binding` is what a keyed authenticator
    checksum must cover; `tickets` keeps opened tickets (common/kerberos/ticket_cache.py). The TGS
    exchange uses the same checks with its own key usages (7 and 6), the KDC-REQ-BODY as
    binding, a checksum required (a GSS checksum is not one) and no AP-REP (`for_ap_rep`:
    derive the AP-REP's and the PRF's keys along with the others)."""
    ap_req = decode_ap_req(data)
    ticket = ap_req.ticket
    key = keys(ticket.sname.name_string, ticket.realm, ticket.enc_part.etype,
               ticket.enc_part.kvno)
    opened = open_ticket(ticket, key) if tickets is None else tickets.open(ticket, key)
    part = opened.part
    if part.endtime <= now - max_skew:
        if tickets is not None:
            tickets.forget(ticket)
        raise TicketExpired("TICKET_EXPIRED", part.endtime.isoformat())
    if (part.starttime or part.authtime) > now + max_skew:
        raise TicketNotYetValid("TICKET_NOT_YET_VALID")
    session = opened.session_key
    # Everything this exchange derives from the session key, in one batch: the
    # authenticator's keys, its checksum's, and for an AP-REP its keys and the PRF's (which a
    # controller keys its messages with).
    slots: list[tuple[int, int]] = [(usage_auth, KE), (usage_auth, KI), (usage_cksum, KC)]
    if for_ap_rep:
        slots += [(KeyUsage.AP_REP_ENCPART, KE), (KeyUsage.AP_REP_ENCPART, KI)]
    session.prepare(slots, prf=for_ap_rep)
    auth = decode_authenticator(session.decrypt(usage_auth, ap_req.authenticator.cipher))
    if auth.cname != part.cname or auth.crealm != part.crealm:
        raise BadMatch("AUTHENTICATOR_CLIENT_MISMATCH")
    if abs(auth.ctime - now) > max_skew:
        raise ClockSkew("CTIME_SKEW")
    cksum = auth.cksum
    if cksum is None or cksum.cksumtype == GSS_CHECKSUM:
        if require_checksum:
            raise ModifiedError("NO_BODY_CHECKSUM")
        if cksum is not None and len(cksum.checksum) < 24:
            raise ModifiedError("BAD_GSS_CHECKSUM")
    elif binding is not None:
        session.verify_checksum(usage_cksum, binding, cksum.checksum, cksum.cksumtype)
    if replay is not None:
        replay.check_and_add(authenticator_fingerprint(ap_req), now, mono)
    return Accepted(ap_req, part, auth, session, opened.restriction)


def authenticator_fingerprint(ap_req: ApReq) -> bytes:
    """What the replay cache remembers of an AP-REQ: a hash of its encrypted authenticator
    (a fresh confounder makes every authenticator's ciphertext unique)."""
    return hashlib.sha256(ap_req.authenticator.cipher).digest()


def build_ap_rep(accepted: Accepted, subkey: Key, seq_number: int | None = None) -> bytes:
    """AP-REP whose EncAPRepPart echoes the authenticator's time and carries `subkey`."""
    auth = accepted.authenticator
    part = EncApRepPart(auth.ctime, auth.cusec,
                        EncryptionKey(subkey.enctype, subkey.data), seq_number)
    cipher = accepted.session_key.encrypt(KeyUsage.AP_REP_ENCPART, encode_enc_ap_rep_part(part))
    return encode_ap_rep(ApRep(5, MessageType.KRB_AP_REP,
                               EncryptedData(accepted.session_key.enctype, None, cipher)))


@dataclass(frozen=True, slots=True)
class ApRequest:
    data: bytes
    authenticator: Authenticator


def build_ap_req(*, ticket: Ticket, session_key: Key, cname: PrincipalName, crealm: str,
                 now: datetime, binding: bytes | None = None, mutual: bool = True,
                 random: Callable[[int], bytes] = os.urandom) -> ApRequest:
    """An AP-REQ with a keyed checksum over `binding` (key usage 10) when given."""
    cksum = None
    if binding is not None:
        cksum = Checksum(session_key.profile.cksumtype,
                         session_key.checksum(KeyUsage.AP_REQ_AUTH_CKSUM, binding))
    auth = Authenticator(5, crealm, cname, cksum, now.microsecond, now.replace(microsecond=0),
                         None, int.from_bytes(random(4), "big") & 0x3FFFFFFF, None)
    cipher = session_key.encrypt(KeyUsage.AP_REQ_AUTH, encode_authenticator(auth))
    data = encode_ap_req(ApReq(5, MessageType.KRB_AP_REQ, MUTUAL_REQUIRED if mutual else 0,
                               ticket, EncryptedData(session_key.enctype, None, cipher)))
    return ApRequest(data, auth)


def process_ap_rep(data: bytes, request: ApRequest, session_key: Key) -> EncApRepPart:
    """Decrypt the AP-REP and check it answers `request` (RFC 4120 §3.2.5)."""
    rep = decode_ap_rep(data)
    part = decode_enc_ap_rep_part(session_key.decrypt(KeyUsage.AP_REP_ENCPART,
                                                      rep.enc_part.cipher))
    auth = request.authenticator
    if part.ctime != auth.ctime or part.cusec != auth.cusec:
        raise MutualFailed("AP_REP_TIME_MISMATCH")
    if part.subkey is None:
        raise MalformedMessage("AP_REP_WITHOUT_SUBKEY")
    return part
