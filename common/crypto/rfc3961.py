"""RFC 3961 building blocks: n-fold (§5.1) and the enctype profile interface that
the simplified profile (§5.3) and RFC 8009 implement."""

import functools
import struct
from abc import ABC, abstractmethod

# Derived-key constants of the simplified profile (RFC 3961 §5.3): usage | 0x99 / 0xAA / 0x55.
KC, KE, KI = 0x99, 0xAA, 0x55


@functools.lru_cache(maxsize=4096)
def nfold(data: bytes, nbytes: int) -> bytes:
    """RFC 3961 §5.1 n-fold: stretch or shrink `data` to `nbytes` bytes.

    Copies of the input, each rotated right by 13 bits more than the last, are concatenated up to
    lcm(len(data), nbytes) bytes and the `nbytes`-sized chunks are added with ones'-complement
    arithmetic (end-around carry).
    """
    inlen = len(data)
    if inlen == 0 or nbytes <= 0:
        raise ValueError("n-fold needs a non-empty input and a positive output size")
    a, b = inlen, nbytes
    while b:
        a, b = b, a % b
    lcm = inlen * nbytes // a
    bits = inlen * 8
    value = int.from_bytes(data, "big")
    mask = (1 << bits) - 1
    stream = bytearray()
    for i in range(lcm // inlen):
        shift = (13 * i) % bits
        rotated = ((value >> shift) | (value << (bits - shift))) & mask
        stream += rotated.to_bytes(inlen, "big")
    total = 0
    modulus = (1 << (nbytes * 8)) - 1
    for off in range(0, lcm, nbytes):
        total += int.from_bytes(stream[off : off + nbytes], "big")
    while total > modulus:
        total = (total & modulus) + (total >> (nbytes * 8))
    return total.to_bytes(nbytes, "big")


def usage_constant(usage: int, kind: int) -> bytes:
    """The 5-octet well-known constant of RFC 3961 §5.3: usage (big-endian 32 bits) | kind."""
    return struct.pack(">IB", usage, kind)


class EncTypeProfile(ABC):
    """One Kerberos encryption type: the operations RFC 3961 §3 requires of it.

    Methods take raw key bytes; `common.crypto.keys.Key` caches the usage-derived keys so a
    long-lived service key derives Ke/Ki once per usage.
    """

    enctype: int
    name: str
    cksumtype: int
    key_bytes: int  # protocol key size
    seed_bytes: int  # key-generation seed length (random-to-key input)
    default_iterations: int

    def random_to_key(self, seed: bytes) -> bytes:
        """RFC 3961 random-to-key; the identity for every AES enctype."""
        if len(seed) != self.seed_bytes:
            raise ValueError(f"random-to-key needs {self.seed_bytes} bytes")
        return seed

    @abstractmethod
    def derive(self, key: bytes, usage: int, kind: int) -> bytes:
        """The usage key Kc, Ke or Ki (kind = KC, KE or KI) for `usage`."""

    @abstractmethod
    def string_to_key(self, password: bytes, salt: bytes, params: bytes | None = None) -> bytes:
        """The enctype's string-to-key; `params` is the s2kparams octet string."""

    @abstractmethod
    def encrypt_with(self, ke: bytes, ki: bytes, plaintext: bytes, confounder: bytes) -> bytes:
        """Encrypt with already-derived Ke/Ki and the given confounder."""

    @abstractmethod
    def decrypt_with(self, ke: bytes, ki: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and verify with already-derived Ke/Ki. Raises IntegrityError."""

    @abstractmethod
    def checksum_with(self, kc: bytes, data: bytes) -> bytes:
        """Keyed checksum with an already-derived Kc."""

    @abstractmethod
    def prf(self, key: bytes, data: bytes) -> bytes:
        """The enctype's pseudo-random function (RFC 3961 §3)."""

    @property
    @abstractmethod
    def confounder_bytes(self) -> int:
        """Length of the random confounder prepended to the plaintext."""


def des3_random_to_key(seed: bytes) -> bytes:
    """RFC 3961 §6.3.1 random-to-key for des3 (21 bytes -> 24-byte key with odd parity).

    Only the RFC 8636 KDF needs this here: its SHA-512 test vector targets des3-cbc-sha1-kd.
    Each 7-byte group becomes 8 bytes; the eighth collects the low bits of the first seven, and
    every byte's low bit is then set for odd parity.
    """
    if len(seed) != 21:
        raise ValueError("des3 random-to-key needs 21 bytes")
    out = bytearray()
    for group in range(3):
        chunk = bytearray(seed[group * 7 : group * 7 + 7])
        last = 0
        for i, byte in enumerate(chunk):
            last |= (byte & 1) << (i + 1)
        chunk.append(last)
        for i, byte in enumerate(chunk):
            chunk[i] = (byte & 0xFE) | (1 - bin(byte >> 1).count("1") % 2)
        out += chunk
    return bytes(out)
