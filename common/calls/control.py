"""The signaling controller's call control (seed 001, FIG. 4), telekey profile v1. No I/O.

The controller is a stateful proxy for call set-up. It receives SIP from its devices (through
their ESP SAs) and from peer controllers (through the controller-to-controller link), each
message tagged with the `Leg` it came on, and says what to send on which leg.

- **INVITE from a device.** Admission (common/calls/admission.py: the unprovisioned restriction
  → 403, unknown number → 404); 100 Trying back; then, as the *caller's controller*, a new
  call key K and SPI s (common/calls/keys.py), the media keys sealed to the escrow authority,
  and the INVITE forwarded — with our Via on top, `From` set to the caller's line, and
  `Call-Key: <base64 K>;spi=<s>` — to the callee's device (homed here) or to the peer
  controller the number routes to.
- **INVITE from a peer controller.** It must carry Call-Key (400 otherwise); the number must be
  a line homed here (404) whose device holds an SA (480); forwarded to that device.
- **Responses** travel back the way the request came, our Via removed. The callee's 200 must
  carry `Call-Key-Ack: <hex ack_hash(K, s)>`, checked by the callee's controller and again by
  the caller's; a wrong or missing one ends the call: BYE to the callee, 500 "Call Key Not
  Acknowledged" to the caller. The caller's controller hands K and s to the caller in the
  200 (`Call-Key`), and the caller's ACK must carry its own Call-Key-Ack; a wrong one ends
  the call with a BYE to both sides. Only then is the ACK forwarded to the callee.
- **Retransmissions.** No timer runs here: the caller repeats its INVITE until a response
  comes (timer A) and the callee its 200 until the ACK comes (timer G). A repeated INVITE is
  answered 100 again and passed on (or, once answered, our 200 is repeated); a repeated 200
  and a repeated ACK are passed on. So a datagram lost on any hop costs a retry, not the call.
- **CANCEL** before the final response: 200 to the CANCEL, the CANCEL forwarded; the callee's
  487 comes back as the INVITE's final response.
- **BYE** travels end to end between the devices over their own ESP SA; each device then
  closes its leg with a BYE to its controller (200), which ends the call there and starts the
  escrow record's retention. A BYE from a peer controller (it ended the call) is passed on to
  our device.

Under the chained policy (`chained`, seed 003; docs/protocol.md §13) no key is made: the
callee's controller takes one of the callee's broker keys (the INVITE to the callee names it in
`Broker-Key`), the caller receives it in the 200 wrapped under one of its own, a peer broker
sends it link-wrapped in its 200, and a conference's third party (INVITE with `Conference:
<Call-ID>`) receives the host's session key wrapped under one of its own. The daemon replaces
every key a call took when the call ends (`Outcome.ended`).

Malformed SIP is answered with its 400-class response (common/calls/sip.py) or dropped when it
cannot be addressed; a message for a call we do not know is 481 (requests) or dropped
(responses). One call's failure never touches another call.
"""

import base64
import binascii
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from common.broker import keys as broker_keys
from common.broker.broker import Broker, BrokerUnavailable
from common.broker.headers import KeyDelivery, parse_key_delivery
from common.broker.keys import BrokerKey, BrokerKeyError
from common.calls import sip
from common.calls.admission import admit_invite, called_number
from common.calls.keys import (
    CALL_ENCTYPE,
    SRTP_PROFILES,
    CallKey,
    ack_hash,
    new_call_key,
    new_spi,
    srtp_keys,
)
from common.calls.sip import SipError, SipMessage
from common.crypto import Key
from common.messages.restriction import DeviceRestriction

Leg = tuple[str, str]  # ("device", client principal) or ("peer", controller principal)
MAX_ENDED = 10_000


class ChainedKeys(Protocol):
    """What the chained call-key policy needs from the daemon: the broker (its pools in the
    controller's database) and the channel secret of the SA a leg's messages travel on —
    `sending`: the one we send on (a device's SA, our link to a peer), else the one the
    leg's messages reach us on (a peer's link to us)."""
    broker: Broker

    def secret(self, leg: Leg, *, sending: bool) -> bytes | None: ...


@dataclass(frozen=True)
class Send:
    leg: Leg
    data: bytes


@dataclass(frozen=True)
class EscrowRecord:
    """What the caller's controller seals for lawful intercept; `sealed` opens only with the
    escrow authority's private key (common/calls/escrow.py)."""
    call_id: str
    sealed: bytes


@dataclass
class Outcome:
    sends: list[Send] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)  # log lines, no secrets
    escrow: EscrowRecord | None = None
    ended: str | None = None  # Call-ID whose call ended here

    def send(self, leg: Leg, message: SipMessage) -> None:
        self.sends.append(Send(leg, sip.encode(message)))


@dataclass
class Call:
    call_id: str
    caller: Leg  # where the INVITE came from
    callee: Leg  # where we forwarded it
    key: CallKey | None  # None until a peer broker's 200 brings it (chained policy)
    origin: bool  # we made the key (caller's controller)
    terminating: bool  # the callee is one of our devices
    received: SipMessage  # the INVITE as it came from the caller's side
    invite: SipMessage  # as forwarded (our Via on top)
    branch: str
    state: str = "calling"  # calling → answered → confirmed; ended
    answer: SipMessage | None = None
    upstream_answer: SipMessage | None = None  # the 200 as we passed it on (repeated as is)
    started: float = 0.0  # monotonic seconds, for expire()
    # The chained policy: the session key (one of the callee's broker keys), the key of the
    # caller's that wraps it for the caller, and the caller's Broker-Key once it is made.
    broker_key: BrokerKey | None = None
    wrapping: BrokerKey | None = None
    delivery: str | None = None
    spi: int = 0


@dataclass(frozen=True)
class _Keyed:
    """A new call's keys as `CallControl._call_keys` chose them."""
    key: CallKey | None
    spi: int
    header: tuple[str, str]  # what carries the key to the callee's side
    broker_key: BrokerKey | None = None
    wrapping: BrokerKey | None = None
    delivery: str | None = None


def encode_call_key(key: CallKey) -> str:
    return f"{base64.b64encode(key.key.data).decode()};spi={key.spi}"


def decode_call_key(value: str) -> CallKey:
    """Call-Key header value → CallKey; SipError 400 if it is not one."""
    material, _, rest = value.partition(";")
    try:
        data = base64.b64decode(material.strip(), validate=True)
        spi = int(rest.strip().removeprefix("spi="))
    except (binascii.Error, ValueError) as exc:
        raise SipError(400, "Bad Call-Key") from exc
    if len(data) != 32 or not rest.strip().startswith("spi=") or not 256 <= spi < 2**32 - 1:
        raise SipError(400, "Bad Call-Key")
    return CallKey(Key(CALL_ENCTYPE, data), spi)


def ack_matches(message: SipMessage, key: CallKey | None) -> bool:
    if key is None:
        return False
    value = message.header("call-key-ack") or ""
    return hmac.compare_digest(value.strip().lower(), ack_hash(key.key, key.spi).hex())


def escrow_plaintext(call_id: str, key: CallKey, profile: str) -> bytes:
    """The media keys of a call, as sealed for the escrow authority (JSON)."""
    forward, backward = srtp_keys(key.key, profile)
    return json.dumps({"call_id": call_id, "srtp_profile": profile,
                       "caller_to_callee": {"key": forward.master_key.hex(),
                                            "salt": forward.master_salt.hex()},
                       "callee_to_caller": {"key": backward.master_key.hex(),
                                            "salt": backward.master_salt.hex()}}).encode()


def _with_headers(message: SipMessage, drop: tuple[str, ...],
                  add: list[tuple[str, str]], front: list[tuple[str, str]] | None = None
                  ) -> SipMessage:
    headers = [(n, v) for n, v in message.headers if n not in drop]
    return SipMessage(message.start, tuple((front or []) + headers + add), message.body,
                      message.is_request)


def _without_top_via(message: SipMessage) -> SipMessage:
    headers = list(message.headers)
    first = next(i for i, (name, _) in enumerate(headers) if name == "via")
    del headers[first]
    return SipMessage(message.start, tuple(headers), message.body, message.is_request)


class CallControl:
    def __init__(self, *, principal: str, realm: str, lines: dict[str, str],
                 routes: dict[str, str], online: Callable[[str], bool],
                 seal: Callable[[bytes, str], bytes] | None = None,
                 srtp_profile: str = "AES_CM_128_HMAC_SHA1_80",
                 new_key: Callable[[], CallKey] = new_call_key,
                 chained: ChainedKeys | None = None) -> None:
        self.principal = principal  # ours, e.g. sigctl/sc1.lab.test
        self.realm = realm
        self.lines = lines  # number → device principal homed here
        self.numbers = {p: n for n, p in lines.items()}
        self.routes = routes  # number prefix → peer controller principal
        self.online = online  # does this device principal hold an SA now?
        self.seal = seal  # escrow sealing; None: no lawful-intercept escrow configured
        if srtp_profile not in SRTP_PROFILES:
            raise ValueError(f"unknown SRTP profile {srtp_profile}")
        self.srtp_profile = srtp_profile
        self.new_key = new_key
        self.chained = chained  # None: the per-call policy (a random key per call)
        self.calls: dict[str, Call] = {}
        self.ended: dict[str, None] = {}  # recently ended Call-IDs (BYE of the other leg)
        self._now = 0.0

    def route(self, number: str) -> Leg | None:
        if number in self.lines:
            return ("device", self.lines[number])
        prefix = max((p for p in self.routes if number.startswith(p)), key=len, default=None)
        return ("peer", self.routes[prefix]) if prefix is not None else None

    # Entry point ---------------------------------------------------------------------

    def receive(self, source: Leg, data: bytes,
                restriction: DeviceRestriction | None = None, mono: float = 0.0) -> Outcome:
        """One SIP message that arrived on `source` (with the device's restriction when the
        source is a device) at monotonic time `mono`."""
        out = Outcome()
        self._now = mono
        try:
            message = sip.parse(data)
        except SipError as exc:
            refusal = sip.refusal(data, exc)
            if refusal is not None:
                out.sends.append(Send(source, refusal))
            out.events.append({"event": "sip_malformed", "leg": source[1],
                               "status": exc.status, "reason": exc.reason})
            return out
        try:
            if message.is_request:
                self._request(source, message, restriction, out)
            else:
                self._response(source, message, out)
        except SipError as exc:
            if message.is_request and message.method != "ACK":
                out.send(source, sip.response(message, exc.status, exc.reason))
            out.events.append({"event": "sip_refused", "leg": source[1],
                               "call_id": message.call_id, "status": exc.status,
                               "reason": exc.reason})
        return out

    # Requests ------------------------------------------------------------------------

    def _request(self, source: Leg, message: SipMessage,
                 restriction: DeviceRestriction | None, out: Outcome) -> None:
        method = message.method
        call = self.calls.get(message.call_id)
        if method == "INVITE":
            if call is not None and call.caller == source and \
                    message.cseq == call.received.cseq:
                self._invite_again(call, out)
                return
            if call is not None:
                raise SipError(488, "Re-INVITE Not Supported")
            self._invite(source, message, restriction, out)
        elif method == "ACK":
            if call is None or call.caller != source:
                return  # an ACK is never answered
            self._ack(call, message, out)
        elif method == "CANCEL":
            if call is None or call.caller != source:
                raise SipError(481, "Call/Transaction Does Not Exist")
            out.send(source, sip.response(message, 200))
            if call.state == "calling":
                cancel = sip.request("CANCEL", call.invite.uri, [
                    *[(n, v) for n, v in call.invite.headers
                      if n in ("via", "from", "to", "call-id", "max-forwards")],
                    ("cseq", f"{call.invite.cseq[0]} CANCEL")])
                out.send(call.callee, cancel)
                out.events.append({"event": "call_cancelled", "call_id": call.call_id})
        elif method == "BYE":
            if call is None and message.call_id not in self.ended:
                raise SipError(481, "Call/Transaction Does Not Exist")
            if call is not None and source not in (call.caller, call.callee):
                raise SipError(481, "Call/Transaction Does Not Exist")
            out.send(source, sip.response(message, 200))
            if call is not None:
                if source[0] == "peer":
                    # The peer ended the call (a failed key acknowledgement): tell our
                    # device; a device's BYE only closes its own leg.
                    other = call.callee if source == call.caller else call.caller
                    out.send(other, _with_headers(message, ("via",), [], front=[
                        ("via", f"SIP/2.0/UDP {self.principal};branch={call.branch}")]))
                self._end(call, out, "bye")
        else:
            raise SipError(405, "Method Not Allowed")

    def _invite(self, source: Leg, message: SipMessage,
                restriction: DeviceRestriction | None, out: Outcome) -> None:
        forwards = message.header("max-forwards") or ""
        if not forwards.isdigit():
            raise SipError(400, "Bad Max-Forwards")
        if int(forwards) == 0:
            raise SipError(483, "Too Many Hops")
        from_peer = source[0] == "peer"
        admission = admit_invite(message, realm=self.realm,
                                 restriction=None if from_peer else restriction,
                                 reachable=set(self._reachable(message, from_peer)))
        if admission.status:
            out.events.append({"event": "call_refused", "leg": source[1],
                               "call_id": message.call_id, "status": admission.status,
                               "number": admission.number,
                               "restricted": restriction is not None})
            raise SipError(admission.status, admission.reason)
        number = admission.number
        assert number is not None  # admitted
        destination = self.route(number)
        assert destination is not None  # reachable
        if destination[0] == "device" and not self.online(destination[1]):
            raise SipError(480, "Temporarily Unavailable")
        origin = not from_peer
        try:
            keyed = self._call_keys(source, destination, message, origin)
        except BrokerUnavailable as exc:
            out.events.append({"event": "broker_unavailable", "call_id": message.call_id,
                               "error": str(exc)[:200]})
            raise SipError(503, "Key Broker Unavailable") from exc
        except SipError:
            out.ended = message.call_id  # the daemon replaces any broker key taken
            raise
        key, header = keyed.key, keyed.header
        out.send(source, sip.response(message, 100))
        branch = "z9hG4bK" + secrets.token_hex(8)
        add = [header]
        drop: tuple[str, ...] = ("max-forwards", "call-key", "broker-key", "conference")
        if origin:
            drop += ("from",)
            caller_number = self.numbers.get(source[1], source[1].replace("/", "-"))
            tag = (message.header("from") or "").partition(";tag=")[2]
            add.insert(0, ("from", f"<sip:{caller_number}@{self.realm}>;tag={tag}"))
        forwarded = _with_headers(message, drop, [("max-forwards", str(int(forwards) - 1)),
                                                  *add],
                                  front=[("via", f"SIP/2.0/UDP {self.principal};branch={branch}")])
        call = Call(message.call_id, source, destination, key, origin,
                    destination[0] == "device", message, forwarded, branch,
                    started=self._now, broker_key=keyed.broker_key, wrapping=keyed.wrapping,
                    delivery=keyed.delivery, spi=keyed.spi)
        self.calls[call.call_id] = call
        if origin and key is not None:
            self._escrow(call, key, out)
        out.send(destination, forwarded)
        out.events.append({"event": "call_invite", "call_id": call.call_id,
                           "caller": source[1], "callee": destination[1], "number": number,
                           "origin": origin, "spi": f"0x{keyed.spi:08x}",
                           **({"broker_key": f"{keyed.broker_key.owner} "
                                             f"{keyed.broker_key.key_id}"}
                              if keyed.broker_key else {})})

    def _escrow(self, call: Call, key: CallKey, out: Outcome) -> None:
        if self.seal is not None:
            out.escrow = EscrowRecord(call.call_id, self.seal(
                escrow_plaintext(call.call_id, key, self.srtp_profile), call.call_id))

    def _call_keys(self, source: Leg, destination: Leg, message: SipMessage,
                   origin: bool) -> "_Keyed":
        """The call's key and the header that carries it to the callee's side: a random key
        (the per-call policy, or a peer's INVITE with Call-Key), or broker keys (chained)."""
        if not origin and message.header("call-key") is not None:
            key = decode_call_key(message.header("call-key") or "")
            return _Keyed(key, key.spi, ("call-key", encode_call_key(key)))
        if self.chained is None:
            if not origin:
                raise SipError(400 if message.header("broker-key") is None else 488,
                               "Missing Call-Key" if message.header("broker-key") is None
                               else "Chained Call Keys Not Supported")
            key = self.new_key()
            return _Keyed(key, key.spi, ("call-key", encode_call_key(key)))
        broker = self.chained.broker
        call_id = message.call_id
        spi = new_spi()
        if not origin:  # a peer broker's chained INVITE: the session key is our device's
            spi = parse_key_delivery(message.header("broker-key") or "").spi
        conference = message.header("conference") if origin else None
        if conference is not None:
            return self._conference_keys(source, destination, conference, spi, call_id)
        wrapping = None
        if origin:
            wrapping = broker.take(source[1], call_id)
            if wrapping is None:
                raise SipError(503, "No Broker Key")
        if destination[0] == "peer":  # the callee's broker chooses; its 200 brings the key
            return _Keyed(None, spi, ("broker-key", KeyDelivery(spi).encode()),
                          wrapping=wrapping)
        session_key = broker.take(destination[1], call_id)
        if session_key is None:
            raise SipError(503, "No Broker Key")
        key = CallKey(Key(CALL_ENCTYPE, session_key.key), spi)
        delivery = None
        if wrapping is not None:
            secret = self.chained.secret(source, sending=True)
            if secret is None:
                raise SipError(503, "No Broker Key")
            delivery = Broker.deliver(source[1], wrapping, session_key, secret, spi,
                                      call_id).encode()
        return _Keyed(key, spi, ("broker-key", KeyDelivery(
            spi, session_key.owner, session_key.key_id).encode()),
            broker_key=session_key, wrapping=wrapping, delivery=delivery)

    def _conference_keys(self, source: Leg, destination: Leg, conference: str, spi: int,
                         call_id: str) -> "_Keyed":
        """seed 003 FIG. 2: a third party joins the host's call; it receives that call's
        session key wrapped under one of its own keys."""
        assert self.chained is not None
        existing = self.calls.get(conference.strip())
        if existing is None or source not in (existing.caller, existing.callee) \
                or existing.broker_key is None:
            raise SipError(481, "No Such Conference")
        if destination[0] != "device":
            raise SipError(488, "Conference Across Networks Not Supported")
        wrapping = self.chained.broker.take(destination[1], call_id)
        secret = self.chained.secret(destination, sending=True)
        if wrapping is None or secret is None:
            raise SipError(503, "No Broker Key")
        session_key = existing.broker_key
        key = CallKey(Key(CALL_ENCTYPE, session_key.key), spi)
        to_third = Broker.deliver(destination[1], wrapping, session_key, secret, spi, call_id)
        return _Keyed(key, spi, ("broker-key", to_third.encode()), broker_key=session_key,
                      delivery=KeyDelivery(spi, session_key.owner, session_key.key_id,
                                           session=existing.call_id).encode())

    def _reachable(self, message: SipMessage, from_peer: bool) -> list[str]:
        number = called_number(message, self.realm)
        if number is None:
            return []
        leg = self.route(number)
        if leg is None or (from_peer and leg[0] != "device"):
            return []  # a peer's INVITE must end here: no transit
        return [number]

    def _invite_again(self, call: Call, out: Outcome) -> None:
        """A retransmitted INVITE (RFC 3261 §17.1.1.2; the caller's timer A drives recovery
        end to end): answer 100 again and pass it on, or repeat the 200 we already sent."""
        out.send(call.caller, sip.response(call.received, 100))
        if call.upstream_answer is not None:
            out.send(call.caller, call.upstream_answer)
        elif call.state == "calling":
            out.send(call.callee, call.invite)
        out.events.append({"event": "invite_retransmission", "call_id": call.call_id})

    def _ack(self, call: Call, message: SipMessage, out: Outcome) -> None:
        if call.state not in ("answered", "confirmed"):
            return
        if call.origin and not ack_matches(message, call.key):
            out.events.append({"event": "call_key_ack_mismatch", "call_id": call.call_id,
                               "leg": call.caller[1]})
            self._bye(call, call.caller, out)
            self._bye(call, call.callee, out)
            self._end(call, out, "caller_ack_mismatch")
            return
        first = call.state == "answered"
        call.state = "confirmed"
        ack = _with_headers(message, ("via", "max-forwards"), [("max-forwards", "69")],
                            front=[("via", f"SIP/2.0/UDP {self.principal};branch={call.branch}")])
        out.send(call.callee, ack)  # again too: the callee repeats its 200 until it has one
        if first:
            out.events.append({"event": "call_confirmed", "call_id": call.call_id})

    def _bye(self, call: Call, leg: Leg, out: Outcome) -> None:
        bye = sip.request("BYE", call.invite.uri, [
            ("via", f"SIP/2.0/UDP {self.principal};branch=z9hG4bK{secrets.token_hex(8)}"),
            ("max-forwards", "70"), ("from", call.invite.header("from") or ""),
            ("to", (call.answer.header("to") if call.answer else None)
             or call.invite.header("to") or ""),
            ("call-id", call.call_id), ("cseq", f"{call.invite.cseq[0] + 1} BYE"),
            ("reason", 'SIP;cause=500;text="Call Key Not Acknowledged"')])
        out.send(leg, bye)

    # Responses -----------------------------------------------------------------------

    def _response(self, source: Leg, message: SipMessage, out: Outcome) -> None:
        call = self.calls.get(message.call_id)
        if call is None or source != call.callee:
            return
        top = message.header("via") or ""
        if call.branch not in top:
            return
        if message.cseq[1] != "INVITE":
            return  # 200 to our CANCEL or BYE: nothing to pass on
        status = message.status
        if status == 100:
            return
        if call.state != "calling":
            if 200 <= status < 300 and call.upstream_answer is not None and \
                    ack_matches(message, call.key):
                # The callee repeats its 200 until the ACK arrives: pass the repeat on.
                out.send(call.caller, call.upstream_answer)
            return
        upstream = _without_top_via(message)
        if 200 <= status < 300:
            if call.key is None:  # chained: the callee's broker is a peer, its 200 has the key
                self._key_from_peer(call, message, out)
            if not ack_matches(message, call.key):
                out.events.append({"event": "call_key_ack_mismatch",
                                   "call_id": call.call_id, "leg": source[1]})
                call.answer = message
                self._bye(call, call.callee, out)
                out.send(call.caller, sip.response(call.received, 500,
                                                   "Call Key Not Acknowledged"))
                self._end(call, out, "callee_ack_mismatch")
                return
            call.state = "answered"
            call.answer = message
            assert call.key is not None  # ack_matches
            if call.origin:
                header = ("broker-key", call.delivery) if call.delivery is not None \
                    else ("call-key", encode_call_key(call.key))
                upstream = _with_headers(upstream, ("call-key", "call-key-ack", "broker-key"),
                                         [header])
            elif call.broker_key is not None and call.caller[0] == "peer":
                upstream = _with_headers(upstream, ("broker-key",), [
                    ("broker-key", self._link_delivery(call, call.broker_key))])
            call.upstream_answer = upstream
            out.send(call.caller, upstream)
            out.events.append({"event": "call_answered", "call_id": call.call_id})
        else:
            out.send(call.caller, upstream)
            if status >= 300:
                out.events.append({"event": "call_failed", "call_id": call.call_id,
                                   "status": status})
                self._end(call, out, f"status_{status}")

    def _link_delivery(self, call: Call, key: BrokerKey) -> str:
        """seed 003 FIG. 3: our device's key for the caller's broker, wrapped under the
        secret of our link to it."""
        assert self.chained is not None and call.key is not None
        secret = self.chained.secret(call.caller, sending=True)
        if secret is None:
            raise SipError(503, "No Link To The Caller's Broker")
        return KeyDelivery(call.key.spi, key.owner, key.key_id, link_wrapped=broker_keys.wrap(
            secret, secret, key, holder=call.caller[1], session=call.call_id)).encode()

    def _key_from_peer(self, call: Call, message: SipMessage, out: Outcome) -> None:
        """The session key from the callee's broker (link-wrapped), re-wrapped for our
        caller; on any failure the key stays unknown and the call fails as unacknowledged."""
        assert self.chained is not None and call.wrapping is not None
        try:
            delivery = parse_key_delivery(message.header("broker-key") or "")
            secret = self.chained.secret(call.callee, sending=False)
            caller_secret = self.chained.secret(call.caller, sending=True)
            if delivery.link_wrapped is None or delivery.key_id is None \
                    or delivery.owner is None or delivery.spi != call.spi \
                    or secret is None or caller_secret is None:
                raise BrokerKeyError("NO_LINK_WRAPPED_KEY")
            key = broker_keys.unwrap(secret, secret, delivery.link_wrapped,
                                     holder=self.principal, owner=delivery.owner,
                                     key_id=delivery.key_id, session=call.call_id)
        except (SipError, BrokerKeyError) as exc:
            out.events.append({"event": "broker_key_refused", "call_id": call.call_id,
                               "leg": call.callee[1], "reason": str(exc)[:120]})
            return
        call.broker_key = key
        call.key = CallKey(Key(CALL_ENCTYPE, key.key), call.spi)
        call.delivery = Broker.deliver(call.caller[1], call.wrapping, key, caller_secret,
                                       call.spi, call.call_id).encode()
        self._escrow(call, call.key, out)

    def expire(self, mono: float, max_call_s: float) -> list[Outcome]:
        """End calls older than `max_call_s` (a device that vanished never sends its BYE)."""
        outcomes = []
        for call in [c for c in self.calls.values() if mono - c.started > max_call_s]:
            out = Outcome()
            self._end(call, out, "max_call_duration")
            outcomes.append(out)
        return outcomes

    def _end(self, call: Call, out: Outcome, why: str) -> None:
        self.calls.pop(call.call_id, None)
        self.ended[call.call_id] = None
        if len(self.ended) > MAX_ENDED:
            del self.ended[next(iter(self.ended))]
        out.ended = call.call_id
        out.events.append({"event": "call_ended", "call_id": call.call_id, "why": why})
