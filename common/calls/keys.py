"""Per-call keys (seed 001, FIG. 4), telekey profile v1. No I/O.

The caller's controller makes a random call key K (aes256-cts-hmac-sha1-96 key, so the
Kerberos PRF+ of common/crypto applies) and an SPI s. K and s travel to the callee (through
the callee's controller) and to the caller, inside their ESP-protected signaling; each
delivery is acknowledged with `ack_hash(K, s)`, which proves possession without revealing K.

From K both devices derive:
- device-to-device ESP keys: `common.pktc.esp.derive_sa_keys(K, suite, s, s + 1)` — the caller
  receives on s, the callee on s + 1 (caller = initiator);
- SRTP master key and salt per direction: PRF+(K, "telekey srtp v1" | profile(1)), cut as
  caller→callee key | salt, then callee→caller key | salt. Profiles: 1 = AES_CM_128_HMAC_SHA1_80
  (16-byte key, 14-byte salt, RFC 3711), 2 = AEAD_AES_128_GCM (16, 12; RFC 7714).
"""

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from common.crypto import Key

CALL_ENCTYPE = 18
SRTP_LABEL = b"telekey srtp v1"
ACK_LABEL = b"telekey call ack v1"
SRTP_PROFILES = {"AES_CM_128_HMAC_SHA1_80": (1, 16, 14), "AEAD_AES_128_GCM": (2, 16, 12)}


@dataclass(frozen=True)
class CallKey:
    key: Key
    spi: int  # the caller's inbound SPI; the callee's is spi + 1

    def __repr__(self) -> str:  # never show key bytes
        return f"CallKey(spi=0x{self.spi:08x})"


@dataclass(frozen=True)
class SrtpKeys:
    master_key: bytes
    master_salt: bytes

    def __repr__(self) -> str:
        return "SrtpKeys(...)"


def new_spi() -> int:
    """A device-to-device SPI pair's first: even, so that s and s + 1 pair; never < 256."""
    return (secrets.randbelow(0xFFFFFE00) + 256) & ~1


def new_call_key(random: Callable[[int], bytes] = os.urandom) -> CallKey:
    return CallKey(Key.random(CALL_ENCTYPE, random), new_spi())


def ack_hash(key: Key, spi: int) -> bytes:
    """SHA-256("telekey call ack v1" | K | SPI(4)): what each device returns on delivery."""
    return hashlib.sha256(ACK_LABEL + key.data + spi.to_bytes(4, "big")).digest()


def srtp_keys(key: Key, profile: str) -> tuple[SrtpKeys, SrtpKeys]:
    """(caller→callee, callee→caller) SRTP master keys and salts for `profile`."""
    number, key_bytes, salt_bytes = SRTP_PROFILES[profile]
    one = key_bytes + salt_bytes
    material = key.prf_plus(SRTP_LABEL + bytes((number,)), 2 * one)
    return (SrtpKeys(material[:key_bytes], material[key_bytes:one]),
            SrtpKeys(material[one:one + key_bytes], material[one + key_bytes:]))
