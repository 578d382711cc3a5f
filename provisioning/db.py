"""The provisioning records: SQLAlchemy Core tables over SQLite (default) or PostgreSQL, their
schema migrated by Alembic (provisioning/migrations/). Every change of state is one committed
transaction (provisioning/flows.py writes them).

Rules the database itself enforces, so that no interleaving of requests can break them:
- a number has at most one live hold (`number_holds` rows assigned or in quarantine:
  `uq_number_holds_live`, a partial unique index): a number is never assigned twice, nor
  reassigned while in quarantine;
- a customer holds at most one assigned number (`uq_number_holds_customer`);
- a MAC belongs to at most one customer that is not terminated (`uq_customers_live_mac`);
- a customer has at most one change under way (`uq_changes_pending`);
- a billing record, a change, a hold always belong to a customer (foreign keys, NOT NULL).
"""

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
metadata = sa.MetaData()

customers = sa.Table(
    "customers", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("address", sa.String(400), nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("headend", sa.String(64), nullable=False),
    sa.Column("number", sa.String(15), nullable=True),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("uq_customers_live_mac", "mac", unique=True,
             sqlite_where=sa.text("state != 'terminated'"),
             postgresql_where=sa.text("state != 'terminated'")),
    sa.Index("ix_customers_number", "number"),
    sa.Index("ix_customers_name", "name"),
)

phone_numbers = sa.Table(
    "phone_numbers", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("number", sa.String(15), nullable=False, unique=True),
    sa.Column("headend", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_phone_numbers_headend", "headend", "number"),
)

number_holds = sa.Table(
    "number_holds", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("number_id", sa.Integer, sa.ForeignKey("phone_numbers.id"), nullable=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('assigned', 'quarantined', 'released')",
                       name="ck_number_holds_state"),
    sa.Index("uq_number_holds_live", "number_id", unique=True,
             sqlite_where=sa.text("state != 'released'"),
             postgresql_where=sa.text("state != 'released'")),
    sa.Index("uq_number_holds_customer", "customer_id", unique=True,
             sqlite_where=sa.text("state = 'assigned'"),
             postgresql_where=sa.text("state = 'assigned'")),
)

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mac", sa.String(17), nullable=False, unique=True),
    sa.Column("factory_thumbprint", sa.String(64), nullable=False),
    sa.Column("factory_cert", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=True),
    sa.Column("operator_serial", sa.String(40), nullable=True),
    sa.Column("address", sa.String(64), nullable=True),
    sa.Column("controller", sa.String(255), nullable=True),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

certificates = sa.Table(
    "certificates", metadata,
    sa.Column("serial", sa.String(40), primary_key=True),  # hex
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("number", sa.String(15), nullable=False),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
    sa.Column("der", sa.LargeBinary, nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revocation_reason", sa.String(32), nullable=True),
    sa.Index("ix_certificates_customer", "customer_id"),
)

changes = sa.Table(
    "changes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("uq_changes_pending", "customer_id", unique=True,
             sqlite_where=sa.text("state = 'pending'"),
             postgresql_where=sa.text("state = 'pending'")),
)

tasks = sa.Table(
    "tasks", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("change_id", sa.Integer, sa.ForeignKey("changes.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "headend" | "kdc"
    sa.Column("target", sa.String(128), nullable=False),  # done in order per target
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | done | cancelled
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Index("ix_tasks_pending", "state", "id"),
)

access_entries = sa.Table(
    "access_entries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("headend", sa.String(64), nullable=False),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("desired", sa.String(8), nullable=False),  # open | closed
    sa.Column("number", sa.String(15), nullable=True),
    sa.Column("acked_version", sa.Integer, nullable=True),
    sa.Column("acked_state", sa.String(8), nullable=True),
    sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("headend", "mac", name="uq_access_entries_headend_mac"),
)

billing_records = sa.Table(
    "billing_records", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("change_id", sa.Integer, sa.ForeignKey("changes.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("account", sa.String(16), nullable=False),  # customer | repair
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("acked_by", sa.String(128), nullable=True),
    sa.Index("ix_billing_records_pending", "acked_at", "id"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.String(64), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Index("ix_audit_log_entity", "entity", "entity_id"),
)

# What each signaling controller must know of the lines homed there (seed 001, FIG. 7 "the
# new telephone number and the corresponding MAC address ... are sent to the signaling
# controller"): one row per (controller, number), its state and the operator certificate to
# deliver, with the feed version of its last change. Controllers pull the rows changed since
# the version they hold (GET /v1/lines), so a restarted one rebuilds its table from version 0.
controller_lines = sa.Table(
    "controller_lines", metadata,
    sa.Column("controller", sa.String(255), primary_key=True),
    sa.Column("number", sa.String(15), primary_key=True),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # assigned | removed
    sa.Column("serial", sa.String(40), nullable=True),  # the certificate to deliver (hex)
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('assigned', 'removed')", name="ck_controller_lines_state"),
    sa.Index("ix_controller_lines_version", "controller", "version"),
)

# The feed's version counter (one row): each write to controller_lines takes the next value
# in its own transaction, and the row lock it holds until the commit makes versions appear in
# commit order, so a controller that has read up to version V never misses a row below it.
line_feed = sa.Table(
    "line_feed", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

staff = sa.Table(
    "staff", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),  # argon2id, PHC string
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

sessions = sa.Table(
    "sessions", metadata,
    # SHA-256 of the cookie's token: the database never holds a usable session.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("staff_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


def utc(value: datetime) -> datetime:
    """A datetime read back from the database as aware UTC (SQLite keeps no zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers go on while one writes.
    # pysqlite's own transaction handling is turned off so that `begin` below can say
    # BEGIN IMMEDIATE: a write transaction takes the write lock at its start, so two of them
    # queue (busy timeout) instead of one failing on the lock upgrade halfway through.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> sa.Engine:
    """An engine for `url`; a SQLite file is created 0600 (with its directory) first."""
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def alembic_config(engine: sa.Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic `upgrade`), from an empty database too."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One committed transaction (rolled back on any exception)."""
    with engine.begin() as conn:
        yield conn
