"""The client side of the TGS exchange (RFC 4120 §3.3): with a TGT, ask for another service's
ticket (a device's backup signaling controller) without PKINIT. No I/O."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.codes import KdcOptions, KeyUsage, MessageType, PaDataType
from common.crypto import Key
from common.errors import MalformedMessage
from common.messages.ap_req import ApReq, Authenticator, encode_ap_req, encode_authenticator
from common.messages.kdc_rep import EncKdcRepPart, KdcRep, decode_enc_kdc_rep_part, decode_tgs_rep
from common.messages.kdc_req import KdcReq, KdcReqBody, encode_kdc_req_body, encode_tgs_req
from common.messages.ticket import Ticket
from common.messages.types import Checksum, EncryptedData, EncryptionKey, PaData, PrincipalName


@dataclass(frozen=True, slots=True)
class TgsRequest:
    data: bytes
    nonce: int
    subkey: Key


def build_tgs_req(*, tgt: Ticket, session_key: Key, cname: PrincipalName, realm: str,
                  sname: PrincipalName, now: datetime, lifetime: timedelta,
                  enctypes: tuple[int, ...] = (18, 17, 20, 19),
                  random: Callable[[int], bytes] = os.urandom) -> TgsRequest:
    """A TGS-REQ: PA-TGS-REQ carries an AP-REQ with the TGT and an authenticator (key usage 7)
    whose checksum covers the KDC-REQ-BODY (usage 6) and which offers a sub-key for the reply."""
    nonce = int.from_bytes(random(4), "big") & 0x7FFFFFFF
    body = KdcReqBody(KdcOptions.FORWARDABLE, None, realm, sname, None,
                      (now + lifetime).replace(microsecond=0), None, nonce, enctypes, None,
                      None, None)
    checksum = session_key.checksum(KeyUsage.TGS_REQ_AUTH_CKSUM, encode_kdc_req_body(body))
    subkey = Key.random(session_key.enctype, random)
    authenticator = Authenticator(5, realm, cname,
                                  Checksum(session_key.profile.cksumtype, checksum),
                                  now.microsecond, now.replace(microsecond=0),
                                  EncryptionKey(subkey.enctype, subkey.data), None, None)
    cipher = session_key.encrypt(KeyUsage.TGS_REQ_AUTH, encode_authenticator(authenticator))
    ap_req = ApReq(5, int(MessageType.KRB_AP_REQ), 0, tgt,
                   EncryptedData(session_key.enctype, None, cipher))
    data = encode_tgs_req(KdcReq(5, int(MessageType.KRB_TGS_REQ),
                                 (PaData(PaDataType.PA_TGS_REQ, encode_ap_req(ap_req)),), body))
    return TgsRequest(data, nonce, subkey)


def process_tgs_rep(data: bytes, request: TgsRequest) -> tuple[KdcRep, EncKdcRepPart]:
    """Open a TGS-REP with the sub-key we offered (usage 9) and check its nonce."""
    rep = decode_tgs_rep(data)
    part, _ = decode_enc_kdc_rep_part(request.subkey.decrypt(KeyUsage.TGS_REP_ENCPART_SUBKEY,
                                                             rep.enc_part.cipher))
    if part.nonce != request.nonce:
        raise MalformedMessage("REPLY_NONCE_MISMATCH")
    return rep, part
