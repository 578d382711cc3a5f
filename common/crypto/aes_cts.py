"""AES in CBC mode with ciphertext stealing, as RFC 3962 §5 specifies for Kerberos.

For one block this is plain CBC. Otherwise the data is CBC-encrypted zero-padded, the last two
ciphertext blocks are swapped, and the (now last) block is truncated to the length of the final
plaintext block. The swap applies even when the length is a whole number of blocks.
"""

import functools
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
ZERO_IV = bytes(BLOCK)


def _public_encryptor(algorithm: Any, mode: Any) -> Any:
    return Cipher(algorithm, mode).encryptor()


def _public_decryptor(algorithm: Any, mode: Any) -> Any:
    return Cipher(algorithm, mode).decryptor()


# A key-management exchange builds about six AES contexts for keys it has never seen (session
# key, sub-key and the keys derived from them), and `Cipher(...).encryptor()` spends half of
# each on argument checks in Python before it calls the binding that builds the context. The
# arguments here are always an AES key (whose size `algorithms.AES` checks) with ECB or CBC and
# a 16-byte IV, so the binding is called directly — the same function `encryptor()` ends in —
# when this version of `cryptography` has it (pinned ~=50.0); otherwise the public API.
# tests/unit/test_aes_contexts.py checks both give the same bytes.
try:
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    _encryptor = _rust_openssl.ciphers.create_encryption_ctx
    _decryptor = _rust_openssl.ciphers.create_decryption_ctx
except (ImportError, AttributeError):  # pragma: no cover - another cryptography
    _encryptor, _decryptor = _public_encryptor, _public_decryptor
_ECB = modes.ECB()


@functools.lru_cache(maxsize=256)
def _ecb(key: bytes, decrypt: bool = False) -> Any:
    """A reusable raw-AES context per key: ECB has no chaining, so one context serves every
    block. Building a cipher context costs more than the AES itself, and key derivation (DK,
    the PRF) encrypts single blocks under the same few keys again and again. Bounded: at most
    256 key schedules (of keys the process holds anyway) stay in memory."""
    return (_decryptor if decrypt else _encryptor)(algorithms.AES(key), _ECB)


def aes_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Raw AES of whole blocks (the E of RFC 3961 DR for AES; one block for the PRF)."""
    result: bytes = _ecb(key).update(block)
    return result


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Plain AES-CBC of whole blocks."""
    encryptor = _encryptor(algorithms.AES(key), modes.CBC(iv))
    return encryptor.update(data) + encryptor.finalize()


def _cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """CBC decryption without a new cipher context: raw AES decryption of every block (one
    call on the key's cached context) XOR the previous ciphertext block (the IV first)."""
    raw = _ecb(key, True).update(data)
    chained = int.from_bytes(iv + data[:-BLOCK], "little")
    return (int.from_bytes(raw, "little") ^ chained).to_bytes(len(data), "little")


def _aes_decrypt_block(key: bytes, block: bytes) -> bytes:
    result: bytes = _ecb(key, True).update(block)
    return result


def cts_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CBC-CTS encryption (RFC 3962 §5). `data` must be at least one block long."""
    if len(data) < BLOCK:
        raise ValueError("CBC-CTS needs at least one block of input")
    if len(data) == BLOCK:
        return cbc_encrypt(key, iv, data)
    tail = len(data) % BLOCK or BLOCK
    padded = data + bytes(BLOCK - tail)
    cbc = cbc_encrypt(key, iv, padded)
    head, penultimate, last = cbc[: -2 * BLOCK], cbc[-2 * BLOCK : -BLOCK], cbc[-BLOCK:]
    return head + last + penultimate[:tail]


def cts_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CBC-CTS decryption (RFC 3962 §5). `data` must be at least one block long."""
    if len(data) < BLOCK:
        raise ValueError("CBC-CTS needs at least one block of input")
    if len(data) == BLOCK:
        return _cbc_decrypt(key, iv, data)
    tail = len(data) % BLOCK or BLOCK
    head = data[: -BLOCK - tail]
    last_full = data[-BLOCK - tail : -tail]  # the final CBC block, moved forward by the swap
    stolen = data[-tail:]
    # Decrypting the final CBC block yields padded-plaintext XOR the penultimate CBC block; the
    # padding was zeros, so its tail is the part of the penultimate block that was cut off.
    restored = stolen + _aes_decrypt_block(key, last_full)[tail:]
    return _cbc_decrypt(key, iv, head + restored + last_full)[: len(data)]


def cts_next_iv(ciphertext: bytes) -> bytes:
    """The cipher state after a CTS operation: the last full CBC output block (RFC 3962 §5)."""
    if len(ciphertext) == BLOCK:
        return ciphertext
    tail = len(ciphertext) % BLOCK or BLOCK
    return ciphertext[-BLOCK - tail : -tail]
