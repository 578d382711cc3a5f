"""PKINIT reply-key derivation: RFC 4556 §3.2.3.1 octetstring2key and the RFC 8636 KDFs."""

import hashlib

from common.crypto.keys import Key, get_enctype

# RFC 8636 §4 id-pkinit-kdf-ah-* OIDs and their hashes.
KDF_HASHES: dict[str, str] = {
    "1.3.6.1.5.2.3.6.1": "sha1",
    "1.3.6.1.5.2.3.6.2": "sha256",
    "1.3.6.1.5.2.3.6.3": "sha512",
    "1.3.6.1.5.2.3.6.4": "sha384",
}


def octetstring2key(x: bytes, enctype: int) -> Key:
    """RFC 4556 §3.2.3.1: random-to-key(K-truncate(SHA1(0x00|x) | SHA1(0x01|x) | ...)).

    `x` is DHSharedSecret | n_c | n_k (the nonces only when both sides sent one).
    """
    profile = get_enctype(enctype)
    out = b""
    counter = 0
    while len(out) < profile.seed_bytes:
        out += hashlib.sha1(bytes([counter]) + x).digest()
        counter += 1
    return Key(enctype, profile.random_to_key(out[: profile.seed_bytes]))


def pkinit_kdf_random(kdf_oid: str, z: bytes, other_info: bytes, nbytes: int) -> bytes:
    """RFC 8636 §3: Hash(counter_be32 | Z | OtherInfo) blocks, counter from 1, truncated.

    `other_info` is the DER OtherInfo (see common.messages.pkinit.encode_other_info).
    """
    digest = KDF_HASHES.get(kdf_oid)
    if digest is None:
        raise ValueError(f"unknown PKINIT KDF {kdf_oid}")
    out = b""
    counter = 1
    while len(out) < nbytes:
        out += hashlib.new(digest, counter.to_bytes(4, "big") + z + other_info).digest()
        counter += 1
    return out[:nbytes]


def pkinit_kdf(kdf_oid: str, z: bytes, other_info: bytes, enctype: int) -> Key:
    """RFC 8636 §3: the reply key, random-to-key of the KDF output of the seed length."""
    profile = get_enctype(enctype)
    seed = pkinit_kdf_random(kdf_oid, z, other_info, profile.seed_bytes)
    return Key(enctype, profile.random_to_key(seed))
