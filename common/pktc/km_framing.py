"""PacketCable Kerberized key management framing (PKT-SP-SEC, as Wireshark's `pktc` dissector
reads it; ../shared/references.md §1.1). No I/O.

Every message: KMMID(1) | DOI(1) | version(1, major<<4 | minor), then the body. Integers are
big-endian. DOI is always IPsec (1) here; version 1.0.

- 1 Wake Up: server nonce(4), server principal (NUL-terminated).
- 2 AP Request: KRB_AP_REQ (DER), server nonce(4), SPI(4), ciphersuites, re-establish(1),
  HMAC(20).
- 3 AP Reply: KRB_AP_REP (DER), SPI(4), selected suite (a list of one), SA lifetime(4),
  grace period(4), re-establish(1), ACK-required(1), HMAC(20).
- 4 Security Parameter Recovered: HMAC(20).
- 5 Rekey: server nonce(4), server principal (NUL-terminated), timestamp YYMMDDhhmmssZ(13),
  SPI(4), ciphersuites, SA lifetime(4), grace period(4), re-establish(1), HMAC(20).
- 6 Error Reply: KRB_ERROR (DER).

A ciphersuite list is count(1) then (authentication algorithm(1), encryption transform(1))
pairs. Each SPI is the sender's inbound SPI. The HMAC (telekey profile v1, docs/protocol.md
§7) is HMAC-SHA-1 over every preceding byte of the message, header included; its key comes
from `hmac_key` of the message's Kerberos key (AP Request: the ticket session key; AP Reply,
Security Parameter Recovered and Rekey: the AP-REP sub-key of the SA in question).
"""

import hmac
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from common.crypto import Key
from common.crypto.hmac_states import hmac_digest
from common.errors import IntegrityError, MalformedMessage
from common.messages.der import read_header

WAKE_UP, AP_REQUEST, AP_REPLY, SEC_PARAM_RECOVERED, REKEY, ERROR_REPLY = 1, 2, 3, 4, 5, 6
DOI_IPSEC = 1
VERSION = 0x10
HMAC_BYTES = 20
HMAC_LABEL = b"telekey pktc hmac v1"
KMMID_NAMES = {WAKE_UP: "WakeUp", AP_REQUEST: "APRequest", AP_REPLY: "APReply",
               SEC_PARAM_RECOVERED: "SecParamRecovered", REKEY: "Rekey",
               ERROR_REPLY: "ErrorReply"}

Suite = tuple[int, int]  # (authentication algorithm, encryption transform)


def hmac_key(key: Key) -> bytes:
    """The 20-byte HMAC-SHA-1 key of a Kerberos key: PRF+(key, label), RFC 6113 §5.1; kept
    on the key, which signs more than one message."""
    return key.prf_plus(HMAC_LABEL, HMAC_BYTES, keep=True)


@dataclass(frozen=True, slots=True)
class WakeUp:
    server_nonce: int
    server_principal: str


@dataclass(frozen=True, slots=True)
class ApRequestMsg:
    ap_req: bytes
    server_nonce: int
    spi: int
    suites: tuple[Suite, ...]
    reestablish: bool
    hmac: bytes


@dataclass(frozen=True, slots=True)
class ApReplyMsg:
    ap_rep: bytes
    spi: int
    suite: Suite
    lifetime_s: int
    grace_s: int
    reestablish: bool
    ack_required: bool
    hmac: bytes


@dataclass(frozen=True, slots=True)
class SecParamRecovered:
    hmac: bytes


@dataclass(frozen=True, slots=True)
class Rekey:
    server_nonce: int
    server_principal: str
    timestamp: datetime
    spi: int
    suites: tuple[Suite, ...]
    lifetime_s: int
    grace_s: int
    reestablish: bool
    hmac: bytes


@dataclass(frozen=True, slots=True)
class ErrorReply:
    krb_error: bytes


Message = WakeUp | ApRequestMsg | ApReplyMsg | SecParamRecovered | Rekey | ErrorReply


@dataclass(frozen=True, slots=True)
class Framed:
    """A decoded message and the bytes its HMAC covers (None for Wake Up and Error Reply)."""
    message: Message
    signed: bytes | None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedMessage("PKTC_TRUNCATED", f"at offset {self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise MalformedMessage("PKTC_BAD_FLAG", f"{value} at offset {self.pos - 1}")
        return bool(value)

    def der(self, tag: int) -> bytes:
        start = self.pos
        if start >= len(self.data) or self.data[start] != tag:
            raise MalformedMessage("PKTC_BAD_KERBEROS_MESSAGE", f"at offset {start}")
        _, end = read_header(self.data, start + 1, len(self.data))
        self.pos = end
        return self.data[start:end]

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise MalformedMessage("PKTC_UNTERMINATED_STRING", f"at offset {self.pos}")
        raw = self.take(end - self.pos + 1)[:-1]
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("PKTC_BAD_STRING") from exc

    def suites(self) -> tuple[Suite, ...]:
        count = self.u8()
        raw = self.take(2 * count)
        return tuple((raw[i], raw[i + 1]) for i in range(0, len(raw), 2))

    def timestamp(self) -> datetime:
        raw = self.take(13)
        try:
            return datetime.strptime(raw.decode("ascii"), "%y%m%d%H%M%SZ").replace(tzinfo=UTC)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedMessage("PKTC_BAD_TIMESTAMP") from exc


def decode(data: bytes) -> Framed:
    """Decode one key-management datagram. Raises MalformedMessage for anything else."""
    r = _Reader(data)
    kmmid, doi, version = r.u8(), r.u8(), r.u8()
    signed_end = 0
    if doi != DOI_IPSEC:
        raise MalformedMessage("PKTC_UNKNOWN_DOI", str(doi))
    if version >> 4 != VERSION >> 4:
        raise MalformedMessage("PKTC_UNSUPPORTED_VERSION", f"{version >> 4}.{version & 15}")
    message: Message
    if kmmid == WAKE_UP:
        message = WakeUp(r.u32(), r.cstring())
    elif kmmid == AP_REQUEST:
        ap_req, nonce, spi, suites, flag = r.der(0x6E), r.u32(), r.u32(), r.suites(), r.flag()
        signed_end = r.pos
        message = ApRequestMsg(ap_req, nonce, spi, suites, flag, r.take(HMAC_BYTES))
    elif kmmid == AP_REPLY:
        ap_rep, spi, suites = r.der(0x6F), r.u32(), r.suites()
        if len(suites) != 1:
            raise MalformedMessage("PKTC_AP_REPLY_SUITES", f"{len(suites)} suites")
        lifetime, grace, flag, ack = r.u32(), r.u32(), r.flag(), r.flag()
        signed_end = r.pos
        message = ApReplyMsg(ap_rep, spi, suites[0], lifetime, grace, flag, ack,
                             r.take(HMAC_BYTES))
    elif kmmid == SEC_PARAM_RECOVERED:
        signed_end = r.pos
        message = SecParamRecovered(r.take(HMAC_BYTES))
    elif kmmid == REKEY:
        nonce, principal, when = r.u32(), r.cstring(), r.timestamp()
        spi, suites, lifetime, grace, flag = r.u32(), r.suites(), r.u32(), r.u32(), r.flag()
        signed_end = r.pos
        message = Rekey(nonce, principal, when, spi, suites, lifetime, grace, flag,
                        r.take(HMAC_BYTES))
    elif kmmid == ERROR_REPLY:
        message = ErrorReply(r.der(0x7E))
    else:
        raise MalformedMessage("PKTC_UNKNOWN_KMMID", str(kmmid))
    if r.pos != len(data):
        raise MalformedMessage("PKTC_TRAILING_BYTES", f"{len(data) - r.pos} bytes")
    signed = data[:signed_end] if kmmid in (AP_REQUEST, AP_REPLY, SEC_PARAM_RECOVERED,
                                             REKEY) else None
    return Framed(message, signed)


def _header(kmmid: int) -> bytes:
    return bytes((kmmid, DOI_IPSEC, VERSION))


def _suites(suites: tuple[Suite, ...]) -> bytes:
    return bytes((len(suites),)) + b"".join(bytes(s) for s in suites)


def _sign(body: bytes, key: bytes) -> bytes:
    return body + hmac_digest(key, body, "sha1")


def verify_hmac(framed: Framed, key: bytes) -> None:
    """Raise IntegrityError unless the message's HMAC is right under `key`."""
    message = framed.message
    if framed.signed is None or not hasattr(message, "hmac"):
        raise MalformedMessage("PKTC_NOT_SIGNED")
    expected = hmac_digest(key, framed.signed, "sha1")
    if not hmac.compare_digest(expected, message.hmac):
        raise IntegrityError("PKTC_BAD_HMAC")


def encode_wake_up(server_nonce: int, server_principal: str) -> bytes:
    return _header(WAKE_UP) + struct.pack(">I", server_nonce) + \
        server_principal.encode("ascii") + b"\x00"


def ap_request_binding(server_nonce: int, spi: int, suites: tuple[Suite, ...],
                       reestablish: bool) -> bytes:
    """What the AP-REQ authenticator's keyed checksum covers: the parameters after it."""
    return struct.pack(">II", server_nonce, spi) + _suites(suites) + bytes((reestablish,))


def encode_ap_request(ap_req: bytes, server_nonce: int, spi: int, suites: tuple[Suite, ...],
                      reestablish: bool, key: bytes) -> bytes:
    return _sign(_header(AP_REQUEST) + ap_req +
                 ap_request_binding(server_nonce, spi, suites, reestablish), key)


def encode_ap_reply(ap_rep: bytes, spi: int, suite: Suite, lifetime_s: int, grace_s: int,
                    reestablish: bool, ack_required: bool, key: bytes) -> bytes:
    return _sign(_header(AP_REPLY) + ap_rep + struct.pack(">I", spi) + _suites((suite,)) +
                 struct.pack(">IIBB", lifetime_s, grace_s, reestablish, ack_required), key)


def encode_sec_param_recovered(key: bytes) -> bytes:
    return _sign(_header(SEC_PARAM_RECOVERED), key)


def encode_rekey(server_nonce: int, server_principal: str, timestamp: datetime, spi: int,
                 suites: tuple[Suite, ...], lifetime_s: int, grace_s: int, reestablish: bool,
                 key: bytes) -> bytes:
    return _sign(_header(REKEY) + struct.pack(">I", server_nonce) +
                 server_principal.encode("ascii") + b"\x00" +
                 timestamp.astimezone(UTC).strftime("%y%m%d%H%M%SZ").encode("ascii") +
                 struct.pack(">I", spi) + _suites(suites) +
                 struct.pack(">IIB", lifetime_s, grace_s, reestablish), key)


def encode_error_reply(krb_error: bytes) -> bytes:
    return _header(ERROR_REPLY) + krb_error
