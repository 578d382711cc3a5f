"""RFC 3962: aes128-cts-hmac-sha1-96 (17) and aes256-cts-hmac-sha1-96 (18), the RFC 3961 §5.3
simplified profile over AES-CBC-CTS with HMAC-SHA1 truncated to 96 bits."""

import hashlib
import hmac
import struct
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from common.crypto.aes_cts import BLOCK, ZERO_IV, aes_encrypt_block, cts_decrypt, cts_encrypt
from common.crypto.hmac_states import hmac_digest
from common.crypto.rfc3961 import EncTypeProfile, nfold, usage_constant
from common.errors import IntegrityError

_MAC_BYTES = 12


class AesSha1(EncTypeProfile):
    """RFC 3962 AES enctypes with the simplified profile."""

    default_iterations = 4096

    def __init__(self, enctype: int, name: str, cksumtype: int, key_bytes: int) -> None:
        self.enctype = enctype
        self.name = name
        self.cksumtype = cksumtype
        self.key_bytes = key_bytes
        self.seed_bytes = key_bytes

    @property
    def confounder_bytes(self) -> int:
        return BLOCK

    def dk(self, key: bytes, constant: bytes) -> bytes:
        """RFC 3961 §5.1 DK with AES as E; random-to-key is the identity."""
        return self.dk_many(key, (constant,))[0]

    def dk_many(self, key: bytes, constants: Sequence[bytes]) -> list[bytes]:
        """DK for several constants at once. DR iterates E on n-fold(constant): one or two
        blocks per key (AES-128, AES-256), so the first blocks of every constant are one
        raw-AES call on the key's cached context and the second blocks another."""
        first = aes_encrypt_block(key, b"".join(
            c if len(c) == BLOCK else nfold(c, BLOCK) for c in constants))
        cuts = range(0, len(first), BLOCK)
        if self.key_bytes == BLOCK:
            return [first[i:i + BLOCK] for i in cuts]
        second = aes_encrypt_block(key, first)
        return [first[i:i + BLOCK] + second[i:i + BLOCK] for i in cuts]

    def derive(self, key: bytes, usage: int, kind: int) -> bytes:
        return self.dk(key, usage_constant(usage, kind))

    def string_to_key(self, password: bytes, salt: bytes, params: bytes | None = None) -> bytes:
        """RFC 3962 §4: DK(PBKDF2-HMAC-SHA1(password, salt, iterations), "kerberos")."""
        iterations = self.default_iterations
        if params:
            if len(params) != 4:
                raise ValueError("s2kparams for AES is a 4-octet iteration count")
            (iterations,) = struct.unpack(">I", params)
            # RFC 3962 §4: a count of zero means 2**32.
            iterations = iterations or 1 << 32
        tkey = PBKDF2HMAC(hashes.SHA1(), self.key_bytes, salt, iterations).derive(password)
        return self.dk(tkey, b"kerberos")

    def encrypt_with(self, ke: bytes, ki: bytes, plaintext: bytes, confounder: bytes) -> bytes:
        data = confounder + plaintext
        mac = hmac_digest(ki, data, "sha1")[:_MAC_BYTES]
        return cts_encrypt(ke, ZERO_IV, data) + mac

    def decrypt_with(self, ke: bytes, ki: bytes, ciphertext: bytes) -> bytes:
        if len(ciphertext) < BLOCK + _MAC_BYTES:
            raise IntegrityError("CIPHERTEXT_TOO_SHORT", f"{len(ciphertext)} bytes")
        body, mac = ciphertext[:-_MAC_BYTES], ciphertext[-_MAC_BYTES:]
        data = cts_decrypt(ke, ZERO_IV, body)
        expected = hmac_digest(ki, data, "sha1")[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            raise IntegrityError("BAD_INTEGRITY", "HMAC-SHA1-96 mismatch")
        return data[BLOCK:]

    def checksum_with(self, kc: bytes, data: bytes) -> bytes:
        return hmac_digest(kc, data, "sha1")[:_MAC_BYTES]

    def prf(self, key: bytes, data: bytes) -> bytes:
        """RFC 3962 §6: E(DK(key, "prf"), SHA1(data) truncated to one block)."""
        return self.prf_with(self.prf_key(key), data)

    def prf_key(self, key: bytes) -> bytes:
        """DK(key, "prf"), which Key derives once and keeps."""
        return self.dk(key, b"prf")

    def prf_with(self, prf_key: bytes, data: bytes) -> bytes:
        # CBC-CTS of exactly one block with a zero IV is one raw AES block.
        return aes_encrypt_block(prf_key, hashlib.sha1(data).digest()[:BLOCK])

    def prf_plus_with(self, prf_key: bytes, data: bytes, nbytes: int) -> bytes:
        """RFC 6113 §5.1 PRF+ over this PRF: the counter blocks' SHA-1 prefixes, then all
        of them through raw AES in one call."""
        count = -(-nbytes // BLOCK)
        return aes_encrypt_block(prf_key, b"".join(
            hashlib.sha1(bytes((i,)) + data).digest()[:BLOCK]
            for i in range(1, count + 1)))[:nbytes]


AES128_CTS_HMAC_SHA1_96 = AesSha1(17, "aes128-cts-hmac-sha1-96", 15, 16)
AES256_CTS_HMAC_SHA1_96 = AesSha1(18, "aes256-cts-hmac-sha1-96", 16, 32)
