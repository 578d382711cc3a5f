"""The key generating agent (seed 002, FIG. 2B): K_m from the administered seed, a unique
generator g per key file, K_g and CV_m. The HTTPS services (app.py) call it; it does the
blocking work (database, PKCS#11 token, master key store) on one worker thread, which is
also the only thread that ever calls the token (../shared/pkcs11-notes.md).

Where K_m lives:
- `token` (default profile with `km_token_label`): a non-extractable token object; the token
  computes K_g and CV_m.
- `wrapped` (seed profile, or the default profile without a token): RFC 5649-wrapped under
  the key server's master key (service `keyserver`, protocol.md §9) in the database,
  unwrapped into memory at start. The seed profile needs K_m as HMAC data (K_g =
  HMAC(g, K_m)): it is the compatibility mode.

A generator's counter comes from a block reserved and committed in the database before it is
used (common/enterprise/generator.py), so no g is ever issued twice.
"""

import asyncio
import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

import sqlalchemy.exc

from common.enterprise.generator import (
    CounterBlocks,
    check_extension,
    make_generator,
    parse_generator,
    random_counter_start,
)
from common.enterprise.key_file import KeyFile
from common.enterprise.keys import Profile, check_value, generator_key, master_key_from_seed
from common.log import get_logger
from keyserver.db import Database, ExtensionRow, MasterKeyRow
from keyserver.token import KmToken, km_label
from runtime.master_key_store import MasterKeyring, MasterKeyStore

if TYPE_CHECKING:
    import pkcs11

log = get_logger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class AgentError(Exception):
    """A request the agent refuses; `http_status` is what the services answer, `status` a
    stable tag (sent to the client: it names no secret)."""

    http_status: ClassVar[int] = 400

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status
        self.detail = detail


class BadRequest(AgentError):
    http_status = 400


class ExtensionRevoked(AgentError):
    http_status = 403


class UnknownExtension(AgentError):
    http_status = 404


class UnknownGenerator(AgentError):
    http_status = 404


class Conflict(AgentError):
    http_status = 409


class NoMasterKey(AgentError):
    http_status = 503


class StartError(Exception):
    """The key server cannot start as configured (the reason is for the operator)."""


@dataclass(frozen=True, eq=False)
class SoftwareKm:
    """K_m in memory (unwrapped from the database)."""

    kmvno: int
    created: str
    check_value: bytes
    profile: Profile
    key: bytes = field(repr=False)
    store: str = "wrapped"
    in_token: bool = False

    def generator_key(self, generator: bytes) -> bytes:
        return generator_key(self.key, generator, self.profile)


@dataclass(frozen=True, eq=False)
class TokenKm:
    """K_m as a token object; `generator_key` runs on the agent's worker thread only."""

    kmvno: int
    created: str
    check_value: bytes
    obj: "pkcs11.SecretKey" = field(repr=False)
    store: str = "token"
    in_token: bool = True

    def generator_key(self, generator: bytes) -> bytes:
        return KmToken.hmac_sha256(self.obj, generator)


CurrentKm = SoftwareKm | TokenKm


def _now() -> datetime:
    return datetime.now(UTC)


class KeyAgent:
    def __init__(self, *, server_id: int, profile: Profile, block: int, db: Database,
                 token: KmToken | None, master_key_store: Callable[[], MasterKeyStore] | None,
                 issue_unknown_extensions: bool = True,
                 clock: Callable[[], datetime] = _now,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.server_id = server_id
        self.profile = profile
        self.block = block
        self.db = db
        self.token = token
        self._store_factory = master_key_store
        self._keyring: MasterKeyring | None = None
        self.issue_unknown_extensions = issue_unknown_extensions
        self._clock = clock
        self._random = random
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyserver-io")
        self._km: CurrentKm | None = None
        self._last_kmvno = 0
        self._blocks = CounterBlocks()
        self._first_counter: int | None = None
        self._reserved_end = 0
        self._extensions: dict[str, ExtensionRow] = {}
        self._dirty: set[str] = set()
        self._reserve_lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the worker thread. The job is queued when this is called, before the
        first suspension: jobs run in the order their callers reached this line."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    # --- start and stop ---------------------------------------------------------------------

    @property
    def master_key(self) -> CurrentKm | None:
        return self._km

    async def start(self) -> None:
        await self._call(self._start)

    def _start(self) -> None:
        self.db.migrate()
        self._extensions = self.db.extension_rows()
        counters = self.db.counter_range(self.server_id)
        if counters is not None:
            self._first_counter, self._reserved_end = counters
        rows = self.db.master_key_rows()
        self._last_kmvno = max((row.kmvno for row in rows), default=0)
        current = self.db.current_master_key()
        if current is not None:
            self._km = self._load(current)
        if self.token is not None:
            keep = current.kmvno if current is not None and current.store == "token" else None
            gone = self.token.destroy_except(keep)
            if gone:
                log.info("km_objects_destroyed", kmvnos=gone, token=self.token.describe())

    def _load(self, row: MasterKeyRow) -> CurrentKm:
        if row.profile != self.profile.value:
            raise StartError(f"K_m version {row.kmvno} was made for the {row.profile} profile, "
                             f"not {self.profile.value}: set up a new database for this profile")
        if row.store == "token":
            if self.token is None:
                raise StartError(f"K_m version {row.kmvno} is in a PKCS#11 token: set "
                                 "km_token_label")
            obj = self.token.find(row.kmvno)
            if obj is None:
                raise StartError(f"no object {km_label(row.kmvno)} in "
                                 f"{self.token.describe()}: rotate K_m from the seed again")
            if self.token.check_value(obj) != row.check_value:
                raise StartError(f"{km_label(row.kmvno)} in {self.token.describe()} is not the "
                                 "K_m the database names (its CV_m differs)")
            return TokenKm(row.kmvno, row.created, row.check_value, obj)
        if self.token is not None:
            raise StartError(f"K_m version {row.kmvno} is wrapped in the database, not in a "
                             "token: unset km_token_label, or rotate K_m to move it there")
        if row.wrapped is None or row.mkvno is None:
            raise StartError(f"K_m version {row.kmvno} has no wrapped key")
        key = self._wrapping().unwrap(row.mkvno, row.wrapped)
        if check_value(key, self.profile) != row.check_value:
            raise StartError(f"K_m version {row.kmvno} does not match its CV_m")
        return SoftwareKm(row.kmvno, row.created, row.check_value, self.profile, key)

    def _wrapping(self) -> MasterKeyring:
        """The master key keyring (made, with a first master key version, if the store has
        none yet: the key server's master key wraps nothing but K_m)."""
        if self._keyring is None:
            if self._store_factory is None:
                raise StartError("no master key store configured")
            store = self._store_factory()
            if not store.versions():
                mkvno = store.add_version()
                log.info("master_key_created", service=store.service, store=store.describe(),
                         mkvno=mkvno)
            self._keyring = MasterKeyring(store)
        return self._keyring

    async def close(self) -> None:
        try:
            await self._call(self._save, self._take_dirty())
        finally:
            await self._call(self._close)
            self._io.shutdown(wait=True)

    def _close(self) -> None:
        if self.token is not None:
            self.token.close()
        if self._keyring is not None:
            self._keyring.store.close()
        self.db.close()

    # --- key files (basic service) and K_g (advanced service) -------------------------------

    def _check_open(self, ext: str) -> None:
        row = self._extensions.get(ext)
        if row is not None and row.revoked:
            raise ExtensionRevoked("EXTENSION_REVOKED", ext)
        if not self.issue_unknown_extensions and (row is None or not row.administered):
            raise UnknownExtension("UNKNOWN_EXTENSION", ext)

    async def issue(self, ext: str) -> KeyFile:
        """A new key file for `ext`: a fresh g (its counter committed first), K_g, CV_m."""
        try:
            check_extension(ext)
        except ValueError as exc:
            raise BadRequest("BAD_EXTENSION", str(exc)) from exc
        self._check_open(ext)
        if self._km is None:
            raise NoMasterKey("NO_MASTER_KEY", "no seed has been set")
        counter = self._blocks.take()
        if counter is None:
            counter = await self._reserve()
        self._check_open(ext)  # revoked meanwhile?
        km = self._km
        if km is None:
            raise NoMasterKey("NO_MASTER_KEY")
        generator = make_generator(self.server_id, ext, counter)
        # K_g and CV_m from the same K_m: km is taken and its job queued with no suspension
        # in between, so a rotation's destroy of the old token object is queued after it.
        kg = await self._call(km.generator_key, generator) if km.in_token else \
            km.generator_key(generator)
        self._note_issued(ext)
        return KeyFile(self.profile, ext, generator, kg, km.check_value)

    async def _reserve(self) -> int:
        async with self._reserve_lock:
            counter = self._blocks.take()
            if counter is not None:
                return counter
            start = await self._call(self._reserve_committed, self._take_dirty())
            if self._first_counter is None:
                self._first_counter = start
            self._blocks.add(start, self.block)
            self._reserved_end = start + self.block
            counter = self._blocks.take()
            assert counter is not None
            return counter

    def _reserve_committed(self, stats: list[ExtensionRow]) -> int:
        start = self.db.reserve(self.server_id, self.block,
                                lambda: random_counter_start(self._random))
        log.info("generator_block", server_id=self.server_id, start=start, count=self.block)
        self._save(stats)
        return start

    def _save(self, rows: list[ExtensionRow]) -> None:
        try:
            self.db.save_extensions(rows)
        except sqlalchemy.exc.SQLAlchemyError as exc:  # statistics only: logged, not fatal
            log.warning("extension_stats_not_saved", rows=len(rows), error=type(exc).__name__)

    def _note_issued(self, ext: str) -> None:
        now = self._clock().isoformat(timespec="seconds")
        row = self._extensions.get(ext)
        if row is None:
            row = self._extensions[ext] = ExtensionRow(ext, changed=now)
        row.issued += 1
        row.first_issued = row.first_issued or now
        row.last_issued = now
        self._dirty.add(ext)

    def _take_dirty(self) -> list[ExtensionRow]:
        rows = [dataclasses.replace(self._extensions[ext]) for ext in sorted(self._dirty)]
        self._dirty.clear()
        return rows

    async def generator_key_for(self, generator: bytes, ext: str) -> KeyFile:
        """K_g for a generator a phone presented with its extension (advanced service)."""
        try:
            check_extension(ext)
            parsed = parse_generator(generator)
        except ValueError as exc:
            raise UnknownGenerator("BAD_GENERATOR", str(exc)) from exc
        if not parsed.issued_for(ext):
            raise UnknownGenerator("EXTENSION_MISMATCH", "g was not issued for this extension")
        row = self._extensions.get(ext)
        if row is not None and row.revoked:
            raise ExtensionRevoked("EXTENSION_REVOKED", ext)
        if parsed.server_id == self.server_id:
            first = self._first_counter
            if first is None or not first <= parsed.counter < self._reserved_end:
                raise UnknownGenerator("NOT_ISSUED", "this key server never issued g")
            if row is not None and parsed.counter < row.not_before:
                raise UnknownGenerator("BEFORE_RESTORE", "g was issued before the extension "
                                       "was restored")
        km = self._km
        if km is None:
            raise NoMasterKey("NO_MASTER_KEY", "no seed has been set")
        kg = await self._call(km.generator_key, generator) if km.in_token else \
            km.generator_key(generator)
        return KeyFile(self.profile, ext, generator, kg, km.check_value)

    # --- administration ----------------------------------------------------------------------

    async def set_seed(self, seed: bytes, *, rotate: bool) -> CurrentKm:
        """Set the first K_m from `seed`, or (rotate) replace the current one: the old K_m is
        destroyed (token) or forgotten (database), and CV_m changes."""
        async with self._admin_lock:
            current = self._km
            if rotate and current is None:
                raise Conflict("NO_MASTER_KEY", "no seed is set yet: set it first")
            if not rotate and current is not None:
                raise Conflict("MASTER_KEY_SET", "a seed is set already: rotate K_m instead")
            try:
                key = master_key_from_seed(seed, self.profile)
            except ValueError as exc:
                raise BadRequest("BAD_SEED", str(exc)) from exc
            new = await self._call(self._install, self._last_kmvno + 1, key, current)
            del key
            self._last_kmvno = new.kmvno
            self._km = new
            if self.token is not None:
                await self._call(self.token.destroy_except, new.kmvno)
            log.info("km_rotated" if rotate else "km_set", kmvno=new.kmvno, store=new.store,
                     check_value=new.check_value.hex(),
                     previous=None if current is None else current.check_value.hex())
            return new

    def _install(self, kmvno: int, key: bytes, current: CurrentKm | None) -> CurrentKm:
        now = self._clock()
        created = now.isoformat(timespec="seconds")
        handle: CurrentKm
        if self.token is not None:
            obj = self.token.import_key(kmvno, key)
            cv = self.token.check_value(obj)
            row = MasterKeyRow(kmvno, self.profile.value, "token", cv, None, None, created, None)
            handle = TokenKm(kmvno, created, cv, obj)
        else:
            cv = check_value(key, self.profile)
            mkvno, wrapped = self._wrapping().wrap(key)
            row = MasterKeyRow(kmvno, self.profile.value, "wrapped", cv, wrapped, mkvno,
                               created, None)
            handle = SoftwareKm(kmvno, created, cv, self.profile, key)
        try:
            if current is not None and cv == current.check_value:
                # Phones notice a new K_m by its CV_m: one that does not change cannot be used.
                raise Conflict("CHECK_VALUE_UNCHANGED", "this seed gives the current K_m or "
                               "one with the same CV_m: choose another seed")
            self.db.add_master_key(row, now)
        except BaseException:
            if isinstance(handle, TokenKm):
                handle.obj.destroy()
            raise
        return handle

    async def master_key_history(self) -> list[MasterKeyRow]:
        return await self._call(self.db.master_key_rows)

    def counters(self) -> dict[str, Any]:
        return {"first": self._first_counter, "reserved_end": self._reserved_end,
                "block": self.block, "block_remaining": self._blocks.remaining}

    async def extensions(self) -> list[ExtensionRow]:
        await self._call(self._save, self._take_dirty())
        return [dataclasses.replace(row) for _, row in sorted(self._extensions.items())]

    async def _change_extension(self, ext: str, change: Callable[[ExtensionRow], None]
                                ) -> ExtensionRow:
        try:
            check_extension(ext)
        except ValueError as exc:
            raise BadRequest("BAD_EXTENSION", str(exc)) from exc
        async with self._admin_lock:
            now = self._clock().isoformat(timespec="seconds")
            old = self._extensions.get(ext)
            row = dataclasses.replace(old) if old is not None else ExtensionRow(ext)
            change(row)
            row.changed = now
            await self._call(self.db.save_extensions, [row])  # committed, then in force
            self._extensions[ext] = row
            self._dirty.discard(ext)
            return dataclasses.replace(row)

    async def add_extension(self, ext: str) -> ExtensionRow:
        def add(row: ExtensionRow) -> None:
            row.administered = True
        return await self._change_extension(ext, add)

    async def revoke_extension(self, ext: str) -> ExtensionRow:
        def revoke(row: ExtensionRow) -> None:
            row.revoked = True
        row = await self._change_extension(ext, revoke)
        log.info("extension_revoked", ext=ext)
        return row

    async def restore_extension(self, ext: str) -> ExtensionRow:
        """Lift a revocation. Generators this server issued before are not accepted again:
        the rest of the current counter block is dropped, and the extension's `not_before`
        is the end of what was ever reserved."""
        row = self._extensions.get(ext)
        if row is None or not row.revoked:
            raise Conflict("NOT_REVOKED", f"extension {ext} is not revoked")

        def restore(row: ExtensionRow) -> None:
            row.revoked = False
            row.not_before = self._reserved_end

        async with self._reserve_lock:  # no block reserved while the floor is set
            self._blocks.drop()
            row = await self._change_extension(ext, restore)
        log.info("extension_restored", ext=ext, not_before=row.not_before)
        return row
