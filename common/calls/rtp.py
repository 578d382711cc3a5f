"""RTP (RFC 3550 §5.1) fixed header and G.711 µ-law (ITU-T G.711, PCMU, RFC 3551). No I/O.

Telekey sends PCMU at 8 kHz in 20 ms packets (160 samples); the sequence number, timestamp
and SSRC start at random values (RFC 3550 §5.1). SRTP protection itself is libsrtp's.
"""

import struct
from array import array
from dataclasses import dataclass

from common.errors import MalformedMessage

HEADER = struct.Struct("!BBHII")
PCMU = 0
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False


def encode_rtp(packet: RtpPacket) -> bytes:
    return HEADER.pack(0x80, (0x80 if packet.marker else 0) | packet.payload_type,
                       packet.sequence & 0xFFFF, packet.timestamp & 0xFFFFFFFF,
                       packet.ssrc) + packet.payload


def decode_rtp(data: bytes) -> RtpPacket:
    """The packet; MalformedMessage for a short packet, another version, or a header
    (CSRCs, extension, padding) longer than the packet."""
    if len(data) < HEADER.size:
        raise MalformedMessage("RTP_TOO_SHORT")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise MalformedMessage("RTP_VERSION", str(first >> 6))
    offset = HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            raise MalformedMessage("RTP_TRUNCATED_EXTENSION")
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    end = len(data)
    if first & 0x20:
        end -= data[-1] if data[-1] else len(data)
    if offset > end:
        raise MalformedMessage("RTP_TRUNCATED")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[offset:end],
                     bool(second & 0x80))


def _ulaw_encode_one(sample: int) -> int:
    """G.711 µ-law of one sample, as the reference g711.c (and Python's audioop) computes it:
    14-bit magnitude, bias 33, segment search, inverted."""
    value = sample >> 2
    mask = 0x7F if value < 0 else 0xFF
    value = min(-value if value < 0 else value, 8159) + 0x21
    segment = max(0, value.bit_length() - 6)
    if segment > 7:  # beyond the last segment: the largest code
        return 0x7F ^ mask
    return (((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask) & 0xFF


def _ulaw_decode_one(code: int) -> int:
    code = ~code & 0xFF
    magnitude = ((((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)) - 0x84
    return -magnitude if code & 0x80 else magnitude


_ENCODE = bytes(_ulaw_encode_one(s - 65536 if s >= 32768 else s) for s in range(65536))
_DECODE = array("h", (_ulaw_decode_one(c) for c in range(256)))


def ulaw_encode(samples: array) -> bytes:  # type: ignore[type-arg]
    """Signed 16-bit samples → µ-law bytes."""
    return bytes(_ENCODE[s & 0xFFFF] for s in samples)


def ulaw_decode(data: bytes) -> array:  # type: ignore[type-arg]
    """µ-law bytes → signed 16-bit samples."""
    return array("h", (_DECODE[c] for c in data))
