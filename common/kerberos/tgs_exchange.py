"""The KDC side of the TGS exchange (RFC 4120 §3.3): a client holding a TGT gets a ticket for
another service (seed 001: a device's backup signaling controller) without PKINIT.

Checks, in order: decode; PA-TGS-REQ carries an AP-REQ whose ticket is for krbtgt/REALM and
decrypts with our key (kvno-selected); the TGT is current (32/33); the authenticator decrypts
with the TGT session key (usage 7), names the ticket's client, is within the skew (37), has not
been seen (34) and its checksum covers the received KDC-REQ-BODY (usage 6, else 41). The new
ticket inherits client, authtime, flags (minus INITIAL) and authorization data from the TGT,
so a device's unprovisioned restriction follows it to every service.
"""

import os
from collections.abc import Callable
from datetime import datetime, timedelta

from common.codes import ErrorCode, KeyUsage, MessageType, PaDataType, TicketFlags
from common.crypto import Key
from common.errors import KerberosError, MalformedMessage
from common.kerberos.ap_exchange import NoKey, accept_ap_req
from common.kerberos.as_exchange import PrincipalStore, principal_text
from common.kerberos.replay import ReplayCache
from common.kerberos.ticket_cache import TicketCache
from common.kerberos.tickets import ServerUnknown, build_kdc_rep, choose_enctype, issue_ticket
from common.messages.kdc_rep import ENC_TGS_REP_PART_TAG, encode_tgs_rep
from common.messages.kdc_req import decode_tgs_req, received_req_body
from common.messages.types import find_padata


class NoTgt(KerberosError):
    code = ErrorCode.KDC_ERR_PADATA_TYPE_NOSUPP


def handle_tgs_req(data: bytes, *, realm: str, principals: PrincipalStore, now: datetime,
                   enctypes: tuple[int, ...], max_skew: timedelta,
                   default_lifetime: timedelta, replay: ReplayCache | None = None,
                   random: Callable[[int], bytes] = os.urandom,
                   notes: dict[str, str] | None = None,
                   tickets: TicketCache | None = None, mono: float | None = None) -> bytes:
    """Process one TGS-REQ; return the DER TGS-REP or raise a KerberosError. `notes`, when
    given, receives `server` and, once the TGT verifies, `client` (for the edge's log line);
    `tickets` keeps opened TGTs (a client presents its TGT for every service ticket)."""
    req = decode_tgs_req(data)
    body = req.req_body
    if notes is not None and body.sname is not None:
        notes["server"] = "/".join(body.sname.name_string)
    pa = find_padata(req.padata, PaDataType.PA_TGS_REQ)
    if pa is None:
        raise NoTgt("NO_PA_TGS_REQ")
    krbtgt = principals.get_principal(f"krbtgt/{realm}")

    def tgt_key(sname: tuple[str, ...], tgt_realm: str, enctype: int, kvno: int | None) -> Key:
        if tgt_realm != realm or sname != ("krbtgt", realm) or krbtgt is None:
            raise ServerUnknown("NOT_OUR_TGT", f"{'/'.join(sname)}@{tgt_realm}")
        entry = next((k for k in krbtgt.keys if k.key.enctype == enctype and
                      (kvno is None or k.kvno == kvno)), None)
        if entry is None:
            raise NoKey("NO_KEY_FOR_TGT", f"enctype {enctype} kvno {kvno}")
        return entry.key

    accepted = accept_ap_req(pa.padata_value, keys=tgt_key, now=now, max_skew=max_skew,
                             replay=replay, binding=received_req_body(data),
                             usage_auth=KeyUsage.TGS_REQ_AUTH,
                             usage_cksum=KeyUsage.TGS_REQ_AUTH_CKSUM, require_checksum=True,
                             for_ap_rep=False, tickets=tickets, mono=mono)
    part, auth, session = accepted.ticket, accepted.authenticator, accepted.session_key
    if notes is not None:
        notes["client"] = accepted.client

    if body.sname is None:
        raise MalformedMessage("MISSING_NAME", "TGS-REQ without sname")
    server = principals.get_principal(principal_text(body.sname))
    if server is None:
        raise ServerUnknown("SERVER_NOT_FOUND", principal_text(body.sname))
    server_key = server.key_for(enctypes)
    if server_key is None:
        raise ServerUnknown("SERVER_HAS_NO_KEY", server.name)
    endtime = min(part.endtime, now + (server.max_life or default_lifetime))
    if body.till.year > 1970:
        endtime = min(endtime, body.till)
    session_enctype = choose_enctype(
        body.etype, tuple(e for e in enctypes if server.key_for((e,)) is not None) or enctypes)
    issued = issue_ticket(
        realm=realm, cname=part.cname, crealm=part.crealm, sname=body.sname,
        server_key=server_key, session_enctype=session_enctype,
        flags=part.flags & ~TicketFlags.INITIAL, authtime=part.authtime,
        endtime=endtime.replace(microsecond=0),
        authorization_data=part.authorization_data, random=random)
    if auth.subkey is not None:
        reply_key, usage = Key(auth.subkey.keytype, auth.subkey.keyvalue), \
            KeyUsage.TGS_REP_ENCPART_SUBKEY
    else:
        reply_key, usage = session, KeyUsage.TGS_REP_ENCPART_SESSKEY
    rep = build_kdc_rep(msg_type=MessageType.KRB_TGS_REP, issued=issued, nonce=body.nonce,
                        reply_key=reply_key, reply_usage=usage, padata=None, now=now,
                        enc_part_tag=ENC_TGS_REP_PART_TAG)
    return encode_tgs_rep(rep)
