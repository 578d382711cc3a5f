"""Kerberos keys: the enctype registry, a Key that caches its usage keys, and the RFC 6113 §5.1
PRF+ and KRB-FX-CF2 functions."""

import hmac
import os
from collections.abc import Callable, Iterable

from common.crypto.aes_sha1 import AES128_CTS_HMAC_SHA1_96, AES256_CTS_HMAC_SHA1_96
from common.crypto.aes_sha2 import AES128_CTS_HMAC_SHA256_128, AES256_CTS_HMAC_SHA384_192
from common.crypto.rfc3961 import KC, KE, KI, EncTypeProfile, usage_constant
from common.errors import ChecksumTypeNotSupported, EncTypeNotSupported, ModifiedError

_PROFILES: dict[int, EncTypeProfile] = {
    p.enctype: p
    for p in (AES256_CTS_HMAC_SHA384_192, AES128_CTS_HMAC_SHA256_128,
              AES256_CTS_HMAC_SHA1_96, AES128_CTS_HMAC_SHA1_96)
}
_BY_CKSUMTYPE: dict[int, EncTypeProfile] = {p.cksumtype: p for p in _PROFILES.values()}


def get_enctype(enctype: int) -> EncTypeProfile:
    """The profile for `enctype`, or EncTypeNotSupported."""
    try:
        return _PROFILES[enctype]
    except KeyError:
        raise EncTypeNotSupported("ETYPE_NOSUPP", f"enctype {enctype}") from None


def supported_enctypes() -> tuple[int, ...]:
    """Supported enctypes, strongest first (the order a KDC prefers them in)."""
    return tuple(_PROFILES)


def profile_for_cksumtype(cksumtype: int) -> EncTypeProfile:
    """The enctype whose mandatory checksum is `cksumtype`, or ChecksumTypeNotSupported."""
    try:
        return _BY_CKSUMTYPE[cksumtype]
    except KeyError:
        raise ChecksumTypeNotSupported("SUMTYPE_NOSUPP", f"cksumtype {cksumtype}") from None


_PRF_SLOT = (-1, 0)  # where Key keeps DK(key, "prf") among its usage keys


class Key:
    """A Kerberos protocol key (RFC 4120 EncryptionKey) with its usage keys cached.

    Usage keys are derived once per (usage, kind) and kept on the instance, which makes a
    service key that decrypts thousands of tickets cost one derivation, not thousands.
    """

    __slots__ = ("enctype", "data", "profile", "_usage_keys", "_kept")

    def __init__(self, enctype: int, data: bytes) -> None:
        self.profile = get_enctype(enctype)
        if len(data) != self.profile.key_bytes:
            raise ValueError(f"{self.profile.name} keys are {self.profile.key_bytes} bytes")
        self.enctype = enctype
        self.data = bytes(data)
        self._usage_keys: dict[tuple[int, int], bytes] = {}
        self._kept: dict[tuple[bytes, int], bytes] | None = None  # prf_plus(keep=True)

    def __repr__(self) -> str:  # never show key bytes
        return f"Key({self.profile.name})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return self.enctype == other.enctype and hmac.compare_digest(self.data, other.data)

    def __hash__(self) -> int:
        return hash((self.enctype, self.data))

    @classmethod
    def from_string(cls, enctype: int, password: bytes, salt: bytes,
                    params: bytes | None = None) -> "Key":
        """string-to-key (RFC 3962 §4 / RFC 8009 §4)."""
        profile = get_enctype(enctype)
        return cls(enctype, profile.string_to_key(password, salt, params))

    @classmethod
    def random(cls, enctype: int, random: Callable[[int], bytes] = os.urandom) -> "Key":
        """A fresh random key (random-to-key of a random seed)."""
        profile = get_enctype(enctype)
        return cls(enctype, profile.random_to_key(random(profile.seed_bytes)))

    def usage_key(self, usage: int, kind: int) -> bytes:
        """Kc, Ke or Ki for `usage` (RFC 3961 §5.3), derived once."""
        cache_key = (usage, kind)
        derived = self._usage_keys.get(cache_key)
        if derived is None:
            derived = self.profile.derive(self.data, usage, kind)
            self._usage_keys[cache_key] = derived
        return derived

    def prepare(self, slots: Iterable[tuple[int, int]], *, prf: bool = False) -> None:
        """Derive these (usage, kind) keys, and the PRF's key, now and together: one batch of
        raw AES for the simplified profile, where deriving them one by one costs a call per
        block. Only a speed-up: keys are derived on first use anyway."""
        dk_many = getattr(self.profile, "dk_many", None)
        if dk_many is None:
            return
        wanted = [slot for slot in slots if slot not in self._usage_keys]
        constants = [usage_constant(usage, kind) for usage, kind in wanted]
        if prf and _PRF_SLOT not in self._usage_keys:
            wanted.append(_PRF_SLOT)
            constants.append(b"prf")  # RFC 3962 §6: the PRF runs on DK(key, "prf")
        if wanted:
            for slot, derived in zip(wanted, dk_many(self.data, constants), strict=True):
                self._usage_keys[slot] = derived

    def encrypt(self, usage: int, plaintext: bytes, *, confounder: bytes | None = None) -> bytes:
        """Encrypt for `usage`; `confounder` is the test hook that makes vectors reproduce."""
        if confounder is None:
            confounder = os.urandom(self.profile.confounder_bytes)
        elif len(confounder) != self.profile.confounder_bytes:
            raise ValueError("wrong confounder length")
        return self.profile.encrypt_with(self.usage_key(usage, KE), self.usage_key(usage, KI),
                                         plaintext, confounder)

    def decrypt(self, usage: int, ciphertext: bytes) -> bytes:
        """Decrypt and verify for `usage`. Raises IntegrityError."""
        return self.profile.decrypt_with(self.usage_key(usage, KE), self.usage_key(usage, KI),
                                         ciphertext)

    def checksum(self, usage: int, data: bytes) -> bytes:
        """The enctype's mandatory keyed checksum (RFC 3961 §4) over `data`."""
        return self.profile.checksum_with(self.usage_key(usage, KC), data)

    def verify_checksum(self, usage: int, data: bytes, checksum: bytes,
                        cksumtype: int | None = None) -> None:
        """Raise ModifiedError unless `checksum` is this key's checksum of `data`."""
        if cksumtype is not None and cksumtype != self.profile.cksumtype:
            profile_for_cksumtype(cksumtype)  # raises SUMTYPE_NOSUPP for unknown types
            raise ModifiedError("CKSUMTYPE_MISMATCH", f"{cksumtype} with {self.profile.name}")
        if not hmac.compare_digest(self.checksum(usage, data), checksum):
            raise ModifiedError("BAD_CHECKSUM")

    def _prf_key(self) -> bytes | None:
        """DK(key, "prf") for a PRF that runs on a derived key (RFC 3962), derived once."""
        prf_key = getattr(self.profile, "prf_key", None)
        if prf_key is None:
            return None
        derived = self._usage_keys.get(_PRF_SLOT)
        if derived is None:
            derived = self._usage_keys[_PRF_SLOT] = prf_key(self.data)
        return derived

    def prf(self, data: bytes, *, keep: bool = False) -> bytes:
        """The enctype's PRF (RFC 3961 §3, RFC 3962 §6, RFC 8009 §5); `keep` as for
        `prf_plus`."""
        if keep:
            return self._remember(data, 0)
        derived = self._prf_key()
        if derived is None:
            return self.profile.prf(self.data, data)
        result: bytes = self.profile.prf_with(derived, data)  # type: ignore[attr-defined]
        return result

    def _remember(self, data: bytes, nbytes: int) -> bytes:
        """A PRF output kept on this key (nbytes 0: the PRF itself, else PRF+ of nbytes)."""
        kept = self._kept if self._kept is not None else {}
        self._kept = kept
        remembered = kept.get((data, nbytes))
        if remembered is None:
            remembered = self.prf(data) if nbytes == 0 else self.prf_plus(data, nbytes)
            kept[(data, nbytes)] = remembered
        return remembered

    def prf_plus(self, data: bytes, nbytes: int, *, keep: bool = False) -> bytes:
        """RFC 6113 §5.1 PRF+: PRF(key, 1|data) | PRF(key, 2|data) | ... truncated. `keep`:
        remember the result on this key (a key derived from it for every message, such as a
        ticket session key's PacketCable HMAC key while the ticket cache holds the key)."""
        if keep:
            return self._remember(data, nbytes)
        derived = self._prf_key()
        if derived is not None:
            result: bytes = self.profile.prf_plus_with(  # type: ignore[attr-defined]
                derived, data, nbytes)
            return result
        out = b""
        counter = 1
        while len(out) < nbytes:
            out += self.prf(bytes([counter]) + data)
            counter += 1
        return out[:nbytes]


def cf2(key1: Key, key2: Key, pepper1: bytes, pepper2: bytes) -> Key:
    """RFC 6113 §5.1 KRB-FX-CF2: random-to-key(PRF+(k1, p1) XOR PRF+(k2, p2)), enctype of key1."""
    profile = key1.profile
    a = key1.prf_plus(pepper1, profile.seed_bytes)
    b = key2.prf_plus(pepper2, profile.seed_bytes)
    return Key(key1.enctype, profile.random_to_key(bytes(x ^ y for x, y in zip(a, b, strict=True))))
