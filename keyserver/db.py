"""The key server's database: SQLAlchemy Core over SQLite (default) or PostgreSQL. Every
change is one transaction.

- `generators`: per server id, the first counter value (random, seed 002's g_0) and the next
  one not yet reserved. `reserve` moves it forward by a block in one committed UPDATE before
  any value of the block is used, so no generator is issued twice, `kill -9` included.
- `master_keys`: one row per K_m version (kmvno): profile, where K_m is (`wrapped`: RFC 5649
  under the key server's master key, with its mkvno; `token`: object
  `telekey-keyserver-km-<kmvno>` in the PKCS#11 token), CV_m, when it was made and retired.
  A retired row keeps its CV_m (public) and loses its wrapped key.
- `extensions`: those administered (added, revoked, restored) or given a key file.
  `not_before` is the first counter of this server accepted for the extension after a
  restore. Issue counts and times are statistics, written in batches: a `kill -9` loses the
  last batch.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

SCHEMA_VERSION = 1
metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata,
                          sa.Column("version", sa.Integer, nullable=False))
generators = sa.Table(
    "generators", metadata,
    sa.Column("server_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_counter", sa.BigInteger, nullable=False),
    sa.Column("next_counter", sa.BigInteger, nullable=False),
)
master_keys = sa.Table(
    "master_keys", metadata,
    sa.Column("kmvno", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("profile", sa.String(16), nullable=False),
    sa.Column("store", sa.String(16), nullable=False),  # "wrapped" or "token"
    sa.Column("check_value", sa.LargeBinary, nullable=False),
    sa.Column("wrapped", sa.LargeBinary, nullable=True),  # RFC 5649 under master key mkvno
    sa.Column("mkvno", sa.Integer, nullable=True),
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("retired", sa.String(32), nullable=True),
)
extensions = sa.Table(
    "extensions", metadata,
    sa.Column("ext", sa.String(32), primary_key=True),
    sa.Column("revoked", sa.Boolean, nullable=False),
    sa.Column("administered", sa.Boolean, nullable=False),
    sa.Column("not_before", sa.BigInteger, nullable=False),
    sa.Column("issued", sa.BigInteger, nullable=False),
    sa.Column("first_issued", sa.String(32), nullable=True),
    sa.Column("last_issued", sa.String(32), nullable=True),
    sa.Column("changed", sa.String(32), nullable=False),
)


@dataclass(frozen=True)
class MasterKeyRow:
    kmvno: int
    profile: str
    store: str
    check_value: bytes
    wrapped: bytes | None
    mkvno: int | None
    created: str
    retired: str | None


@dataclass
class ExtensionRow:
    ext: str
    revoked: bool = False
    administered: bool = False
    not_before: int = 0
    issued: int = 0
    first_issued: str | None = None
    last_issued: str | None = None
    changed: str = ""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # A commit is on disk when it returns (a reserved counter block must survive a crash);
    # a retired K_m's wrapped bytes are zeroed in the file, not left in free pages.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA secure_delete = ON")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.close()


def _iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
        self.engine = sa.create_engine(url)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    def migrate(self) -> int:
        """Create the schema if it is not there; the schema version."""
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            version = conn.execute(sa.select(schema_version.c.version)).scalar()
            if version is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise RuntimeError(f"database schema v{version}; this key server knows "
                               f"v{SCHEMA_VERSION}")
        return int(version)

    def close(self) -> None:
        self.engine.dispose()

    # --- generator counters ---------------------------------------------------------------

    def reserve(self, server_id: int, count: int, first: Callable[[], int]) -> int:
        """Reserve `count` counter values for `server_id` and commit; the first of them. The
        first reservation of a server id starts at `first()`."""
        with self.engine.begin() as conn:
            # One UPDATE: two processes reserving at once serialise on the row's write lock.
            start = conn.execute(
                generators.update().where(generators.c.server_id == server_id)
                .values(next_counter=generators.c.next_counter + count)
                .returning(generators.c.next_counter)).scalar()
            if start is not None:
                return int(start) - count
            start = first()
            conn.execute(generators.insert().values(server_id=server_id, first_counter=start,
                                                    next_counter=start + count))
            return start

    def counter_range(self, server_id: int) -> tuple[int, int] | None:
        """(first counter, next unreserved counter) of `server_id`, if it has reserved any."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(generators.c.first_counter, generators.c.next_counter)
                               .where(generators.c.server_id == server_id)).first()
        return None if row is None else (int(row[0]), int(row[1]))

    # --- K_m --------------------------------------------------------------------------------

    def master_key_rows(self) -> list[MasterKeyRow]:
        """Every K_m version, oldest first (the current one is the last, unretired)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(master_keys).order_by(master_keys.c.kmvno)).all()
        return [MasterKeyRow(r.kmvno, r.profile, r.store, bytes(r.check_value),
                             None if r.wrapped is None else bytes(r.wrapped), r.mkvno,
                             r.created, r.retired) for r in rows]

    def current_master_key(self) -> MasterKeyRow | None:
        rows = [row for row in self.master_key_rows() if row.retired is None]
        return rows[-1] if rows else None

    def add_master_key(self, row: MasterKeyRow, now: datetime) -> None:
        """Make `row` the current K_m and retire (forget) every other, in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(master_keys.update().where(master_keys.c.retired.is_(None))
                         .values(retired=_iso(now), wrapped=None, mkvno=None))
            conn.execute(master_keys.insert().values(
                kmvno=row.kmvno, profile=row.profile, store=row.store,
                check_value=row.check_value, wrapped=row.wrapped, mkvno=row.mkvno,
                created=row.created, retired=None))

    def rewrap_master_key(self, kmvno: int, expected_mkvno: int, mkvno: int,
                          wrapped: bytes) -> bool:
        """Store K_m `kmvno` wrapped anew (under master key `mkvno`), unless it changed."""
        with self.engine.begin() as conn:
            done = conn.execute(master_keys.update().where(
                master_keys.c.kmvno == kmvno, master_keys.c.mkvno == expected_mkvno,
                master_keys.c.retired.is_(None)).values(mkvno=mkvno, wrapped=wrapped))
            return bool(done.rowcount)

    # --- extensions -------------------------------------------------------------------------

    def extension_rows(self) -> dict[str, ExtensionRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(extensions)).all()
        return {r.ext: ExtensionRow(r.ext, bool(r.revoked), bool(r.administered),
                                    int(r.not_before), int(r.issued), r.first_issued,
                                    r.last_issued, r.changed) for r in rows}

    def save_extensions(self, rows: list[ExtensionRow]) -> None:
        """Insert or replace these rows, in one transaction."""
        if not rows:
            return
        with self.engine.begin() as conn:
            for row in rows:
                values = {"revoked": row.revoked, "administered": row.administered,
                          "not_before": row.not_before, "issued": row.issued,
                          "first_issued": row.first_issued, "last_issued": row.last_issued,
                          "changed": row.changed}
                done = conn.execute(extensions.update().where(extensions.c.ext == row.ext)
                                    .values(**values))
                if not done.rowcount:
                    conn.execute(extensions.insert().values(ext=row.ext, **values))


def default_stash_file(url: str) -> Path | None:
    """Where a SQLite database's master key stash goes by default: `<file>.stash` beside it."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path.with_name(path.name + ".stash")
