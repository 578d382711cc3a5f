"""Where a service's master key lives: a stash file (labs) or a PKCS#11 token. The mechanism
(RFC 5649 wrapping, KEK derivation, the stash and backup formats) is
common/crypto/master_key.py; this module does the I/O, for any service by name (`kdc` now;
the controller, a key server and provisioning later, each with its own master key).

- `StashStore`: one file, mode 0600 (refused otherwise), holding every master key version;
  rewritten whole into a new 0600 file renamed over the old one, under a lock file.
- `TokenStore`: one SENSITIVE, EXTRACTABLE GENERIC_SECRET token object per version, labelled
  `telekey-master-<service>-<mkvno>`. The KEK is its CKM_SHA256_HMAC signature of KEK_LABEL,
  made inside the token: the master key never enters this process (SoftHSM2 2.6.1 refuses
  CKM_AES_KEY_WRAP_PAD through C_Encrypt, so the wrap itself cannot stay in the token). A
  backup is C_WrapKey (CKM_AES_KEY_WRAP_PAD) under a session key made from the passphrase:
  the same bytes a stash's backup holds, so either restores into either.
- `MasterKeyring`: the `KeyWrapper` a database uses; on a key under a version it does not
  hold (another process rotated the master key) it loads the store again.

A store is used from one thread (token calls must be, ../shared/pkcs11-notes.md).
"""

import fcntl
import functools
import hmac
import math
import os
import re
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from common.crypto.master_key import (
    KEK_LABEL,
    MASTER_KEY_BYTES,
    Backup,
    MasterKeys,
    ScryptParams,
    decode_stash,
    derive_backup_keys,
    encode_stash,
    open_backup,
    seal_backup,
    unwrap_key,
    wrap_key,
)
from common.errors import MasterKeyBackupError, MasterKeyError
from common.log import get_logger
from runtime.key_files import write_secret_file

if TYPE_CHECKING:
    import pkcs11

log = get_logger(__name__)
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class MasterKeyStoreError(MasterKeyError):
    """The stash or token cannot be used as asked (missing, readable by others, a version
    that differs from the one being imported...)."""


class MasterKeyStore(Protocol):
    """A service's master key versions, wherever they are kept."""

    service: str

    def describe(self) -> str: ...

    def versions(self) -> list[int]: ...

    def load(self) -> MasterKeys: ...

    def add_version(self) -> int: ...

    def remove_versions(self, mkvnos: Collection[int]) -> None: ...

    def export_backup(self, passphrase: bytes, params: ScryptParams | None = None) -> bytes: ...

    def import_backup(self, data: bytes, passphrase: bytes) -> list[int]: ...

    def close(self) -> None: ...


def _check_service(service: str) -> str:
    if not SERVICE_NAME.fullmatch(service):
        raise ValueError(f"service name {service!r}: lower-case letters, digits and '-'")
    return service


def _service_of(backup: Backup, service: str) -> None:
    if backup.service != service:
        raise MasterKeyBackupError("WRONG_SERVICE",
                                   f"the backup holds {backup.service!r}'s master key, not "
                                   f"{service!r}'s")


class StashStore:
    """The master key in a stash file (every version, in plaintext: labs only)."""

    def __init__(self, path: Path, service: str) -> None:
        self.path = path
        self.service = _check_service(service)

    def describe(self) -> str:
        return f"stash {self.path}"

    def _read(self) -> dict[int, bytes]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MasterKeyStoreError(
                "NO_STASH", f"no master key stash at {self.path} (`telekey realm init` "
                "creates one; `realm import-master` restores one)") from None
        with os.fdopen(fd, "rb") as stash:
            # The mode of the file opened, not of a name that could be swapped meanwhile.
            mode = os.fstat(stash.fileno()).st_mode & 0o777
            if mode & 0o077:
                raise MasterKeyStoreError(
                    "STASH_MODE", f"{self.path} has mode {mode:04o}: a master key stash must "
                    f"be readable by its owner only; refusing to use it (chmod 600 {self.path})")
            data = stash.read()
        service, keys = decode_stash(data)
        if service != self.service:
            raise MasterKeyStoreError("WRONG_SERVICE",
                                      f"{self.path} is {service!r}'s stash, not {self.service!r}'s")
        return keys

    def _read_or_empty(self) -> dict[int, bytes]:
        return self._read() if self.path.exists() else {}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two rekeys racing must not lose a version)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def versions(self) -> list[int]:
        return sorted(self._read_or_empty())

    def load(self) -> MasterKeys:
        return MasterKeys.from_master_keys(self._read())

    def add_version(self) -> int:
        with self._locked():
            keys = self._read_or_empty()
            mkvno = max(keys, default=0) + 1
            keys[mkvno] = os.urandom(MASTER_KEY_BYTES)
            write_secret_file(self.path, encode_stash(self.service, keys))
        return mkvno

    def remove_versions(self, mkvnos: Collection[int]) -> None:
        with self._locked():
            keys = self._read()
            remaining = {v: key for v, key in keys.items() if v not in mkvnos}
            if not remaining:
                raise MasterKeyStoreError("LAST_VERSION", "refusing to remove every version")
            write_secret_file(self.path, encode_stash(self.service, remaining))

    def export_backup(self, passphrase: bytes, params: ScryptParams | None = None) -> bytes:
        params = params or ScryptParams.new()
        keys = derive_backup_keys(passphrase, params)
        wrapped = {v: wrap_key(keys.wrapping_key, key) for v, key in self._read().items()}
        return seal_backup(Backup(self.service, params, wrapped), keys)

    def import_backup(self, data: bytes, passphrase: bytes) -> list[int]:
        backup, keys = open_backup(data, passphrase)
        _service_of(backup, self.service)
        incoming = {v: unwrap_key(keys.wrapping_key, blob) for v, blob in backup.wrapped.items()}
        with self._locked():
            held = self._read_or_empty()
            for mkvno, key in incoming.items():
                if mkvno in held and not hmac.compare_digest(held[mkvno], key):
                    raise MasterKeyStoreError(
                        "VERSION_CONFLICT", f"{self.path} already holds a different master key "
                        f"version {mkvno}")
            added = sorted(set(incoming) - set(held))
            if added:
                write_secret_file(self.path, encode_stash(self.service, held | incoming))
        return added

    def close(self) -> None:
        pass


F = TypeVar("F", bound=Callable[..., Any])


def _token_errors(method: F) -> F:
    """PKCS#11 failures (no such token, wrong PIN, a mechanism refused) as
    MasterKeyStoreError, naming the operation."""
    @functools.wraps(method)
    def wrapper(self: "TokenStore", *args: Any, **kwargs: Any) -> Any:
        from pkcs11.exceptions import PKCS11Error

        try:
            return method(self, *args, **kwargs)
        except PKCS11Error as exc:
            raise MasterKeyStoreError(
                "TOKEN", f"{method.__name__} in {self.describe()}: {type(exc).__name__} "
                f"{exc}".strip()) from exc
    return wrapper  # type: ignore[return-value]


class TokenStore:
    """The master key as token objects `telekey-master-<service>-<mkvno>`: GENERIC_SECRET,
    256 bits, SENSITIVE (never readable), EXTRACTABLE (for `export_backup`: C_WrapKey only),
    SIGN (the CKM_SHA256_HMAC that derives the KEK) and nothing else. The session opens on
    first use and stays open until `close`."""

    def __init__(self, module: Path, token_label: str, pin_file: Path, service: str) -> None:
        self.module = module
        self.token_label = token_label
        self.pin_file = pin_file
        self.service = _check_service(service)
        self._session: pkcs11.Session | None = None

    def describe(self) -> str:
        return f"PKCS#11 token {self.token_label!r}"

    def label(self, mkvno: int) -> str:
        return f"telekey-master-{self.service}-{mkvno}"

    def _open(self) -> "pkcs11.Session":
        if self._session is None:
            from runtime.pkcs11_token import open_session

            self._session = open_session(self.module, self.token_label, self.pin_file, rw=True)
        return self._session

    def _objects(self) -> "dict[int, pkcs11.SecretKey]":
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        prefix = self.label(0)[:-1]
        found: dict[int, pkcs11.SecretKey] = {}
        # Token objects only (not the session objects import_backup makes); list(): a partly
        # consumed object iterator blocks the session.
        for obj in list(self._open().get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                  Attribute.TOKEN: True})):
            label = obj[Attribute.LABEL]
            suffix = label[len(prefix):] if label.startswith(prefix) else ""
            if not suffix.isdigit() or not isinstance(obj, pkcs11.SecretKey):
                continue
            if int(suffix) in found:
                raise MasterKeyStoreError("DUPLICATE_VERSION",
                                          f"two token objects labelled {label!r}")
            found[int(suffix)] = obj
        return found

    @_token_errors
    def versions(self) -> list[int]:
        return sorted(self._objects())

    @staticmethod
    def _kek(obj: "pkcs11.SecretKey") -> bytes:
        import pkcs11
        from pkcs11 import Mechanism

        assert isinstance(obj, pkcs11.SignMixin)  # objects are made with SIGN
        return bytes(obj.sign(KEK_LABEL, mechanism=Mechanism.SHA256_HMAC))

    @_token_errors
    def load(self) -> MasterKeys:
        objects = self._objects()
        if not objects:
            raise MasterKeyStoreError(
                "NO_MASTER_KEY", f"no {self.label(0)[:-1]}* objects in token "
                f"{self.token_label!r} (`telekey realm init --token` creates one)")
        return MasterKeys({mkvno: self._kek(obj) for mkvno, obj in objects.items()})

    @staticmethod
    def _template() -> "dict[pkcs11.Attribute, Any]":
        from pkcs11 import Attribute

        return {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True, Attribute.SIGN: True, Attribute.VERIFY: False,
                Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.WRAP: False,
                Attribute.UNWRAP: False, Attribute.DERIVE: False}

    @_token_errors
    def add_version(self) -> int:
        from pkcs11 import KeyType

        session = self._open()
        mkvno = max(self._objects(), default=0) + 1
        created = session.generate_key(KeyType.GENERIC_SECRET, 8 * MASTER_KEY_BYTES,
                                       label=self.label(mkvno), store=True,
                                       template=self._template())
        try:
            self._objects()  # another process made the same version meanwhile: ours goes
        except MasterKeyStoreError:
            created.destroy()
            raise
        return mkvno

    @_token_errors
    def remove_versions(self, mkvnos: Collection[int]) -> None:
        objects = self._objects()
        if not set(objects) - set(mkvnos):
            raise MasterKeyStoreError("LAST_VERSION", "refusing to remove every version")
        for mkvno in mkvnos:
            if mkvno in objects:
                objects[mkvno].destroy()

    def _wrapping_key(self, key: bytes) -> "pkcs11.SecretKey":
        """The passphrase's wrapping key as a session object (gone when the session ends)."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass

        obj = self._open().create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: key, Attribute.TOKEN: False, Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.WRAP: True,
            Attribute.UNWRAP: True, Attribute.ENCRYPT: False, Attribute.DECRYPT: False})
        assert isinstance(obj, pkcs11.SecretKey)
        return obj

    @staticmethod
    def _can_wrap(obj: "pkcs11.SecretKey") -> "Any":
        """The wrapping key with its WRAP and UNWRAP methods (python-pkcs11 mixes them into
        the object's class by its attributes)."""
        import pkcs11

        assert isinstance(obj, pkcs11.WrapMixin) and isinstance(obj, pkcs11.UnwrapMixin)
        return obj

    @_token_errors
    def export_backup(self, passphrase: bytes, params: ScryptParams | None = None) -> bytes:
        from pkcs11 import Mechanism

        params = params or ScryptParams.new()
        keys = derive_backup_keys(passphrase, params)
        objects = self._objects()
        if not objects:
            raise MasterKeyStoreError("NO_MASTER_KEY", f"nothing to export from {self.describe()}")
        wrapping = self._can_wrap(self._wrapping_key(keys.wrapping_key))
        try:
            wrapped = {mkvno: bytes(wrapping.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP_PAD))
                       for mkvno, obj in objects.items()}
        finally:
            wrapping.destroy()
        return seal_backup(Backup(self.service, params, wrapped), keys)

    @_token_errors
    def import_backup(self, data: bytes, passphrase: bytes) -> list[int]:
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        backup, keys = open_backup(data, passphrase)
        _service_of(backup, self.service)
        held = self._objects()
        wrapping = self._can_wrap(self._wrapping_key(keys.wrapping_key))

        def unwrap(mkvno: int, store: bool) -> "pkcs11.SecretKey":
            key: pkcs11.SecretKey = wrapping.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, backup.wrapped[mkvno],
                label=self.label(mkvno), store=store, mechanism=Mechanism.AES_KEY_WRAP_PAD,
                template=self._template() | {Attribute.TOKEN: store})
            return key

        try:
            # First every version the token holds already, unwrapped as a session object only
            # to compare what each derives: a conflict adds nothing.
            for mkvno in sorted(set(backup.wrapped) & set(held)):
                probe = unwrap(mkvno, store=False)
                same = hmac.compare_digest(self._kek(probe), self._kek(held[mkvno]))
                probe.destroy()
                if not same:
                    raise MasterKeyStoreError(
                        "VERSION_CONFLICT", f"{self.describe()} already holds a different "
                        f"master key version {mkvno}")
            added = sorted(set(backup.wrapped) - set(held))
            for mkvno in added:
                unwrap(mkvno, store=True)
        finally:
            wrapping.destroy()
        return added

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def open_store(service: str, *, stash_file: Path | None, token_label: str | None,
               pkcs11_module: Path, pin_file: Path | None) -> MasterKeyStore:
    """The token store when `token_label` is set (it needs `pin_file`), else the stash."""
    if token_label:
        if pin_file is None:
            raise ValueError("a master key in a PKCS#11 token needs its PIN file")
        return TokenStore(pkcs11_module, token_label, pin_file, service)
    if stash_file is None:
        raise ValueError("name the master key's stash file or PKCS#11 token")
    return StashStore(stash_file, service)


class MasterKeyring:
    """The `KeyWrapper` over a store for a long-running process: loaded once, and loaded again
    when a key names a version it does not hold (rotation by another process: `realm
    rekey-master` adds the version to the stash or token before any key uses it). A version
    the store did not have either is looked for again at most once per `reload_interval_s`,
    so that a key under a version gone for good does not reload the store on every
    request."""

    def __init__(self, store: MasterKeyStore, *, reload_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._reload_interval = reload_interval_s
        self._clock = clock
        self._keys: MasterKeys | None = None
        self._missing: dict[int, float] = {}  # mkvno -> when a reload did not find it

    def keys(self) -> MasterKeys:
        if self._keys is None:
            self._keys = self.store.load()
        return self._keys

    @property
    def current(self) -> int:
        return self.keys().current

    def wrap(self, plaintext: bytes) -> tuple[int, bytes]:
        return self.keys().wrap(plaintext)

    def unwrap(self, mkvno: int, wrapped: bytes) -> bytes:
        keys = self.keys()
        if mkvno not in keys:
            now = self._clock()
            if now - self._missing.get(mkvno, -math.inf) >= self._reload_interval:
                self._keys = None
                keys = self.keys()
                if mkvno in keys:
                    self._missing.pop(mkvno, None)
                else:
                    self._missing[mkvno] = now
                log.info("master_key_reload", service=self.store.service,
                         store=self.store.describe(), wanted=mkvno,
                         versions=list(keys.versions), current=keys.current)
        return keys.unwrap(mkvno, wrapped)
