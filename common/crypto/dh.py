"""Diffie-Hellman for PKINIT (RFC 4556 §3.2.3.1, RFC 5349): the MODP groups of RFC 2409 §6.2
and RFC 3526, recognised by value, and ECDH on P-256/P-384.

This is the one place finite-field DH touches pyca/cryptography, which deprecates FFDH (see
../shared/DESIGN.md): replacing the backend later is a change to this module only.

The MODP primes are not transcribed: each is defined (RFC 2409 §6.2, RFC 3526 §2-5) as
    p = 2^n - 2^(n-64) - 1 + 2^64 * ( floor(2^(n-130) * pi) + k ),  g = 2,
and is computed here from that formula. Tests compare the result with the primes inside MIT's
own PKINIT messages.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives.asymmetric import dh, ec

# (bits, k) for the named MODP groups: RFC 2409 group 2, RFC 3526 groups 14-18.
MODP_GROUPS: dict[int, tuple[int, int]] = {
    2: (1024, 129093),
    14: (2048, 124476),
    15: (3072, 1690314),
    16: (4096, 240904),
    17: (6144, 929484),
    18: (8192, 4743158),
}


def _pi_fixed(bits: int) -> int:
    """floor(pi * 2^bits), by Machin's formula in integer arithmetic (with guard bits)."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(x: int) -> int:
        total = term = one // x
        x2, n, sign = x * x, 3, -1
        while term:
            term //= x2
            total += sign * (term // n)
            n += 2
            sign = -sign
        return total

    return (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> guard


@cache
def modp_prime(group: int) -> int:
    """The prime of MODP group `group` (2 or 14-18), from its defining formula."""
    n, k = MODP_GROUPS[group]
    return (1 << n) - (1 << (n - 64)) - 1 + (1 << 64) * ((_pi_fixed(n - 130)) + k)


@dataclass(frozen=True, slots=True)
class ModpGroup:
    number: int
    bits: int
    p: int
    g: int = 2

    @property
    def q(self) -> int:
        """The Sophie Germain prime (p-1)/2 that RFC 3279 DomainParameters carry."""
        return (self.p - 1) // 2


@cache
def known_groups() -> tuple[ModpGroup, ...]:
    return tuple(ModpGroup(number, bits, modp_prime(number))
                 for number, (bits, _) in MODP_GROUPS.items())


def identify_group(p: int, g: int) -> ModpGroup | None:
    """The named group with this p and g, or None: PKINIT groups are recognised by value."""
    for group in known_groups():
        if group.p == p and group.g == g:
            return group
    return None


def _parameters(group: ModpGroup) -> dh.DHParameters:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dh.DHParameterNumbers(group.p, group.g, group.q).parameters()


@dataclass(frozen=True, slots=True)
class DhKeyPair:
    """One side's ephemeral FFDH key (the private key never leaves this object)."""

    group: ModpGroup
    _private: dh.DHPrivateKey

    @property
    def public_value(self) -> int:
        return self._private.public_key().public_numbers().y

    def shared_secret(self, peer_public: int) -> bytes:
        """g^xy mod p, big-endian, left-padded to the byte length of p (RFC 4556 §3.2.3.1).

        Raises ValueError for a public value outside 2..p-2 (a small-subgroup probe).
        """
        p = self.group.p
        if not 1 < peer_public < p - 1:
            raise ValueError("DH public value out of range")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer = dh.DHPublicNumbers(peer_public, _parameters(self.group).parameter_numbers())
            secret = self._private.exchange(peer.public_key())
        return secret.rjust((p.bit_length() + 7) // 8, b"\x00")


# The OpenSSL inside pyca/cryptography refuses to generate keys in MODP group 2 (1024 bits):
# the smallest group telekey can take part in.
SMALLEST_DH_BITS = 2048


def generate_dh(group: ModpGroup) -> DhKeyPair:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DhKeyPair(group, _parameters(group).generate_private_key())


# --- ECDH (RFC 5349) -----------------------------------------------------------------------

CURVES: dict[str, ec.EllipticCurve] = {
    "1.2.840.10045.3.1.7": ec.SECP256R1(),
    "1.3.132.0.34": ec.SECP384R1(),
}


@dataclass(frozen=True, slots=True)
class EcdhKeyPair:
    curve_oid: str
    _private: ec.EllipticCurvePrivateKey

    @property
    def public_point(self) -> bytes:
        """The uncompressed ECPoint (RFC 5480 §2.2), as KDCDHKeyInfo.subjectPublicKey holds."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self._private.public_key().public_bytes(Encoding.X962,
                                                       PublicFormat.UncompressedPoint)

    def shared_secret(self, peer_point: bytes) -> bytes:
        """The x-coordinate of the shared point, fixed length (RFC 5349 §4; ValueError if bad)."""
        peer = ec.EllipticCurvePublicKey.from_encoded_point(CURVES[self.curve_oid], peer_point)
        return self._private.exchange(ec.ECDH(), peer)


def generate_ecdh(curve_oid: str) -> EcdhKeyPair:
    if curve_oid not in CURVES:
        raise ValueError(f"unsupported curve {curve_oid}")
    return EcdhKeyPair(curve_oid, ec.generate_private_key(CURVES[curve_oid]))
