"""The device side of PacketCable key management (seed 000). No I/O.

`ap_request` builds an AP Request for the held controller ticket with a new inbound SPI;
`receive` interprets what the controller sent: an AP Reply that answers the pending request
becomes a ClientSa (its HMAC is checked with the AP-REP sub-key, the SA keys derived as the
controller does), a Wake Up or a verified Rekey asks for a new AP exchange echoing the nonce,
an Error Reply carries the KRB-ERROR. The daemon owns the retransmission timers (RFC 4682).
"""

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from common.broker.keys import channel_secret
from common.crypto import Key
from common.errors import MalformedMessage
from common.kerberos.ap_exchange import ApRequest, build_ap_req, process_ap_rep
from common.messages.krb_error import KrbError, decode_krb_error
from common.messages.ticket import Ticket
from common.messages.types import PrincipalName
from common.pktc import esp, km_framing

DEFAULT_SUITES = (esp.AES_GCM_16, esp.AES_CBC_SHA1, esp.DES3_CBC_SHA1)


@dataclass
class ClientSa:
    inbound: esp.InboundSa  # our SPI
    outbound: esp.OutboundSa  # the controller's SPI
    suite: esp.Suite
    lifetime_s: int
    grace_s: int
    established: float  # monotonic seconds
    hmac_key: bytes
    keys_out: esp.DirectionKeys
    keys_in: esp.DirectionKeys
    channel_secret: bytes = b""  # for a key broker (common/broker/keys.py)

    def rekey_at(self) -> float:
        """When the device starts a new AP exchange: the grace period before the end."""
        return self.established + max(1, self.lifetime_s - self.grace_s)


@dataclass(frozen=True)
class Pending:
    spi: int
    request: ApRequest


@dataclass(frozen=True)
class Event:
    kind: str  # "sa", "wake_up", "rekey", "error", "ignored"
    sa: ClientSa | None = None
    ack: bytes | None = None  # Security Parameter Recovered to send
    server_nonce: int = 0
    error: KrbError | None = None
    detail: str = ""


class KeyManagementClient:
    def __init__(self, *, ticket: Ticket, session_key: Key, cname: PrincipalName, crealm: str,
                 suites: tuple[esp.Suite, ...] = DEFAULT_SUITES,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.ticket = ticket
        self.session_key = session_key
        self.cname = cname
        self.crealm = crealm
        self.suites = suites
        self.random = random
        self.pending: Pending | None = None
        self.sa: ClientSa | None = None

    def ap_request(self, now: datetime, *, server_nonce: int = 0,
                   reestablish: bool = False) -> bytes:
        spi = secrets.randbelow(0xFFFFFF00) + 256
        suites = tuple(s.pktc for s in self.suites)
        binding = km_framing.ap_request_binding(server_nonce, spi, suites, reestablish)
        request = build_ap_req(ticket=self.ticket, session_key=self.session_key,
                               cname=self.cname, crealm=self.crealm, now=now, binding=binding,
                               random=self.random)
        data = km_framing.encode_ap_request(request.data, server_nonce, spi, suites, reestablish,
                                      km_framing.hmac_key(self.session_key))
        self.pending = Pending(spi, request)
        return data

    def receive(self, data: bytes, mono: float) -> Event:
        """Raises MalformedMessage/KerberosError for what must be ignored; the daemon logs."""
        framed = km_framing.decode(data)
        message = framed.message
        if isinstance(message, km_framing.ApReplyMsg):
            return self._ap_reply(framed, message, mono)
        if isinstance(message, km_framing.WakeUp):
            return Event("wake_up", server_nonce=message.server_nonce,
                         detail=message.server_principal)
        if isinstance(message, km_framing.Rekey):
            if self.sa is None:
                raise MalformedMessage("REKEY_WITHOUT_SA")
            km_framing.verify_hmac(framed, self.sa.hmac_key)
            return Event("rekey", server_nonce=message.server_nonce)
        if isinstance(message, km_framing.ErrorReply):
            return Event("error", error=decode_krb_error(message.krb_error))
        return Event("ignored", detail=type(message).__name__)

    def _ap_reply(self, framed: km_framing.Framed, message: km_framing.ApReplyMsg,
                  mono: float) -> Event:
        pending = self.pending
        if pending is None:
            raise MalformedMessage("UNSOLICITED_AP_REPLY")
        part = process_ap_rep(message.ap_rep, pending.request, self.session_key)
        assert part.subkey is not None  # process_ap_rep insists
        subkey = Key(part.subkey.keytype, part.subkey.keyvalue)
        hmac_key = km_framing.hmac_key(subkey)
        km_framing.verify_hmac(framed, hmac_key)
        suite = esp.SUITES.get(message.suite)
        if suite is None or suite not in self.suites:
            raise MalformedMessage("SUITE_NOT_OFFERED", str(message.suite))
        keys_out, keys_in = esp.derive_sa_keys(subkey, suite, pending.spi, message.spi)
        self.sa = ClientSa(esp.InboundSa(pending.spi, suite, keys_in),
                           esp.OutboundSa(message.spi, suite, keys_out, self.random),
                           suite, message.lifetime_s, message.grace_s, mono, hmac_key,
                           keys_out, keys_in, channel_secret(subkey))
        self.pending = None
        ack = km_framing.encode_sec_param_recovered(hmac_key) if message.ack_required else None
        return Event("sa", sa=self.sa, ack=ack)
