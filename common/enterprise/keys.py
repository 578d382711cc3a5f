"""Seed 002's key hierarchy (no I/O): K_m from the administered seed, K_g per generator g,
the check value CV_m that names K_m, K_a (message authentication) and K_s (the session key)
from K_g and the extension's PIN, and the ICV that K_a keys. HMAC is RFC 2104; an "-N"
suffix is the RFC 2104 §5 truncation to the leftmost N bits.

| value | `seed` profile (the document's formulas) | `default` profile |
|---|---|---|
| K_m | SHA-1(S), 20 bytes | SHA-256(S), 32 bytes |
| K_g | HMAC-SHA1(key g, msg K_m), first 16 bytes | HMAC-SHA256(key K_m, msg g), 32 bytes |
| CV_m | last 3 bytes of SHA-1(K_m) | last 3 bytes of HMAC-SHA256(K_m, C_CV) |
| K_a | HMAC-SHA1(K_g, C_a‖PIN), first 16 bytes | HMAC-SHA256(K_g, C_a‖PIN), 32 bytes |
| K_s | HMAC-SHA1(K_g, C_b‖PIN‖Re‖Rg), first 16 | HMAC-SHA256(K_g, C_b‖PIN‖Re‖Rg), 32 |
| ICV | HMAC-SHA1(K_a, data), first 12 bytes | HMAC-SHA256(K_a, data), first 16 bytes |

The document writes HMAC's key first (as RFC 2104 does, and as its K_a and K_s need), so its
K_g is keyed with g over K_m; the default profile keys it with K_m, as a KDF should be keyed,
which is what lets a token that holds K_m as a non-extractable secret compute K_g and CV_m.

Encodings: the seed S is at least 16 bytes; PIN is 4 to 16 ASCII decimal digits; Re and Rg
are exactly 16 bytes (128 bits, as the document says), so C_b‖PIN‖Re‖Rg parses one way only
(the nonces from the end). C_a and C_b are 21 ASCII bytes that differ in their last byte, so
no K_a input is ever a K_s input; C_CV is 22 bytes and g is 16, so CV_m's input is never a
generator's.
"""

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from common.errors import ModifiedError

C_A: Final = b"telekey-enterprise-Ka"
C_B: Final = b"telekey-enterprise-Ks"
C_CV: Final = b"telekey-enterprise-CVm"
SEED_MIN_BYTES: Final = 16
SEED_MAX_BYTES: Final = 1024
NONCE_BYTES: Final = 16
GENERATOR_BYTES: Final = 16
CHECK_VALUE_BYTES: Final = 3
PIN_MIN_DIGITS: Final = 4
PIN_MAX_DIGITS: Final = 16


class Profile(StrEnum):
    """Which formulas: the document's (`seed`) or telekey's default."""

    DEFAULT = "default"
    SEED = "seed"


@dataclass(frozen=True, slots=True)
class ProfileSizes:
    """Byte lengths of each value in a profile."""

    master_key: int
    generator_key: int
    auth_key: int
    session_key: int
    icv: int


SIZES: Final = {
    Profile.SEED: ProfileSizes(master_key=20, generator_key=16, auth_key=16, session_key=16,
                               icv=12),
    Profile.DEFAULT: ProfileSizes(master_key=32, generator_key=32, auth_key=32,
                                  session_key=32, icv=16),
}


class IcvMismatch(ModifiedError):
    """An integrity check value did not verify under K_a (seed 002, FIG. 4: a bad ICV gets no
    answer at all)."""


def _digest(profile: Profile) -> str:
    return "sha1" if profile is Profile.SEED else "sha256"


def _hmac(key: bytes, data: bytes, profile: Profile) -> bytes:
    return hmac.digest(key, data, _digest(profile))


def _check_length(name: str, value: bytes, length: int) -> None:
    if len(value) != length:
        raise ValueError(f"{name} is {length} bytes, not {len(value)}")


def encode_pin(pin: str) -> bytes:
    """The PIN as HMAC data: its ASCII digits (4 to 16 of them), nothing else."""
    if not (PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS and pin.isascii() and pin.isdigit()):
        raise ValueError(f"a PIN is {PIN_MIN_DIGITS} to {PIN_MAX_DIGITS} decimal digits")
    return pin.encode("ascii")


def master_key_from_seed(seed: bytes, profile: Profile) -> bytes:
    """K_m = SHA-1(S) (seed profile) or SHA-256(S) (default). Two key servers given the same
    seed have the same K_m (seed 002, FIG. 2E)."""
    if not SEED_MIN_BYTES <= len(seed) <= SEED_MAX_BYTES:
        raise ValueError(f"a seed is {SEED_MIN_BYTES} to {SEED_MAX_BYTES} bytes")
    return hashlib.new(_digest(profile), seed).digest()


def generator_key(master_key: bytes, generator: bytes, profile: Profile) -> bytes:
    """K_g for generator g: HMAC-SHA-1-128(key g, msg K_m) (seed) or HMAC-SHA256(K_m, g)."""
    _check_length("K_m", master_key, SIZES[profile].master_key)
    _check_length("g", generator, GENERATOR_BYTES)
    if profile is Profile.SEED:
        return _hmac(generator, master_key, profile)[:SIZES[profile].generator_key]
    return _hmac(master_key, generator, profile)


def check_value(master_key: bytes, profile: Profile) -> bytes:
    """CV_m: the three low-order (last) bytes of SHA-1(K_m) (seed) or of HMAC-SHA256(K_m, C_CV)
    (default). It names K_m; it authenticates nothing."""
    _check_length("K_m", master_key, SIZES[profile].master_key)
    if profile is Profile.SEED:
        digest = hashlib.sha1(master_key).digest()
    else:
        digest = _hmac(master_key, C_CV, profile)
    return check_value_of(digest)


def check_value_of(digest: bytes) -> bytes:
    """The last CHECK_VALUE_BYTES bytes of a digest (what a token's HMAC returns, too)."""
    return digest[-CHECK_VALUE_BYTES:]


def auth_key(generator_key_: bytes, pin: str, profile: Profile) -> bytes:
    """K_a = HMAC(K_g, C_a‖PIN), truncated to 128 bits in the seed profile."""
    _check_length("K_g", generator_key_, SIZES[profile].generator_key)
    return _hmac(generator_key_, C_A + encode_pin(pin), profile)[:SIZES[profile].auth_key]


def session_key(generator_key_: bytes, pin: str, re: bytes, rg: bytes,
                profile: Profile) -> bytes:
    """K_s = HMAC(K_g, C_b‖PIN‖Re‖Rg), truncated to 128 bits in the seed profile; Re is the
    phone's nonce, Rg the application server's (16 bytes each)."""
    _check_length("K_g", generator_key_, SIZES[profile].generator_key)
    _check_length("Re", re, NONCE_BYTES)
    _check_length("Rg", rg, NONCE_BYTES)
    data = C_B + encode_pin(pin) + re + rg
    return _hmac(generator_key_, data, profile)[:SIZES[profile].session_key]


def compute_icv(auth_key_: bytes, data: bytes, profile: Profile) -> bytes:
    """ICV = HMAC-SHA1-96 (seed) or HMAC-SHA256-128 (default) of `data` under K_a."""
    _check_length("K_a", auth_key_, SIZES[profile].auth_key)
    return _hmac(auth_key_, data, profile)[:SIZES[profile].icv]


def verify_icv(auth_key_: bytes, data: bytes, icv: bytes, profile: Profile) -> None:
    """Raise IcvMismatch unless `icv` is the ICV of `data` (compared in constant time)."""
    if not hmac.compare_digest(compute_icv(auth_key_, data, profile), icv):
        raise IcvMismatch("BAD_ICV")
