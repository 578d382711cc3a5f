"""ESP in user space (RFC 4303, transport mode) inside UDP encapsulation (RFC 3948). No I/O.

A packet: SPI(4) | sequence(4) | IV | ciphertext of (payload | padding 1,2,3.. | pad length |
next header) | ICV. The payload is a UDP datagram (next header 17: source port, destination
port, length, checksum 0) so a dissector shows the inner datagram.

Suites (telekey profile v1; the pktc ciphersuite bytes are (authentication, transform)):

- AES-GCM-16 (default), pktc (0x00, 0x14): AES-256-GCM, 4-byte salt, 8-byte IV, 16-byte ICV
  (RFC 4106).
- AES-CBC/HMAC-SHA1-96, pktc (0x02, 0x0c): AES-128-CBC with a 16-byte IV (RFC 3602),
  HMAC-SHA1-96 (RFC 2404).
- 3DES-CBC/HMAC-SHA1-96, pktc (0x02, 0x03): 3DES-CBC with an 8-byte IV (RFC 2451),
  HMAC-SHA1-96 — the seed's profile.

Inbound SAs keep a sliding anti-replay window (RFC 4303 §3.4.3, 128 packets): a sequence
number is checked before the ICV and recorded only after it verified.
"""

import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.crypto import Key
from common.crypto.hmac_states import hmac_digest
from common.errors import KerberosError, MalformedMessage

NEXT_HEADER_UDP = 17
ESP_PORT = 4500
WINDOW = 128
SA_LABEL = b"telekey sa v1"


class EspDropped(KerberosError):
    """An inbound ESP packet that must not be delivered (bad ICV, replay, unknown SPI)."""


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    pktc: tuple[int, int]
    enc_key_bytes: int
    salt_bytes: int
    integ_key_bytes: int
    iv_bytes: int
    block_bytes: int
    icv_bytes: int
    wireshark_encryption: str
    wireshark_authentication: str

    @property
    def aead(self) -> bool:
        return self.integ_key_bytes == 0


AES_GCM_16 = Suite("AES-GCM-16", (0x00, 0x14), 32, 4, 0, 8, 4, 16,
                   "AES-GCM with 16 octet ICV [RFC4106]", "NULL")
AES_CBC_SHA1 = Suite("AES-CBC/HMAC-SHA1-96", (0x02, 0x0C), 16, 0, 20, 16, 16, 12,
                     "AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]")
DES3_CBC_SHA1 = Suite("3DES-CBC/HMAC-SHA1-96", (0x02, 0x03), 24, 0, 20, 8, 8, 12,
                      "TripleDES-CBC [RFC2451]", "HMAC-SHA-1-96 [RFC2404]")
SUITES = {s.pktc: s for s in (AES_GCM_16, AES_CBC_SHA1, DES3_CBC_SHA1)}


@dataclass(frozen=True, slots=True)
class DirectionKeys:
    encryption: bytes
    salt: bytes
    integrity: bytes

    def __repr__(self) -> str:  # never show key bytes
        return "DirectionKeys(...)"

    def __reduce__(self) -> tuple[type, tuple[bytes, bytes, bytes]]:
        # Pickled by value (key-management workers hand SAs to the main process): rebuilt by
        # the constructor, not by dataclasses' generic __setstate__ (which looks up the
        # fields for every object).
        return DirectionKeys, (self.encryption, self.salt, self.integrity)


def derive_sa_keys(subkey: Key, suite: Suite, initiator_spi: int, responder_spi: int
                   ) -> tuple[DirectionKeys, DirectionKeys]:
    """telekey profile v1: PRF+(subkey, "telekey sa v1" | suite(2) | initiator SPI(4) |
    responder SPI(4)), cut into initiator→responder then responder→initiator keys, each
    encryption key | salt | integrity key. The initiator is the device (it sent the AP-REQ);
    initiator→responder traffic uses the responder's SPI."""
    one = suite.enc_key_bytes + suite.salt_bytes + suite.integ_key_bytes
    material = subkey.prf_plus(SA_LABEL + bytes(suite.pktc) +
                               struct.pack(">II", initiator_spi, responder_spi), 2 * one)

    def cut(chunk: bytes) -> DirectionKeys:
        e, s = suite.enc_key_bytes, suite.salt_bytes
        return DirectionKeys(chunk[:e], chunk[e:e + s], chunk[e + s:])

    return cut(material[:one]), cut(material[one:])


def _cbc(suite: Suite, key: bytes, iv: bytes) -> "Cipher[modes.CBC]":
    algorithm = TripleDES(key) if suite is DES3_CBC_SHA1 else algorithms.AES(key)
    return Cipher(algorithm, modes.CBC(iv))


class OutboundSa:
    def __init__(self, spi: int, suite: Suite, keys: DirectionKeys,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.spi = spi
        self.suite = suite
        self.keys = keys
        self.seq = 0
        self._random = random
        self._gcm: AESGCM | None = None  # built on first use: most SAs of a storm idle

    def seal(self, payload: bytes, next_header: int = NEXT_HEADER_UDP) -> bytes:
        if self.seq >= 0xFFFFFFFF:
            raise EspDropped("ESP_SEQUENCE_EXHAUSTED")  # must re-key (RFC 4303 §3.3.3)
        self.seq += 1
        suite = self.suite
        header = struct.pack(">II", self.spi, self.seq)
        pad = -(len(payload) + 2) % suite.block_bytes
        plain = payload + bytes(range(1, pad + 1)) + bytes((pad, next_header))
        iv = self._random(suite.iv_bytes)
        if suite.aead:
            if self._gcm is None:
                self._gcm = AESGCM(self.keys.encryption)
            return header + iv + self._gcm.encrypt(self.keys.salt + iv, plain, header)
        encryptor = _cbc(suite, self.keys.encryption, iv).encryptor()
        body = header + iv + encryptor.update(plain) + encryptor.finalize()
        icv = hmac_digest(self.keys.integrity, body, "sha1")[:suite.icv_bytes]
        return body + icv


class InboundSa:
    def __init__(self, spi: int, suite: Suite, keys: DirectionKeys) -> None:
        self.spi = spi
        self.suite = suite
        self.keys = keys
        self.top = 0  # highest sequence number accepted
        self.bitmap = 0  # bit i: top - i was accepted
        self._gcm: AESGCM | None = None  # built on first use

    def _check_replay(self, seq: int) -> None:
        if seq == 0:
            raise EspDropped("ESP_SEQUENCE_ZERO")
        if seq <= self.top and (self.top - seq >= WINDOW or self.bitmap >> (self.top - seq) & 1):
            raise EspDropped("ESP_REPLAY", str(seq))

    def _record(self, seq: int) -> None:
        if seq > self.top:
            self.bitmap = (self.bitmap << (seq - self.top) | 1) & ((1 << WINDOW) - 1)
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)

    def open(self, packet: bytes) -> tuple[int, bytes]:
        """(next header, payload) of a packet for this SA; raises EspDropped or
        MalformedMessage and leaves the replay window unchanged when it does."""
        suite = self.suite
        minimum = 8 + suite.iv_bytes + suite.block_bytes + suite.icv_bytes
        if len(packet) < minimum:
            raise MalformedMessage("ESP_TOO_SHORT", f"{len(packet)} bytes")
        spi, seq = struct.unpack_from(">II", packet)
        if spi != self.spi:
            raise EspDropped("ESP_WRONG_SPI")
        self._check_replay(seq)
        iv = packet[8:8 + suite.iv_bytes]
        if suite.aead:
            if self._gcm is None:
                self._gcm = AESGCM(self.keys.encryption)
            try:
                plain = self._gcm.decrypt(self.keys.salt + iv, packet[8 + suite.iv_bytes:],
                                          packet[:8])
            except Exception as exc:  # cryptography's InvalidTag
                raise EspDropped("ESP_BAD_ICV") from exc
        else:
            body, icv = packet[:-suite.icv_bytes], packet[-suite.icv_bytes:]
            expected = hmac_digest(self.keys.integrity, body, "sha1")
            if not hmac.compare_digest(expected[:suite.icv_bytes], icv):
                raise EspDropped("ESP_BAD_ICV")
            ciphertext = body[8 + suite.iv_bytes:]
            if len(ciphertext) % suite.block_bytes:
                raise MalformedMessage("ESP_NOT_BLOCK_ALIGNED")
            decryptor = _cbc(suite, self.keys.encryption, iv).decryptor()
            plain = decryptor.update(ciphertext) + decryptor.finalize()
        pad, next_header = plain[-2], plain[-1]
        if pad + 2 > len(plain) or plain[-2 - pad:-2] != bytes(range(1, pad + 1)):
            raise MalformedMessage("ESP_BAD_PADDING")
        self._record(seq)
        return next_header, plain[:-2 - pad]


def spi_of(packet: bytes) -> int:
    """The SPI of an ESP packet (RFC 3948: a first word of zero is a non-ESP marker)."""
    if len(packet) < 8:
        raise MalformedMessage("ESP_TOO_SHORT", f"{len(packet)} bytes")
    spi = int.from_bytes(packet[:4], "big")
    if spi == 0:
        raise MalformedMessage("NON_ESP_MARKER")
    return spi


def udp_datagram(source_port: int, destination_port: int, payload: bytes) -> bytes:
    """The inner UDP datagram of a transport-mode packet (checksum 0: none, IPv4)."""
    return struct.pack(">HHHH", source_port, destination_port, 8 + len(payload), 0) + payload


def parse_udp_datagram(data: bytes) -> tuple[int, int, bytes]:
    if len(data) < 8:
        raise MalformedMessage("UDP_TOO_SHORT")
    source, destination, length, _ = struct.unpack_from(">HHHH", data)
    if length != len(data):
        raise MalformedMessage("UDP_BAD_LENGTH", f"{length} != {len(data)}")
    return source, destination, data[8:]


def wireshark_esp_sa(source: str, destination: str, spi: int, suite: Suite,
                     keys: DirectionKeys) -> str:
    """One record of Wireshark's `esp_sa` UAT (../shared/references.md §5.2), for labs and
    tests that decrypt a capture; GCM keys carry their salt appended, as Wireshark expects."""
    fields = ("IPv4", source, destination, f"0x{spi:08x}", suite.wireshark_encryption,
              "0x" + (keys.encryption + keys.salt).hex(), suite.wireshark_authentication,
              "0x" + keys.integrity.hex() if keys.integrity else "")
    return ",".join(f'"{f}"' for f in fields)
