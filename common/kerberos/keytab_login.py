"""The client side of an AS exchange with encrypted-timestamp pre-authentication (RFC 4120
§3.1, §5.2.7.2), for services that hold a keytab: a signaling controller getting a ticket for
a peer controller (the controller-to-controller link) or a network server getting
its controller ticket — what MIT `kinit -k -t KEYTAB` does. No I/O.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from common.codes import KdcOptions, KeyUsage, MessageType, NameType, PaDataType
from common.crypto import Key
from common.errors import MalformedMessage
from common.messages.kdc_rep import EncKdcRepPart, KdcRep, decode_as_rep, decode_enc_kdc_rep_part
from common.messages.kdc_req import KdcReq, KdcReqBody, encode_as_req
from common.messages.padata import PaEncTsEnc, encode_pa_enc_timestamp, encode_pa_enc_ts_enc
from common.messages.types import EncryptedData, PaData, PrincipalName


@dataclass(frozen=True, slots=True)
class KeytabAsRequest:
    data: bytes
    nonce: int
    key: Key


def build_keytab_as_req(*, client: str, service: str, realm: str, key: Key, now: datetime,
                        lifetime: timedelta = timedelta(hours=10),
                        random: Callable[[int], bytes] = os.urandom) -> KeytabAsRequest:
    """An AS-REQ for `service` (e.g. sigctl/sc2.lab.test) with PA-ENC-TIMESTAMP made with the
    client's long-term `key` (key usage 1)."""
    nonce = int.from_bytes(random(4), "big") & 0x7FFFFFFF
    stamp = encode_pa_enc_ts_enc(PaEncTsEnc(now.replace(microsecond=0), now.microsecond))
    pa = EncryptedData(key.enctype, None,
                       key.encrypt(KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, stamp))
    body = KdcReqBody(KdcOptions.FORWARDABLE,
                      PrincipalName(NameType.NT_PRINCIPAL, tuple(client.split("/"))), realm,
                      PrincipalName(NameType.NT_SRV_INST, tuple(service.split("/"))), None,
                      (now + lifetime).replace(microsecond=0), None, nonce, (key.enctype,),
                      None, None, None)
    data = encode_as_req(KdcReq(5, int(MessageType.KRB_AS_REQ),
                                (PaData(PaDataType.PA_ENC_TIMESTAMP,
                                        encode_pa_enc_timestamp(pa)),), body))
    return KeytabAsRequest(data, nonce, key)


def process_keytab_as_rep(data: bytes, request: KeytabAsRequest) -> tuple[KdcRep, EncKdcRepPart]:
    """Open the AS-REP with the long-term key (usage 3) and check its nonce."""
    rep = decode_as_rep(data)
    if rep.enc_part.etype != request.key.enctype:
        raise MalformedMessage("REPLY_ENCTYPE_MISMATCH", str(rep.enc_part.etype))
    part, _ = decode_enc_kdc_rep_part(request.key.decrypt(KeyUsage.AS_REP_ENCPART,
                                                          rep.enc_part.cipher))
    if part.nonce != request.nonce:
        raise MalformedMessage("REPLY_NONCE_MISMATCH")
    return rep, part
