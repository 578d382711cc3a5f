"""The caller's controller's lawful-intercept escrow records (seed 001, CALEA): one row per
call holding its media keys sealed to the escrow authority (common/calls/escrow.py), kept for the
call and then `retention` more seconds; every opening is recorded. SQLAlchemy Core, SQLite by
default; each change is one committed transaction."""

import time
from pathlib import Path

import sqlalchemy as sa

metadata = sa.MetaData()
records = sa.Table(
    "escrow_records", metadata,
    sa.Column("call_id", sa.String(256), primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("controller", sa.String(256), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("expires_at", sa.Float, nullable=False))
access = sa.Table(
    "escrow_access", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(256), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("who", sa.String(256), nullable=False),
    sa.Column("result", sa.String(64), nullable=False))


class EscrowStore:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.exists():
                path.touch(mode=0o600)
        self.engine = sa.create_engine(url)
        if url.startswith("sqlite"):
            with self.engine.begin() as db:
                db.exec_driver_sql("PRAGMA journal_mode=WAL")
        metadata.create_all(self.engine)

    def add(self, call_id: str, sealed: bytes, controller: str, max_call_s: int) -> None:
        now = time.time()
        with self.engine.begin() as db:
            db.execute(records.insert().values(call_id=call_id, sealed=sealed,
                                               controller=controller, created_at=now,
                                               expires_at=now + max_call_s))

    def ended(self, call_id: str, retention_s: int) -> None:
        now = time.time()
        with self.engine.begin() as db:
            db.execute(records.update().where(records.c.call_id == call_id)
                       .values(ended_at=now, expires_at=now + retention_s))

    def purge(self) -> int:
        """Delete the records whose retention is over; returns how many went."""
        with self.engine.begin() as db:
            return db.execute(records.delete().where(records.c.expires_at <= time.time())
                              ).rowcount

    def sealed(self, call_id: str, who: str) -> bytes | None:
        """The sealed record, with the access logged whether or not it exists."""
        with self.engine.begin() as db:
            row = db.execute(sa.select(records.c.sealed).where(records.c.call_id == call_id)
                             ).first()
            db.execute(access.insert().values(call_id=call_id, at=time.time(), who=who,
                                              result="found" if row else "not_found"))
        return None if row is None else bytes(row[0])

    def log_result(self, call_id: str, who: str, result: str) -> None:
        with self.engine.begin() as db:
            db.execute(access.insert().values(call_id=call_id, at=time.time(), who=who,
                                              result=result))

    def accesses(self, call_id: str) -> list[tuple[float, str, str]]:
        with self.engine.begin() as db:
            rows = db.execute(sa.select(access.c.at, access.c.who, access.c.result)
                              .where(access.c.call_id == call_id).order_by(access.c.id))
            return [(r[0], r[1], r[2]) for r in rows]
