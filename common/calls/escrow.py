"""Lawful-intercept key escrow (seed 001, CALEA), telekey profile v1. No I/O.

A call's media keys are sealed to the escrow authority's X25519 public key: an ephemeral
X25519 key pair, HKDF-SHA256 of the shared secret with info "telekey escrow v1" | call id,
AES-256-GCM with the call id as associated data. Sealed = ephemeral public key(32) | nonce(12)
| ciphertext. The sealer keeps nothing that opens it: only the escrow private key does.
"""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.errors import IntegrityError, MalformedMessage

INFO = b"telekey escrow v1|"


def _key(shared: bytes, call_id: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, INFO + call_id.encode()).derive(shared)


def seal(plaintext: bytes, recipient: X25519PublicKey, call_id: str) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    key = _key(ephemeral.exchange(recipient), call_id)
    nonce = os.urandom(12)
    public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return public + nonce + AESGCM(key).encrypt(nonce, plaintext, call_id.encode())


def open_sealed(sealed: bytes, private: X25519PrivateKey, call_id: str) -> bytes:
    """The plaintext; IntegrityError if the record was altered, sealed for another key or
    another call."""
    if len(sealed) < 32 + 12 + 16:
        raise MalformedMessage("ESCROW_TOO_SHORT")
    peer = X25519PublicKey.from_public_bytes(sealed[:32])
    key = _key(private.exchange(peer), call_id)
    try:
        return AESGCM(key).decrypt(sealed[32:44], sealed[44:], call_id.encode())
    except InvalidTag as exc:
        raise IntegrityError("ESCROW_CANNOT_OPEN") from exc
