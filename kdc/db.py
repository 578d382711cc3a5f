"""The KDC database: principals and their keys, SQLAlchemy Core over SQLite (default) or
PostgreSQL (by URL). Every change is one transaction; the schema is versioned and migrated at
open time.

Keys are stored wrapped under the master key, as MIT's KDC stores them under K/M: each row of
`keys` holds the RFC 5649 wrap of the key and the master key version (mkvno) that wrapped it
(common/crypto/master_key.py; the master key itself is in a stash file or a PKCS#11 token,
runtime/master_key_store.py). `get_principal` unwraps; `rewrap_keys` moves every key to the
current master key version in committed batches while KDCs keep serving.
"""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from common.crypto import Key
from common.crypto.master_key import KeyWrapper
from common.errors import MasterKeyError
from common.kerberos.tickets import KeyEntry, PrincipalEntry
from common.pki.certs import phone_id
from common.pki.device_policy import Customer

SCHEMA_VERSION = 3
metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata,
                          sa.Column("version", sa.Integer, nullable=False))
principals = sa.Table(
    "principals", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("max_life_s", sa.Integer, nullable=True),
)
keys = sa.Table(
    "keys", metadata,
    sa.Column("principal_id", sa.Integer, sa.ForeignKey("principals.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("kvno", sa.Integer, nullable=False),
    sa.Column("enctype", sa.Integer, nullable=False),
    sa.Column("key", sa.LargeBinary, nullable=False),  # RFC 5649 wrap under master key mkvno
    sa.Column("mkvno", sa.Integer, nullable=False),  # (nullable in databases migrated from v2)
    sa.UniqueConstraint("principal_id", "kvno", "enctype"),
)

customers = sa.Table(
    "customers", metadata,
    sa.Column("phone_number", sa.String(32), primary_key=True),
    sa.Column("phone_id", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)


def default_stash_file(url: str) -> Path | None:
    """Where a SQLite database's master key stash goes by default: next to it, `<file>.stash`
    (a PostgreSQL database has no such place: name the stash or token)."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path.with_name(path.name + ".stash")


def _add_mkvno_column(conn: sa.Connection, master_keys: KeyWrapper | None) -> bool:
    # SQLite runs DDL outside the migration's transaction, so this step may have run before
    # a failed wrapping step: add the column only when it is not there yet.
    if "mkvno" not in {c["name"] for c in sa.inspect(conn).get_columns("keys")}:
        conn.execute(sa.text("ALTER TABLE keys ADD COLUMN mkvno INTEGER"))
    return False


def _wrap_plaintext_keys(conn: sa.Connection, master_keys: KeyWrapper | None) -> bool:
    """v3: every key stored before in plaintext is wrapped under the current master key."""
    rows = conn.execute(sa.select(keys.c.principal_id, keys.c.kvno, keys.c.enctype, keys.c.key)
                        .where(keys.c.mkvno.is_(None))).all()
    if not rows:
        return False
    if master_keys is None:
        raise MasterKeyError("NO_MASTER_KEY", f"{len(rows)} keys are stored in plaintext: "
                             "open the database with its master key to wrap them (`telekey "
                             "realm init` creates the master key, `kdc run` migrates)")
    for row in rows:
        mkvno, wrapped = master_keys.wrap(row.key)
        conn.execute(keys.update().where(
            keys.c.principal_id == row.principal_id, keys.c.kvno == row.kvno,
            keys.c.enctype == row.enctype).values(mkvno=mkvno, key=wrapped))
    return True


# A migration step returns True when it rewrote secrets in place, so that their old bytes are
# then purged from the file (SQLite VACUUM, PostgreSQL VACUUM FULL).
Migration = str | Callable[[sa.Connection, KeyWrapper | None], bool]
# Migrations: version -> steps that bring the previous version to it. Tables new in a version
# are created by metadata.create_all; the steps alter existing ones.
MIGRATIONS: dict[int, list[Migration]] = {
    2: [],  # the customers table
    3: [_add_mkvno_column, _wrap_plaintext_keys],  # keys wrapped under the master key
}


class Database:
    """Principal store over SQLAlchemy; implements common.kerberos.as_exchange.PrincipalStore.

    `master_keys` wraps and unwraps the keys (runtime.master_key_store.MasterKeyring, or a
    plain MasterKeys in tests); without it principals and customers can be listed, added
    without keys and deleted, but no key is read or written."""

    def __init__(self, url: str, master_keys: KeyWrapper | None = None) -> None:
        self.url = url
        self.master_keys = master_keys
        self.engine = sa.create_engine(url, future=True)
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
            # Deleted and overwritten rows are zeroed in the file, not left in free pages.
            sa.event.listen(self.engine, "connect", _sqlite_secure_delete)

    def _wrapper(self) -> KeyWrapper:
        if self.master_keys is None:
            raise MasterKeyError("NO_MASTER_KEY", "this database was opened without its master "
                                 "key; keys can be neither read nor stored")
        return self.master_keys

    def migrate(self) -> int:
        """Create or upgrade the schema; return the version now in force."""
        rewritten = False
        with self.engine.begin() as conn:
            metadata.create_all(conn)
            current = conn.execute(sa.select(schema_version.c.version)).scalar()
            if current is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                return SCHEMA_VERSION
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for step in MIGRATIONS.get(version, []):
                    if isinstance(step, str):
                        conn.execute(sa.text(step))
                    else:
                        rewritten |= step(conn, self.master_keys)
                conn.execute(schema_version.update().values(version=version))
        if rewritten:
            self._vacuum()
        return SCHEMA_VERSION

    def _vacuum(self) -> None:
        """Rebuild the storage after secrets were rewritten, so the old bytes are not left in
        free pages (SQLite) or dead tuples (PostgreSQL). Copies made before (backups, WAL
        archives) still hold them."""
        statement = "VACUUM" if self.engine.dialect.name == "sqlite" else "VACUUM FULL keys"
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(statement)

    def add_principal(self, name: str, new_keys: list[tuple[int, Key]],
                      max_life: timedelta | None = None) -> None:
        wrapped = [(kvno, key.enctype, *self._wrapper().wrap(key.data))
                   for kvno, key in new_keys]
        with self.engine.begin() as conn:
            inserted = conn.execute(principals.insert().values(
                name=name, max_life_s=int(max_life.total_seconds()) if max_life else None)
            ).inserted_primary_key
            assert inserted is not None  # an INSERT of one row
            pid = inserted[0]
            for kvno, enctype, mkvno, data in wrapped:
                conn.execute(keys.insert().values(principal_id=pid, kvno=kvno, enctype=enctype,
                                                  mkvno=mkvno, key=data))

    def delete_principal(self, name: str) -> bool:
        with self.engine.begin() as conn:
            pid = conn.execute(sa.select(principals.c.id).where(principals.c.name == name)
                               ).scalar()
            if pid is None:
                return False
            conn.execute(keys.delete().where(keys.c.principal_id == pid))
            conn.execute(principals.delete().where(principals.c.id == pid))
            return True

    def list_principals(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(principals.c.name).order_by(principals.c.name))
                        .scalars())

    def get_principal(self, name: str) -> PrincipalEntry | None:
        with self.engine.connect() as conn:
            rows = conn.execute(_PRINCIPAL_WITH_KEYS, {"name": name}).all()
        if not rows:
            return None
        first = rows[0]
        entries: tuple[KeyEntry, ...] = ()
        if first.kvno is not None:  # an outer join: a principal without keys has one row
            unwrap = self._wrapper().unwrap
            entries = tuple(KeyEntry(r.kvno, Key(r.enctype, unwrap(r.mkvno, r.key)))
                            for r in rows)
        return PrincipalEntry(
            name=first.name, keys=entries,
            max_life=timedelta(seconds=first.max_life_s) if first.max_life_s else None)

    # --- the master key: which versions are in use, rewrapping under the current one ------

    def master_key_versions_in_use(self) -> dict[int, int]:
        """{mkvno: number of keys wrapped under it}."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(keys.c.mkvno, sa.func.count())
                                .group_by(keys.c.mkvno)).all()
        return {int(mkvno): int(count) for mkvno, count in rows}

    def rewrap_keys(self, batch_size: int = 500,
                    on_batch: Callable[[int], None] | None = None) -> int:
        """Unwrap every key not under the current master key version and wrap it under that
        version, `batch_size` keys per committed transaction (KDCs keep reading between
        them; `on_batch` is called with the running count after each). A row changed by
        someone else meanwhile is left to the next batch. Returns the keys rewrapped."""
        wrapper = self._wrapper()
        target = wrapper.current
        done = 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(_KEYS_NOT_UNDER, {"target": target, "limit": batch_size}
                                    ).all()
                if not rows:
                    return done
                updates: list[dict[str, Any]] = []
                for row in rows:
                    mkvno, wrapped = wrapper.wrap(wrapper.unwrap(row.mkvno, row.key))
                    assert mkvno == target  # the keyring's current version does not move
                    updates.append({"p": row.principal_id, "v": row.kvno, "e": row.enctype,
                                    "old_m": row.mkvno, "old_k": row.key, "new_m": mkvno,
                                    "new_k": wrapped})
                conn.execute(_REWRAP, updates)
            done += len(rows)
            if on_batch is not None:
                on_batch(done)

    # --- customers (seed 001: phone number -> phone ID, MAC, active or suspended) ---------

    def add_customer(self, phone_number: str, mac: str) -> Customer:
        customer = Customer(phone_number, phone_id(phone_number), mac.lower(), True)
        with self.engine.begin() as conn:
            conn.execute(customers.insert().values(phone_number=customer.phone_number,
                                                   phone_id=customer.phone_id, mac=customer.mac,
                                                   active=True))
        return customer

    def set_customer_active(self, phone_number: str, active: bool) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(customers.update().where(
                customers.c.phone_number == phone_number).values(active=active))
            return bool(result.rowcount)

    def list_customers(self) -> list[Customer]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(customers).order_by(customers.c.phone_number)).all()
        return [Customer(r.phone_number, r.phone_id, r.mac, r.active) for r in rows]

    def customer_by_phone_id(self, phone_id_value: bytes) -> Customer | None:
        with self.engine.connect() as conn:
            r = conn.execute(_CUSTOMER_BY_PHONE_ID, {"phone_id": phone_id_value}).first()
        return None if r is None else Customer(r.phone_number, r.phone_id, r.mac, r.active)


def _sqlite_secure_delete(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA secure_delete = ON")
    cursor.close()


_KEYS_NOT_UNDER = (
    sa.select(keys.c.principal_id, keys.c.kvno, keys.c.enctype, keys.c.mkvno, keys.c.key)
    .where(keys.c.mkvno != sa.bindparam("target"))
    .order_by(keys.c.principal_id, keys.c.kvno, keys.c.enctype)
    .limit(sa.bindparam("limit")))
# Only if the row still holds what was read: a key replaced meanwhile is not overwritten.
_REWRAP = (
    keys.update()
    .where(keys.c.principal_id == sa.bindparam("p"), keys.c.kvno == sa.bindparam("v"),
           keys.c.enctype == sa.bindparam("e"), keys.c.mkvno == sa.bindparam("old_m"),
           keys.c.key == sa.bindparam("old_k"))
    .values(mkvno=sa.bindparam("new_m"), key=sa.bindparam("new_k")))

# The lookups a KDC makes for requests (through kdc/cache.py, when an entry's TTL runs out),
# built once: constructing a statement costs more Python than SQLite takes to run it, and a
# principal with its keys is one query, not two.
_PRINCIPAL_WITH_KEYS = (
    sa.select(principals.c.name, principals.c.max_life_s, keys.c.kvno, keys.c.enctype,
              keys.c.mkvno, keys.c.key)
    .select_from(principals.outerjoin(keys, keys.c.principal_id == principals.c.id))
    .where(principals.c.name == sa.bindparam("name")))
_CUSTOMER_BY_PHONE_ID = sa.select(customers).where(
    customers.c.phone_id == sa.bindparam("phone_id"))
