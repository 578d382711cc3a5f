"""Long-term keys at rest, wrapped under a versioned master key, as MIT's KDC wraps principal
keys under K/M: one mechanism for every service that stores secrets (the KDC's principal
keys; later the controller's broker keys and PINs, a key server's, a provisioning service's).

- A **wrapped key** is RFC 5649 AES key wrap with padding of the plaintext key under a 256-bit
  key-encryption key (KEK), stored with the master key version number (mkvno) that made it.
- **KEK** = HMAC-SHA256(master key, `KEK_LABEL`). A token computes it with CKM_SHA256_HMAC
  on its own secret-key object, a stash computes it here: the same master key gives the same
  KEK wherever it lives, so a backup moves between a token and a stash.
- `MasterKeys` is a keyring {mkvno: KEK}; the newest version is current and wraps new keys.
- The **stash** (`encode_stash`) and the **backup** (`seal_backup`, passphrase by scrypt,
  every master key RFC 5649-wrapped, an HMAC over the rest) are small versioned JSON files.

docs/protocol.md ("Keys at rest") writes the formats down. No I/O here: runtime/
master_key_store.py reads and writes stashes and tokens.
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from common.errors import MasterKeyBackupError, MasterKeyIntegrityError, UnknownMasterKeyVersion

MASTER_KEY_BYTES = 32
KEK_BYTES = 32
KEK_LABEL = b"telekey master key: RFC 5649 key-encryption key"
STASH_FORMAT = "telekey-master-key-stash"
BACKUP_FORMAT = "telekey-master-key-backup"
FORMAT_VERSION = 1


def derive_kek(master_key: bytes) -> bytes:
    """KEK = HMAC-SHA256(master key, KEK_LABEL): what a token's CKM_SHA256_HMAC sign of
    KEK_LABEL with the same GENERIC_SECRET key returns."""
    if len(master_key) != MASTER_KEY_BYTES:
        raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes")
    return hmac.new(master_key, KEK_LABEL, hashlib.sha256).digest()


def wrap_key(kek: bytes, plaintext: bytes) -> bytes:
    """RFC 5649 §4.1 AES key wrap with padding (any AES key size for `kek`)."""
    return aes_key_wrap_with_padding(kek, plaintext)


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 5649 §4.2; MasterKeyIntegrityError when the check block does not verify."""
    try:
        return aes_key_unwrap_with_padding(kek, wrapped)
    except (InvalidUnwrap, ValueError) as exc:
        raise MasterKeyIntegrityError("BAD_INTEGRITY", f"RFC 5649 unwrap: {exc}") from exc


class KeyWrapper(Protocol):
    """What a database needs to keep keys at rest: `MasterKeys`, or runtime's reloading
    `MasterKeyring`."""

    @property
    def current(self) -> int: ...

    def wrap(self, plaintext: bytes) -> tuple[int, bytes]: ...

    def unwrap(self, mkvno: int, wrapped: bytes) -> bytes: ...


class MasterKeys:
    """A keyring {mkvno: KEK}. The newest version is current: `wrap` uses it, `unwrap` takes
    any version held. Never shows a KEK in its repr."""

    __slots__ = ("_keks", "current")

    def __init__(self, keks: Mapping[int, bytes]) -> None:
        if not keks:
            raise ValueError("a keyring needs at least one master key version")
        for mkvno, kek in keks.items():
            if mkvno < 1 or len(kek) != KEK_BYTES:
                raise ValueError(f"master key version {mkvno}: KEKs are {KEK_BYTES} bytes, "
                                 "versions count from 1")
        self._keks = dict(keks)
        self.current = max(self._keks)

    @classmethod
    def from_master_keys(cls, master_keys: Mapping[int, bytes]) -> "MasterKeys":
        """The keyring of raw master keys (a stash): each KEK by `derive_kek`."""
        return cls({mkvno: derive_kek(key) for mkvno, key in master_keys.items()})

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keks))

    def __contains__(self, mkvno: object) -> bool:
        return mkvno in self._keks

    def __repr__(self) -> str:
        return f"MasterKeys(versions={self.versions}, current={self.current})"

    def wrap(self, plaintext: bytes) -> tuple[int, bytes]:
        """(current mkvno, RFC 5649 wrap of `plaintext` under its KEK)."""
        return self.current, wrap_key(self._keks[self.current], plaintext)

    def unwrap(self, mkvno: int, wrapped: bytes) -> bytes:
        """The plaintext key; UnknownMasterKeyVersion or MasterKeyIntegrityError."""
        kek = self._keks.get(mkvno)
        if kek is None:
            raise UnknownMasterKeyVersion("UNKNOWN_MKVNO",
                                          f"mkvno {mkvno}; keyring holds {self.versions}")
        return unwrap_key(kek, wrapped)


# --- the stash: every master key version in plaintext, for labs (a file with mode 0600) ---


def encode_stash(service: str, master_keys: Mapping[int, bytes]) -> bytes:
    """The stash file: {"format", "version": 1, "service", "keys": [{"mkvno", "key"}]}, keys
    in base64, oldest first."""
    for key in master_keys.values():
        if len(key) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes")
    document = {"format": STASH_FORMAT, "version": FORMAT_VERSION, "service": service,
                "keys": [{"mkvno": mkvno, "key": _b64(master_keys[mkvno])}
                         for mkvno in sorted(master_keys)]}
    return (json.dumps(document, indent=1) + "\n").encode()


def decode_stash(data: bytes) -> tuple[str, dict[int, bytes]]:
    """(service, {mkvno: master key}); MasterKeyBackupError for anything else."""
    document = _document(data, STASH_FORMAT)
    keys = _versioned(document, "key")
    for mkvno, key in keys.items():
        if len(key) != MASTER_KEY_BYTES:
            raise MasterKeyBackupError("BAD_STASH", f"master key {mkvno} is {len(key)} bytes")
    return _text(document, "service"), keys


# --- the backup: every master key wrapped under a passphrase ------------------------------


@dataclass(frozen=True)
class ScryptParams:
    """RFC 7914 parameters; the defaults cost about 32 MiB and 0.1 s here."""

    salt: bytes
    n: int = 1 << 15
    r: int = 8
    p: int = 1

    @classmethod
    def new(cls, n: int = 1 << 15, random: Callable[[int], bytes] = os.urandom
            ) -> "ScryptParams":
        return cls(random(16), n)


# Limits on what a backup file may ask of scrypt: a file is input, and n = 2^30 would take
# the host's memory.
_SCRYPT_MAX_MEMORY = 1 << 30
_SCRYPT_MIN_N = 1 << 14


@dataclass(frozen=True)
class BackupKeys:
    wrapping_key: bytes  # the RFC 5649 KEK for every master key in the file (AES-256)
    mac_key: bytes  # HMAC-SHA256 over the rest of the file


def derive_backup_keys(passphrase: bytes, params: ScryptParams) -> BackupKeys:
    """scrypt(passphrase, salt, n, r, p) → 64 bytes: wrapping key ‖ MAC key."""
    if not passphrase:
        raise ValueError("an empty passphrase")
    okm = Scrypt(salt=params.salt, length=64, n=params.n, r=params.r, p=params.p).derive(
        passphrase)
    return BackupKeys(okm[:32], okm[32:])


@dataclass(frozen=True)
class Backup:
    service: str
    kdf: ScryptParams
    wrapped: dict[int, bytes]  # mkvno -> RFC 5649 wrap of the master key (C_WrapKey output)


def seal_backup(backup: Backup, keys: BackupKeys) -> bytes:
    """The backup file: {"format", "version": 1, "service", "kdf": {"name": "scrypt", "salt",
    "n", "r", "p"}, "keys": [{"mkvno", "wrapped"}], "mac"}; "mac" is HMAC-SHA256 under the MAC
    key of the canonical JSON (sorted keys, no spaces) of everything else."""
    document = _backup_document(backup)
    document["mac"] = _b64(_backup_mac(document, keys.mac_key))
    return (json.dumps(document, indent=1) + "\n").encode()


def read_backup(data: bytes) -> Backup:
    """Parse a backup without the passphrase (which versions, which service); not verified."""
    document = _document(data, BACKUP_FORMAT)
    kdf = document.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise MasterKeyBackupError("BAD_BACKUP", "kdf must be scrypt")
    params = ScryptParams(_bytes(kdf, "salt"), _int(kdf, "n"), _int(kdf, "r"), _int(kdf, "p"))
    if (params.n < _SCRYPT_MIN_N or params.n & (params.n - 1) or not 1 <= params.r <= 64
            or not 1 <= params.p <= 16 or 128 * params.r * params.n > _SCRYPT_MAX_MEMORY):
        raise MasterKeyBackupError("BAD_BACKUP", "scrypt parameters out of range")
    return Backup(_text(document, "service"), params, _versioned(document, "wrapped"))


def open_backup(data: bytes, passphrase: bytes) -> tuple[Backup, BackupKeys]:
    """Parse and verify a backup: the backup and the keys its passphrase gives (the wrapping
    key unwraps each master key, in Python or by C_UnwrapKey in a token).
    MasterKeyBackupError for a malformed file or a wrong passphrase."""
    backup = read_backup(data)
    document = _document(data, BACKUP_FORMAT)
    keys = derive_backup_keys(passphrase, backup.kdf)
    mac = _bytes(document, "mac")
    if not hmac.compare_digest(mac, _backup_mac(_backup_document(backup), keys.mac_key)):
        raise MasterKeyBackupError("BAD_PASSPHRASE",
                                   "the backup does not verify: wrong passphrase or changed file")
    return backup, keys


def _backup_document(backup: Backup) -> dict[str, Any]:
    kdf = backup.kdf
    return {"format": BACKUP_FORMAT, "version": FORMAT_VERSION, "service": backup.service,
            "kdf": {"name": "scrypt", "salt": _b64(kdf.salt), "n": kdf.n, "r": kdf.r,
                    "p": kdf.p},
            "keys": [{"mkvno": mkvno, "wrapped": _b64(backup.wrapped[mkvno])}
                     for mkvno in sorted(backup.wrapped)]}


def _backup_mac(document: dict[str, Any], mac_key: bytes) -> bytes:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(mac_key, canonical, hashlib.sha256).digest()


# --- strict JSON field access: every failure is MasterKeyBackupError ----------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _document(data: bytes, kind: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MasterKeyBackupError("BAD_FILE", f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != kind:
        raise MasterKeyBackupError("BAD_FILE", f"not a {kind} file")
    if document.get("version") != FORMAT_VERSION:
        raise MasterKeyBackupError("BAD_FILE", f"{kind} version {document.get('version')!r}")
    return document


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise MasterKeyBackupError("BAD_FILE", f"{name} must be a string")
    return value


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MasterKeyBackupError("BAD_FILE", f"{name} must be an integer")
    return value


def _bytes(obj: dict[str, Any], name: str) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise MasterKeyBackupError("BAD_FILE", f"{name} must be base64")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise MasterKeyBackupError("BAD_FILE", f"{name}: {exc}") from exc


def _versioned(document: dict[str, Any], field: str) -> dict[int, bytes]:
    entries = document.get("keys")
    if not isinstance(entries, list) or not entries:
        raise MasterKeyBackupError("BAD_FILE", "keys must be a non-empty list")
    result: dict[int, bytes] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise MasterKeyBackupError("BAD_FILE", "a key entry must be an object")
        mkvno = _int(entry, "mkvno")
        if mkvno < 1 or mkvno in result:
            raise MasterKeyBackupError("BAD_FILE", f"mkvno {mkvno} invalid or repeated")
        result[mkvno] = _bytes(entry, field)
    return result
