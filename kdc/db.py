"""The KDC database: principals and their keys, SQLAlchemy Core over SQLite (default) or
PostgreSQL (by URL). Every change is one transaction; the schema is versioned and migrated at
open time.

Keys are stored as given: MIT encrypts them under a master key in its database, telekey does
not yet, and its database file is protected by file permissions (0600) only.
"""

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from common.crypto import Key
from common.kerberos.tickets import KeyEntry, PrincipalEntry
from common.pki.certs import phone_id
from common.pki.device_policy import Customer

SCHEMA_VERSION = 2
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
    sa.Column("key", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("principal_id", "kvno", "enctype"),
)

customers = sa.Table(
    "customers", metadata,
    sa.Column("phone_number", sa.String(32), primary_key=True),
    sa.Column("phone_id", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)

# Migrations: version -> statements that bring the previous version to it. Tables new in a
# version are created by metadata.create_all; statements here alter existing ones.
MIGRATIONS: dict[int, list[str]] = {2: []}  # v2: the customers table


class Database:
    """Principal store over SQLAlchemy; implements common.kerberos.as_exchange.PrincipalStore."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)

    def migrate(self) -> int:
        """Create or upgrade the schema; return the version now in force."""
        with self.engine.begin() as conn:
            metadata.create_all(conn)
            current = conn.execute(sa.select(schema_version.c.version)).scalar()
            if current is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                return SCHEMA_VERSION
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(version, []):
                    conn.execute(sa.text(statement))
                conn.execute(schema_version.update().values(version=version))
            return SCHEMA_VERSION

    def add_principal(self, name: str, new_keys: list[tuple[int, Key]],
                      max_life: timedelta | None = None) -> None:
        with self.engine.begin() as conn:
            inserted = conn.execute(principals.insert().values(
                name=name, max_life_s=int(max_life.total_seconds()) if max_life else None)
            ).inserted_primary_key
            assert inserted is not None  # an INSERT of one row
            pid = inserted[0]
            for kvno, key in new_keys:
                conn.execute(keys.insert().values(principal_id=pid, kvno=kvno,
                                                  enctype=key.enctype, key=key.data))

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
        return PrincipalEntry(
            name=first.name,
            keys=tuple(KeyEntry(r.kvno, Key(r.enctype, r.key)) for r in rows
                       if r.kvno is not None),
            max_life=timedelta(seconds=first.max_life_s) if first.max_life_s else None)

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


# The lookups a KDC makes for requests (through kdc/cache.py, when an entry's TTL runs out),
# built once: constructing a statement costs more Python than SQLite takes to run it, and a
# principal with its keys is one query, not two.
_PRINCIPAL_WITH_KEYS = (
    sa.select(principals.c.name, principals.c.max_life_s, keys.c.kvno, keys.c.enctype,
              keys.c.key)
    .select_from(principals.outerjoin(keys, keys.c.principal_id == principals.c.id))
    .where(principals.c.name == sa.bindparam("name")))
_CUSTOMER_BY_PHONE_ID = sa.select(customers).where(
    customers.c.phone_id == sa.bindparam("phone_id"))
