"""The broker's pools in the controller's database (common/broker/broker.py `PoolStore`).

SQLAlchemy Core, SQLite by default (`broker_database_url`) or PostgreSQL. Every key is RFC
5649-wrapped under the controller's master key (docs/protocol.md §9, service `sigctl`, the
master key that wraps extension PINs), with the version that wrapped it: never in plaintext.
One committed transaction per method; a key replaced is overwritten in the same transaction
that commits its successor (and SQLite's secure_delete zeroes the old page). A database that
cannot be reached or is locked beyond `busy_timeout_ms` raises BrokerUnavailable, and the
caller refuses the call (503) with nothing written.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from common.broker.broker import BrokerUnavailable, PoolState
from common.broker.keys import BrokerKey, KeyId
from common.crypto.master_key import KeyWrapper

T = TypeVar("T")
metadata = sa.MetaData()
pools = sa.Table(
    "broker_pools", metadata,
    sa.Column("device", sa.String(255), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # offered | ready | resync
    sa.Column("established", sa.Float, nullable=False),
    sa.Index("broker_pools_due", "state", "established"),  # the periodic refresh's scan
)
keys = sa.Table(
    "broker_keys", metadata,
    sa.Column("device", sa.String(255), sa.ForeignKey("broker_pools.device", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("key", sa.LargeBinary, nullable=False),  # RFC 5649 under master key `mkvno`
    sa.Column("mkvno", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # ready | in_use | refreshing
    sa.Column("session", sa.String(255)),
    sa.Column("next_key", sa.LargeBinary),  # the successor while refreshing
    sa.Column("next_mkvno", sa.Integer),
)


class BrokerStore:
    def __init__(self, url: str, wrapper: KeyWrapper, *, busy_timeout_ms: int = 2000) -> None:
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
        self.engine = sa.create_engine(url)
        if url.startswith("sqlite"):
            def pragmas(dbapi_connection: object, _record: object) -> None:
                cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
                cursor.execute("PRAGMA secure_delete = ON")
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                cursor.close()
            sa.event.listen(self.engine, "connect", pragmas)
        metadata.create_all(self.engine)
        self.wrapper = wrapper

    def close(self) -> None:
        self.engine.dispose()

    def _run(self, work: Callable[[sa.Connection], T]) -> T:
        """`work(conn)` in one transaction, committed; BrokerUnavailable when the database
        is not there (nothing written)."""
        try:
            with self.engine.begin() as conn:
                return work(conn)
        except sa.exc.DBAPIError as exc:
            raise BrokerUnavailable(f"{type(exc.orig).__name__}: {exc.orig}") from exc

    def _wrap(self, key: bytes) -> tuple[int, bytes]:
        return self.wrapper.wrap(key)

    def _key(self, device: str, row: sa.Row) -> BrokerKey:  # type: ignore[type-arg]
        return BrokerKey(device, KeyId(row.epoch, row.slot, row.generation),
                         self.wrapper.unwrap(row.mkvno, bytes(row.key)))

    # PoolStore -----------------------------------------------------------------------

    def pool(self, device: str) -> PoolState | None:
        def work(conn: sa.Connection) -> PoolState | None:
            head = conn.execute(sa.select(pools).where(pools.c.device == device)).first()
            if head is None:
                return None
            rows = conn.execute(sa.select(keys.c.slot, keys.c.generation, keys.c.state,
                                          keys.c.session).where(keys.c.device == device))
            return PoolState(head.epoch, head.state, head.established,
                             {r.slot: (r.generation, r.state, r.session) for r in rows})
        return self._run(work)

    def pools(self) -> list[tuple[str, PoolState]]:
        def work(conn: sa.Connection) -> Any:
            heads = conn.execute(sa.select(pools)).all()
            slots: dict[str, dict[int, tuple[int, str, str | None]]] = {}
            for r in conn.execute(sa.select(keys.c.device, keys.c.slot, keys.c.generation,
                                            keys.c.state, keys.c.session)):
                slots.setdefault(r.device, {})[r.slot] = (r.generation, r.state, r.session)
            return [(h.device, PoolState(h.epoch, h.state, h.established,
                                         slots.get(h.device, {}))) for h in heads]
        return self._run(work)

    def ready_before(self, cutoff: float) -> list[tuple[str, float]]:
        return self._run(lambda conn: [(r.device, r.established) for r in conn.execute(
            sa.select(pools.c.device, pools.c.established).where(
                pools.c.state == "ready", pools.c.established <= cutoff))])

    def offer(self, device: str, epoch: int, new: list[bytes], now: float) -> None:
        wrapped = [self._wrap(k) for k in new]

        def work(conn: sa.Connection) -> Any:
            conn.execute(keys.delete().where(keys.c.device == device))
            conn.execute(pools.delete().where(pools.c.device == device))
            conn.execute(pools.insert().values(device=device, epoch=epoch, state="offered",
                                               established=now))
            conn.execute(keys.insert(), [
                {"device": device, "slot": i, "generation": 0, "key": w, "mkvno": v,
                 "state": "ready", "session": None} for i, (v, w) in enumerate(wrapped)])
        self._run(work)

    def confirm(self, device: str, epoch: int, now: float) -> bool:
        return bool(self._run(lambda conn: conn.execute(
            pools.update().where(pools.c.device == device, pools.c.epoch == epoch,
                                 pools.c.state == "offered")
            .values(state="ready", established=now)).rowcount))

    def set_state(self, device: str, state: str) -> None:
        self._run(lambda conn: conn.execute(
            pools.update().where(pools.c.device == device).values(state=state)))

    @staticmethod
    def _select(device: str, *where: sa.ColumnElement[bool]) -> sa.Select:  # type: ignore[type-arg]
        return sa.select(keys, pools.c.epoch).join(pools, pools.c.device == keys.c.device) \
            .where(keys.c.device == device, *where).order_by(keys.c.slot)

    def keys(self, device: str) -> dict[int, BrokerKey]:
        rows = self._run(lambda conn: conn.execute(self._select(device)).all())
        return {r.slot: self._key(device, r) for r in rows}

    def take(self, device: str, session: str) -> BrokerKey | None:
        def work(conn: sa.Connection) -> Any:
            for row in conn.execute(self._select(device)).all():
                if row.state != "ready":
                    continue
                done = conn.execute(keys.update().where(
                    keys.c.device == device, keys.c.slot == row.slot,
                    keys.c.generation == row.generation, keys.c.state == "ready")
                    .values(state="in_use", session=session)).rowcount
                if done:
                    return row
            return None
        row = self._run(work)
        return None if row is None else self._key(device, row)

    def begin_refresh(self, device: str, slot: int, session: str, new_key: bytes
                      ) -> KeyId | None:
        mkvno, wrapped = self._wrap(new_key)

        def work(conn: sa.Connection) -> KeyId | None:
            row = conn.execute(self._select(device, keys.c.slot == slot)).first()
            if row is None or row.state != "in_use" or row.session != session:
                return None
            conn.execute(keys.update().where(keys.c.device == device, keys.c.slot == slot)
                         .values(state="refreshing", next_key=wrapped, next_mkvno=mkvno))
            return KeyId(row.epoch, slot, row.generation + 1)
        return self._run(work)

    def refreshing(self, device: str, slot: int) -> tuple[BrokerKey, BrokerKey, str] | None:
        row = self._run(lambda conn: conn.execute(
            self._select(device, keys.c.slot == slot)).first())
        if row is None or row.state != "refreshing" or row.next_key is None:
            return None
        new = BrokerKey(device, KeyId(row.epoch, slot, row.generation + 1),
                        self.wrapper.unwrap(row.next_mkvno, bytes(row.next_key)))
        return self._key(device, row), new, row.session

    def commit_refresh(self, device: str, key_id: KeyId) -> bool:
        def work(conn: sa.Connection) -> Any:
            row = conn.execute(self._select(device, keys.c.slot == key_id.slot)).first()
            if row is None or row.state != "refreshing" or row.epoch != key_id.epoch \
                    or row.generation + 1 != key_id.generation:
                return False
            return bool(conn.execute(keys.update().where(
                keys.c.device == device, keys.c.slot == key_id.slot,
                keys.c.generation == row.generation, keys.c.state == "refreshing")
                .values(generation=key_id.generation, key=row.next_key, mkvno=row.next_mkvno,
                        next_key=None, next_mkvno=None, state="ready", session=None))
                .rowcount)
        return bool(self._run(work))

    def wrapped_rows(self, device: str) -> list[dict[str, object]]:
        """The stored rows as they are (tests and `telekey sigctl broker show`): wrapped bytes
        and identifiers."""
        rows = self._run(lambda conn: conn.execute(self._select(device)).all())
        return [dict(r._mapping) for r in rows]
