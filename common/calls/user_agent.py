"""The device's side of a telekey call (seed 001), telekey profile v1. No I/O.

Set-up goes through the device's controller (common/calls/control.py); once both devices hold
the call key, they speak directly over their own ESP SA and send SRTP media to each other.

- `invite(number, media)` → INVITE with our SDP. The controller answers 100, then 180 and the
  final response; a 200 carries `Call-Key` (K, s): we derive the call's secrets and answer
  with an ACK carrying `Call-Key-Ack` = ack_hash(K, s).
- An INVITE from the controller carries Call-Key (400 without one, 488 for bad SDP): `answer`
  gives 180 and a 200 with our SDP and the Call-Key-Ack; `reject` any 4xx-6xx.
- Retransmission is the endpoints' job (RFC 3261 timers A and G, run by the daemon): the
  caller repeats `call.sent` until a response comes, the callee `call.responses[-1]` until
  the ACK comes; a repeated INVITE is answered with our responses again, a repeated 200
  with our ACK again.
- `hangup` gives a BYE for the peer device (over the call's ESP SA) and a BYE closing our leg
  with the controller; a BYE from the peer is answered 200 and closes our leg the same way.
  A BYE from the controller (key acknowledgement failed) ends the call.

Call secrets: device-to-device ESP `derive_sa_keys(K, suite, s, s + 1)` (the caller receives
on s, the callee on s + 1) and SRTP master keys per direction (common.calls.keys.srtp_keys).
"""

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from common.broker.headers import KeyDelivery, parse_key_delivery
from common.broker.keys import BrokerKeyError
from common.calls import sip
from common.calls.control import decode_call_key
from common.calls.keys import CALL_ENCTYPE, CallKey, SrtpKeys, ack_hash, srtp_keys
from common.calls.sdp import MediaDescription, encode_sdp, parse_sdp
from common.calls.sip import SipError, SipMessage
from common.crypto import Key
from common.pktc import esp


@dataclass
class CallSecrets:
    key: CallKey
    esp_out: esp.OutboundSa  # to the peer device
    esp_in: esp.InboundSa
    srtp_send: SrtpKeys
    srtp_receive: SrtpKeys
    profile: str

    def __repr__(self) -> str:  # never show key bytes
        return f"CallSecrets(spi_in=0x{self.esp_in.spi:08x}, profile={self.profile})"


def call_secrets(key: CallKey, *, caller: bool, profile: str,
                 suite: esp.Suite = esp.AES_GCM_16) -> CallSecrets:
    to_callee, to_caller = esp.derive_sa_keys(key.key, suite, key.spi, key.spi + 1)
    forward, backward = srtp_keys(key.key, profile)
    if caller:
        return CallSecrets(key, esp.OutboundSa(key.spi + 1, suite, to_callee),
                           esp.InboundSa(key.spi, suite, to_caller), forward, backward, profile)
    return CallSecrets(key, esp.OutboundSa(key.spi, suite, to_caller),
                       esp.InboundSa(key.spi + 1, suite, to_callee), backward, forward, profile)


@dataclass
class UaCall:
    call_id: str
    caller: bool
    local_media: MediaDescription
    invite: SipMessage  # ours (caller) or the one received (callee)
    state: str = "calling"  # calling, ringing, answered, confirmed, ended
    remote_media: MediaDescription | None = None
    secrets: CallSecrets | None = None
    answer: SipMessage | None = None
    status: int = 0  # the final status when refused
    why: str = ""
    sent: bytes = b""  # our INVITE (caller), repeated until a response comes (timer A)
    responses: list[bytes] = field(default_factory=list)  # our 180/200 (callee), repeated
    ack: bytes = b""  # our ACK (caller), repeated when the 200 is


@dataclass
class UaEvent:
    kind: str  # trying ringing answered refused incoming confirmed cancelled ended malformed
    call: UaCall | None
    to_controller: list[bytes] = field(default_factory=list)
    to_peer: list[bytes] = field(default_factory=list)  # SIP for the peer device's ESP SA


class UserAgent:
    def __init__(self, *, realm: str, identity: str,
                 broker: Callable[[KeyDelivery, str], bytes] | None = None) -> None:
        self.realm = realm
        self.identity = identity  # our number, or principal (the controller sets From)
        # Chained call keys (common/broker/device.py `call_key`): the session key a
        # Broker-Key delivers for a Call-ID; BrokerKeyError when it is refused.
        self.broker = broker
        self.calls: dict[str, UaCall] = {}
        self.by_spi: dict[int, UaCall] = {}  # our inbound device-to-device SPI

    def _address(self, who: str) -> str:
        return f"sip:{who}@{self.realm}"

    def invite(self, number: str, media: MediaDescription, conference: str | None = None
               ) -> tuple[UaCall, bytes]:
        """An INVITE; with `conference` (the Call-ID of a call of ours under the chained
        policy), the callee joins that call's session key (seed 003 FIG. 2)."""
        call_id = secrets.token_hex(12) + "@" + self.realm.lower()
        message = sip.request("INVITE", self._address(number), [
            ("via", f"SIP/2.0/UDP {media.host};branch=z9hG4bK{secrets.token_hex(8)}"),
            ("max-forwards", "70"),
            ("from", f"<{self._address(self.identity)}>;tag={secrets.token_hex(4)}"),
            ("to", f"<{self._address(number)}>"), ("call-id", call_id), ("cseq", "1 INVITE"),
            ("contact", f"<sip:{self.identity}@{media.host}:{media.esp_port}>"),
            *([("conference", conference)] if conference else []),
            ("content-type", "application/sdp")],
            encode_sdp(media, secrets.randbits(31)))
        call = UaCall(call_id, True, media, message)
        call.sent = sip.encode(message)
        self.calls[call_id] = call
        return call, call.sent

    def cancel(self, call: UaCall) -> bytes:
        invite = call.invite
        return sip.encode(sip.request("CANCEL", invite.uri, [
            *[(n, v) for n, v in invite.headers
              if n in ("via", "max-forwards", "from", "to", "call-id")],
            ("cseq", f"{invite.cseq[0]} CANCEL")]))

    # From the controller -------------------------------------------------------------

    def receive_from_controller(self, data: bytes) -> UaEvent:
        try:
            message = sip.parse(data)
        except SipError as exc:
            refusal = sip.refusal(data, exc)
            return UaEvent("malformed", None, [refusal] if refusal else [])
        if not message.is_request:
            return self._response(message)
        call = self.calls.get(message.call_id)
        method = message.method
        try:
            if method == "INVITE":
                return self._incoming(message)
            if call is None:
                if method == "ACK":
                    return UaEvent("ignored", None)
                raise SipError(481, "Call/Transaction Does Not Exist")
            if method == "ACK":
                if call.state == "answered":
                    call.state = "confirmed"
                    return UaEvent("confirmed", call)
                return UaEvent("ignored", call)
            if method == "CANCEL":
                replies = [sip.encode(sip.response(message, 200))]
                if call.state in ("calling", "ringing"):
                    replies.append(sip.encode(sip.response(call.invite, 487)))
                    self._end(call, "cancelled")
                    return UaEvent("cancelled", call, replies)
                return UaEvent("ignored", call, replies)
            if method == "BYE":
                self._end(call, message.header("reason") or "bye from controller")
                return UaEvent("ended", call, [sip.encode(sip.response(message, 200))])
            raise SipError(405, "Method Not Allowed")
        except SipError as exc:
            if method == "ACK":
                return UaEvent("ignored", call)
            return UaEvent("malformed", call,
                           [sip.encode(sip.response(message, exc.status, exc.reason))])

    def _incoming(self, message: SipMessage) -> UaEvent:
        known = self.calls.get(message.call_id)
        if known is not None and not known.caller and message.cseq == known.invite.cseq:
            return UaEvent("ignored", known, list(known.responses))  # a retransmission
        if known is not None:
            raise SipError(488, "Re-INVITE Not Supported")
        key = self._call_key(message)
        remote = parse_sdp(message.body)
        placeholder = MediaDescription("0.0.0.0", 1, 1, remote.srtp_profile)
        call = UaCall(message.call_id, False, placeholder, message, remote_media=remote)
        call.secrets = call_secrets(key, caller=False, profile=remote.srtp_profile)
        self.calls[call.call_id] = call
        self.by_spi[call.secrets.esp_in.spi] = call
        return UaEvent("incoming", call)

    def _call_key(self, message: SipMessage) -> CallKey:
        """The call key a Call-Key (per-call policy) or Broker-Key (chained) carries."""
        value = message.header("call-key")
        if value is not None:
            return decode_call_key(value)
        delivery_value = message.header("broker-key")
        if delivery_value is None:
            raise SipError(400, "Missing Call-Key")
        delivery = parse_key_delivery(delivery_value)
        if delivery.session is not None:  # a conference we host: that call's key
            held = self.calls.get(delivery.session)
            if held is None or held.secrets is None:
                raise SipError(400, "No Such Conference")
            return CallKey(held.secrets.key.key, delivery.spi)
        if self.broker is None:
            raise SipError(488, "Chained Call Keys Not Supported")
        try:
            return CallKey(Key(CALL_ENCTYPE, self.broker(delivery, message.call_id)),
                           delivery.spi)
        except BrokerKeyError as exc:
            raise SipError(403, "Broker Key Refused") from exc

    def answer(self, call: UaCall, media: MediaDescription) -> list[bytes]:
        """180 Ringing and 200 OK (our SDP, Call-Key-Ack) for an incoming call."""
        assert call.secrets is not None and not call.caller
        call.local_media = media
        tag = secrets.token_hex(4)
        to = f"{call.invite.header('to')};tag={tag}"
        contact = ("contact", f"<sip:{self.identity}@{media.host}:{media.esp_port}>")
        ringing = sip.response(call.invite, 180, headers=[contact])
        ringing = _replace(ringing, "to", to)
        ok = sip.response(call.invite, 200, headers=[
            contact, ("call-key-ack", ack_hash(call.secrets.key.key,
                                               call.secrets.key.spi).hex()),
            ("content-type", "application/sdp")],
            body=encode_sdp(media, secrets.randbits(31)))
        ok = _replace(ok, "to", to)
        call.answer = ok
        call.state = "answered"
        call.responses = [sip.encode(ringing), sip.encode(ok)]
        return list(call.responses)

    def reject(self, call: UaCall, status: int = 486) -> bytes:
        self._end(call, f"rejected {status}")
        return sip.encode(sip.response(call.invite, status))

    def _response(self, message: SipMessage) -> UaEvent:
        call = self.calls.get(message.call_id)
        if call is None or not call.caller or message.cseq[1] != "INVITE":
            return UaEvent("ignored", call)
        status = message.status
        if status < 200:
            if status == 180:
                call.state = "ringing"
            return UaEvent("trying" if status == 100 else "ringing", call)
        if status >= 300:
            call.status = status
            self._end(call, f"{status} {message.start[2]}")
            return UaEvent("refused", call)
        if call.state not in ("calling", "ringing"):
            # A repeated 200: our ACK was lost, so send it again.
            return UaEvent("ignored", call, [call.ack] if call.ack else [])
        try:
            key = self._call_key(message)
            remote = parse_sdp(message.body)
        except SipError as exc:
            call.status = exc.status
            self._end(call, exc.reason)
            return UaEvent("refused", call)
        call.remote_media = remote
        call.secrets = call_secrets(key, caller=True, profile=call.local_media.srtp_profile)
        self.by_spi[call.secrets.esp_in.spi] = call
        call.answer = message
        call.state = "confirmed"
        ack = sip.request("ACK", call.invite.uri, [
            *[(n, v) for n, v in call.invite.headers if n in ("via", "max-forwards", "from")],
            ("to", message.header("to") or ""), ("call-id", call.call_id),
            ("cseq", f"{call.invite.cseq[0]} ACK"),
            ("call-key-ack", ack_hash(key.key, key.spi).hex())])
        call.ack = sip.encode(ack)
        return UaEvent("answered", call, [call.ack])

    # Hanging up ----------------------------------------------------------------------

    def _bye(self, call: UaCall, cseq: int) -> bytes:
        answer = call.answer
        ours, theirs = (call.invite.header("from"), answer.header("to") if answer else None)
        if not call.caller:
            ours, theirs = (answer.header("to") if answer else None), call.invite.header("from")
        return sip.encode(sip.request("BYE", call.invite.uri, [
            ("via", f"SIP/2.0/UDP {call.local_media.host};branch=z9hG4bK{secrets.token_hex(8)}"),
            ("max-forwards", "70"), ("from", ours or ""), ("to", theirs or ""),
            ("call-id", call.call_id), ("cseq", f"{cseq} BYE")]))

    def hangup(self, call: UaCall) -> UaEvent:
        """BYE to the peer device (send over the call's ESP SA) and the BYE that closes our
        leg with the controller."""
        self._end(call, "hung up")
        return UaEvent("ended", call, [self._bye(call, 3)], [self._bye(call, 2)])

    def receive_from_peer(self, call: UaCall, data: bytes) -> UaEvent:
        """SIP that arrived over the call's own ESP SA (already authenticated by it)."""
        try:
            message = sip.parse(data)
        except SipError as exc:
            refusal = sip.refusal(data, exc)
            return UaEvent("malformed", call, [], [refusal] if refusal else [])
        if message.call_id != call.call_id:
            return UaEvent("ignored", call)
        if message.is_request and message.method == "BYE":
            reply = sip.encode(sip.response(message, 200))
            if call.state == "ended":
                return UaEvent("ignored", call, [], [reply])
            self._end(call, "bye from peer")
            return UaEvent("ended", call, [self._bye(call, 3)], [reply])
        if message.is_request and message.method != "ACK":
            return UaEvent("malformed", call, [],
                           [sip.encode(sip.response(message, 405))])
        return UaEvent("ignored", call)

    def _end(self, call: UaCall, why: str) -> None:
        call.state = "ended"
        call.why = why
        self.calls.pop(call.call_id, None)
        if call.secrets is not None:
            self.by_spi.pop(call.secrets.esp_in.spi, None)


def _replace(message: SipMessage, name: str, value: str) -> SipMessage:
    return SipMessage(message.start, tuple((n, value if n == name else v)
                                           for n, v in message.headers),
                      message.body, message.is_request)

