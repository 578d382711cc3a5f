"""RFC 8009: aes128-cts-hmac-sha256-128 (19) and aes256-cts-hmac-sha384-192 (20).

Keys come from the SP 800-108 counter-mode KDF with HMAC-SHA2 (§3), and the MAC covers the
cipher state and the ciphertext, not the plaintext (§5)."""

import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from common.crypto.aes_cts import BLOCK, ZERO_IV, cts_decrypt, cts_encrypt
from common.crypto.hmac_states import hmac_digest
from common.crypto.rfc3961 import KE, EncTypeProfile, usage_constant
from common.errors import IntegrityError

_DIGEST_BYTES = {"sha256": 32, "sha384": 48}  # RFC 8009's two hashes


def kdf_hmac_sha2(digest: str, key: bytes, label: bytes, nbits: int, context: bytes = b"") -> bytes:
    """RFC 8009 §3 KDF-HMAC-SHA2: HMAC(key, 00000001 | label | 0x00 | context | k)[:k/8].

    A single iteration suffices for every output size RFC 8009 asks for.
    """
    digest_size = _DIGEST_BYTES[digest]
    if nbits > digest_size * 8:
        raise ValueError("KDF-HMAC-SHA2 output larger than one hash")
    message = b"\x00\x00\x00\x01" + label + b"\x00" + context + struct.pack(">I", nbits)
    return hmac_digest(key, message, digest)[: nbits // 8]


class AesSha2(EncTypeProfile):
    """RFC 8009 AES enctypes."""

    default_iterations = 32768

    def __init__(self, enctype: int, name: str, cksumtype: int, key_bytes: int, digest: str,
                 mac_bytes: int) -> None:
        self.enctype = enctype
        self.name = name
        self.cksumtype = cksumtype
        self.key_bytes = key_bytes
        self.seed_bytes = key_bytes
        self.digest = digest
        self.mac_bytes = mac_bytes

    @property
    def confounder_bytes(self) -> int:
        return BLOCK

    def derive(self, key: bytes, usage: int, kind: int) -> bytes:
        # Ke is a full AES key; Kc and Ki are the MAC length (RFC 8009 §5).
        nbits = self.key_bytes * 8 if kind == KE else self.mac_bytes * 8
        return kdf_hmac_sha2(self.digest, key, usage_constant(usage, kind), nbits)

    def string_to_key(self, password: bytes, salt: bytes, params: bytes | None = None) -> bytes:
        """RFC 8009 §4: saltp = enctype-name | 0x00 | salt; KDF(PBKDF2(...), "kerberos")."""
        iterations = self.default_iterations
        if params:
            if len(params) != 4:
                raise ValueError("s2kparams for AES is a 4-octet iteration count")
            (iterations,) = struct.unpack(">I", params)
        saltp = self.name.encode() + b"\x00" + salt
        algorithm = hashes.SHA256() if self.digest == "sha256" else hashes.SHA384()
        tkey = PBKDF2HMAC(algorithm, self.key_bytes, saltp, iterations).derive(password)
        return kdf_hmac_sha2(self.digest, tkey, b"kerberos", self.key_bytes * 8)

    def encrypt_with(self, ke: bytes, ki: bytes, plaintext: bytes, confounder: bytes) -> bytes:
        ciphertext = cts_encrypt(ke, ZERO_IV, confounder + plaintext)
        mac = hmac_digest(ki, ZERO_IV + ciphertext, self.digest)[: self.mac_bytes]
        return ciphertext + mac

    def decrypt_with(self, ke: bytes, ki: bytes, ciphertext: bytes) -> bytes:
        if len(ciphertext) < BLOCK + self.mac_bytes:
            raise IntegrityError("CIPHERTEXT_TOO_SHORT", f"{len(ciphertext)} bytes")
        body, mac = ciphertext[: -self.mac_bytes], ciphertext[-self.mac_bytes :]
        expected = hmac_digest(ki, ZERO_IV + body, self.digest)[: self.mac_bytes]
        if not hmac.compare_digest(mac, expected):
            raise IntegrityError("BAD_INTEGRITY", f"HMAC-{self.digest.upper()} mismatch")
        return cts_decrypt(ke, ZERO_IV, body)[BLOCK:]

    def checksum_with(self, kc: bytes, data: bytes) -> bytes:
        return hmac_digest(kc, data, self.digest)[: self.mac_bytes]

    def prf(self, key: bytes, data: bytes) -> bytes:
        """RFC 8009 §5: KDF-HMAC-SHA2(key, "prf", data, 256 or 384)."""
        nbits = 256 if self.digest == "sha256" else 384
        return kdf_hmac_sha2(self.digest, key, b"prf", nbits, data)


AES128_CTS_HMAC_SHA256_128 = AesSha2(19, "aes128-cts-hmac-sha256-128", 19, 16, "sha256", 16)
AES256_CTS_HMAC_SHA384_192 = AesSha2(20, "aes256-cts-hmac-sha384-192", 20, 32, "sha384", 24)
