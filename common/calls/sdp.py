"""The session description a telekey call carries (RFC 4566 subset, RFC 3264 offer/answer in
one round). No I/O.

Each side says where it receives media and device-to-device signaling once the call key is
shared, and which SRTP profile it uses:

    v=0
    o=- <session id> 1 IN IP4 <host>
    s=telekey
    c=IN IP4 <host>
    t=0 0
    m=audio <rtp port> RTP/SAVP 0
    a=rtpmap:0 PCMU/8000
    a=telekey-esp:<udp port of its device-to-device ESP>
    a=telekey-srtp:<AES_CM_128_HMAC_SHA1_80 | AEAD_AES_128_GCM>

The SRTP keys are not in the SDP (no a=crypto): both sides derive them from the call key
(common/calls/keys.py). Anything unreadable is a SipError 488 Not Acceptable Here.
"""

import ipaddress
from dataclasses import dataclass

from common.calls.keys import SRTP_PROFILES
from common.calls.sip import SipError


@dataclass(frozen=True)
class MediaDescription:
    host: str
    rtp_port: int
    esp_port: int
    srtp_profile: str = "AES_CM_128_HMAC_SHA1_80"
    payload_type: int = 0  # PCMU (RFC 3551)


def encode_sdp(media: MediaDescription, session_id: int) -> bytes:
    lines = ["v=0", f"o=- {session_id} 1 IN IP4 {media.host}", "s=telekey",
             f"c=IN IP4 {media.host}", "t=0 0",
             f"m=audio {media.rtp_port} RTP/SAVP {media.payload_type}",
             f"a=rtpmap:{media.payload_type} PCMU/8000", f"a=telekey-esp:{media.esp_port}",
             f"a=telekey-srtp:{media.srtp_profile}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SipError(488, "Bad Port In SDP")
    return int(text)


def parse_sdp(data: bytes) -> MediaDescription:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise SipError(488, "SDP Not ASCII") from exc
    host = rtp = esp = None
    profile, payload_type = "AES_CM_128_HMAC_SHA1_80", 0
    for line in text.replace("\r\n", "\n").split("\n"):
        kind, _, value = line.partition("=")
        if kind == "c":
            parts = value.split()
            if len(parts) != 3 or parts[:2] != ["IN", "IP4"]:
                raise SipError(488, "Bad Connection Line")
            try:
                host = str(ipaddress.IPv4Address(parts[2]))
            except ValueError as exc:
                raise SipError(488, "Bad Connection Address") from exc
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4 or parts[0] != "audio" or parts[2] != "RTP/SAVP":
                raise SipError(488, "Bad Media Line")
            rtp = _port(parts[1])
            if not parts[3].isdigit() or int(parts[3]) > 127:
                raise SipError(488, "Bad Payload Type")
            payload_type = int(parts[3])
        elif kind == "a" and value.startswith("telekey-esp:"):
            esp = _port(value.split(":", 1)[1])
        elif kind == "a" and value.startswith("telekey-srtp:"):
            profile = value.split(":", 1)[1]
            if profile not in SRTP_PROFILES:
                raise SipError(488, "Unknown SRTP Profile")
    if host is None or rtp is None or esp is None:
        raise SipError(488, "Incomplete SDP")
    return MediaDescription(host, rtp, esp, profile, payload_type)
