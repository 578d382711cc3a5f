"""Broker keys: derivations, identifiers and wrapping (seed 003), telekey profile v1. No I/O.

- **Channel secret.** Every SA set up by an AP exchange with a broker gives both ends a
  32-byte secret: `channel_secret(subkey)` = PRF+(AP-REP sub-key, "telekey broker v1"), the
  Kerberos PRF+ of RFC 6113 as for the SA keys (common/pktc/esp.py). It never travels.
- **Pool keys.** A pool of epoch E holds `slots` keys, generation 0 of slot i being
  HKDF-SHA256(IKM = channel secret, salt = empty, info = "telekey broker pool v1" | E(4) |
  i(1), 32 bytes) (RFC 5869). The pool is thus established from the AP exchange of the SA on
  which the broker offers it; a new epoch is a new pool from scratch.
- **Wrapping.** A key travels as RFC 5649 AES key wrap under a key-encryption key bound to
  its context: KEK = HKDF-SHA256(IKM = wrapping key, salt = the recipient's channel secret,
  info = "telekey broker kek v1" | holder | owner | E(4) | i(1) | g(4) | session, 32 bytes),
  where holder and owner are the principals of the recipient and of the key's device, (E, i,
  g) the wrapped key's identifier and session the Call-ID; each variable-length field is
  preceded by its length (2 bytes). A wrapped key replayed for another device, another
  session or another generation, or on another SA, fails the unwrap's integrity check.
- **Proofs.** A device acknowledges a key it now holds with SHA-256("telekey broker ack v1" |
  E(4) | i(1) | g(4) | key) and a pool with SHA-256("telekey broker ack v1" | E(4) | n(1) |
  key_0 | ... | key_n-1): possession shown, nothing revealed.
"""

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from common.codes import ErrorCode
from common.crypto import Key
from common.errors import KerberosError

KEY_BYTES = 32
CHANNEL_LABEL = b"telekey broker v1"
POOL_LABEL = b"telekey broker pool v1"
KEK_LABEL = b"telekey broker kek v1"
ACK_LABEL = b"telekey broker ack v1"
MAX_SLOTS = 32


class BrokerKeyError(KerberosError):
    """A wrapped key that does not unwrap in its context, or a key identifier that is not
    the one expected: refused, and the current key stays."""
    code = ErrorCode.KRB_AP_ERR_MODIFIED


@dataclass(frozen=True, order=True)
class KeyId:
    epoch: int
    slot: int
    generation: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.slot}.{self.generation}"

    @classmethod
    def parse(cls, text: str) -> "KeyId":
        parts = text.split(".")
        if len(parts) != 3 or not all(p.isdigit() and len(p) <= 10 for p in parts):
            raise BrokerKeyError("BAD_KEY_ID", text[:40])
        epoch, slot, generation = (int(p) for p in parts)
        if epoch >= 2**32 or slot >= MAX_SLOTS or generation >= 2**32:
            raise BrokerKeyError("BAD_KEY_ID", text[:40])
        return cls(epoch, slot, generation)

    def packed(self) -> bytes:
        return struct.pack(">IBI", self.epoch, self.slot, self.generation)

    def next(self) -> "KeyId":
        return KeyId(self.epoch, self.slot, self.generation + 1)


@dataclass(frozen=True)
class BrokerKey:
    """One key of a device's pool: whose, which, and its bytes."""
    owner: str  # the device's principal (without realm)
    key_id: KeyId
    key: bytes

    def __repr__(self) -> str:  # never show key bytes
        return f"BrokerKey({self.owner}, {self.key_id})"


def _hkdf(ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt, info).derive(ikm)


def _field(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">H", len(data)) + data


def channel_secret(subkey: Key) -> bytes:
    """The SA's broker secret, from its AP-REP sub-key (both ends compute it)."""
    return subkey.prf_plus(CHANNEL_LABEL, KEY_BYTES)


def pool_keys(secret: bytes, epoch: int, slots: int) -> list[bytes]:
    """Generation 0 of each slot of pool `epoch`."""
    if not 1 <= slots <= MAX_SLOTS or not 0 <= epoch < 2**32:
        raise ValueError("pool epoch or size out of range")
    return [_hkdf(secret, None, POOL_LABEL + struct.pack(">IB", epoch, slot))
            for slot in range(slots)]


def kek(wrapping_key: bytes, secret: bytes, *, holder: str, owner: str, key_id: KeyId,
        session: str) -> bytes:
    return _hkdf(wrapping_key, secret, KEK_LABEL + _field(holder) + _field(owner) +
                 key_id.packed() + _field(session))


def wrap(wrapping_key: bytes, secret: bytes, key: BrokerKey, *, holder: str,
         session: str) -> bytes:
    """RFC 5649 wrap of `key` for `holder` under `wrapping_key` and the holder's channel
    `secret`, bound to the session."""
    return aes_key_wrap_with_padding(
        kek(wrapping_key, secret, holder=holder, owner=key.owner, key_id=key.key_id,
            session=session), key.key)


def unwrap(wrapping_key: bytes, secret: bytes, wrapped: bytes, *, holder: str, owner: str,
           key_id: KeyId, session: str) -> BrokerKey:
    """The key a `wrap` in the same context made; BrokerKeyError otherwise."""
    try:
        key = aes_key_unwrap_with_padding(
            kek(wrapping_key, secret, holder=holder, owner=owner, key_id=key_id,
                session=session), wrapped)
    except (InvalidUnwrap, ValueError) as exc:
        raise BrokerKeyError("KEY_UNWRAP_FAILED", f"{owner} {key_id}") from exc
    if len(key) != KEY_BYTES:
        raise BrokerKeyError("KEY_UNWRAP_FAILED", f"{owner} {key_id}: length {len(key)}")
    return BrokerKey(owner, key_id, key)


def key_proof(key_id: KeyId, key: bytes) -> str:
    return hashlib.sha256(ACK_LABEL + key_id.packed() + key).hexdigest()


def pool_proof(epoch: int, keys: list[bytes]) -> str:
    return hashlib.sha256(ACK_LABEL + struct.pack(">IB", epoch, len(keys)) +
                          b"".join(keys)).hexdigest()


def proof_matches(claimed: str, expected: str) -> bool:
    return hmac.compare_digest(claimed.strip().lower().encode(), expected.encode())
