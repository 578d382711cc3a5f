"""Enterprise phones' extensions and PINs at the controller (seed 002: "administering the
extension of each packet switched device and the extension's associated PIN"). The controller
needs each PIN itself to compute K_a = HMAC(K_g, C_a|PIN), so a PIN is stored reversibly:
RFC 5649-wrapped under the controller's master key (docs/protocol.md §9, service `sigctl`:
stash `<database>.stash` or token objects `telekey-master-sigctl-<mkvno>`), with the version
that wrapped it. Never in plaintext, never hashed (a hash would not give K_a).

SQLAlchemy Core over SQLite by default, one committed transaction per change. The daemon
reads the table through `PinCache`: everything at start, again every few seconds and on an
unknown extension (at most once a second), so `telekey sigctl extension add` takes effect
without a restart.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from common.crypto.master_key import KeyWrapper
from common.enterprise.generator import check_extension
from common.enterprise.keys import encode_pin
from runtime.master_key_store import MasterKeyring, MasterKeyStore, open_store
from sigctl.settings import SigctlSettings

SERVICE = "sigctl"  # the master key's service name
metadata = sa.MetaData()
extensions = sa.Table(
    "extensions", metadata,
    sa.Column("ext", sa.String(32), primary_key=True),
    sa.Column("pin", sa.LargeBinary, nullable=False),  # RFC 5649 under master key `mkvno`
    sa.Column("mkvno", sa.Integer, nullable=False),
    sa.Column("changed", sa.String(32), nullable=False),
)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA secure_delete = ON")  # a deleted PIN's wrap is zeroed in the file
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.close()


def default_stash_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path.with_name(path.name + ".stash")


def master_key_store(settings: SigctlSettings) -> MasterKeyStore:
    return open_store(SERVICE, stash_file=settings.master_key_stash_file
                      or default_stash_file(settings.extensions_database_url),
                      token_label=settings.master_key_token_label,
                      pkcs11_module=settings.pkcs11_module, pin_file=settings.pkcs11_pin_file)


class ExtensionStore:
    def __init__(self, url: str, keys: KeyWrapper) -> None:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
        self.engine = sa.create_engine(url)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        self.keys = keys

    def close(self) -> None:
        self.engine.dispose()

    def put(self, ext: str, pin: str) -> bool:
        """Add the extension or change its PIN; True when it was new."""
        check_extension(ext)
        mkvno, wrapped = self.keys.wrap(encode_pin(pin))
        values = {"pin": wrapped, "mkvno": mkvno,
                  "changed": datetime.now(UTC).isoformat(timespec="seconds")}
        with self.engine.begin() as conn:
            done = conn.execute(extensions.update().where(extensions.c.ext == ext)
                                .values(**values))
            if done.rowcount:
                return False
            conn.execute(extensions.insert().values(ext=ext, **values))
            return True

    def delete(self, ext: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(extensions.delete().where(extensions.c.ext == ext))
                        .rowcount)

    def listing(self) -> list[tuple[str, int, str]]:
        """(extension, master key version of its PIN, changed), never the PINs."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(extensions.c.ext, extensions.c.mkvno,
                                          extensions.c.changed).order_by(extensions.c.ext))
            return [(r.ext, r.mkvno, r.changed) for r in rows]

    def pins(self) -> dict[str, str]:
        """Every extension with its PIN, unwrapped (the daemon's cache)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(extensions.c.ext, extensions.c.pin,
                                          extensions.c.mkvno)).all()
        return {r.ext: self.keys.unwrap(r.mkvno, bytes(r.pin)).decode("ascii") for r in rows}


def open_extension_store(settings: SigctlSettings, *, create_master_key: bool = False
                         ) -> ExtensionStore:
    """The settings' extension database with its master key; with `create_master_key`, a
    first master key version is made when the store has none (`extension add`)."""
    store = master_key_store(settings)
    if create_master_key and not store.versions():
        store.add_version()
    return ExtensionStore(settings.extensions_database_url, MasterKeyring(store))


class PinCache:
    """The daemon's view of the table (common/enterprise/registration.py's PinStore)."""

    def __init__(self, store: ExtensionStore, *, refresh_s: float = 5.0,
                 on_change: Callable[[dict[str, str]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.on_change = on_change
        self.clock = clock
        self._pins: dict[str, str] = {}
        self._loaded = -1e9
        self._miss_reload = -1e9
        self.reload()

    def reload(self) -> None:
        pins = self.store.pins()
        self._loaded = self.clock()
        if pins != self._pins:
            self._pins = pins
            if self.on_change is not None:
                self.on_change(dict(pins))

    def extensions(self) -> list[str]:
        return sorted(self._pins)

    def pin(self, ext: str) -> str | None:
        now = self.clock()
        if now - self._loaded > self.refresh_s or (
                ext not in self._pins and now - self._miss_reload > 1.0):
            if ext not in self._pins:
                self._miss_reload = now
            self.reload()
        return self._pins.get(ext)
