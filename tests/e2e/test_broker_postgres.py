"""The broker's pools on a real PostgreSQL (tests/postgres.py): a session's keys taken,
refreshed and committed as on SQLite, and two controllers sharing the database never taking
one key twice."""

import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from common.broker.broker import Broker
from common.crypto.master_key import MasterKeys
from sigctl.broker_store import BrokerStore
from tests.postgres import postgres_server
from tests.unit import test_broker as unit

pytestmark = pytest.mark.e2e
KEYS = MasterKeys.from_master_keys({1: b"\x01" * 32})


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture()
def broker(pg_url: str) -> Iterator[Broker]:
    name = f"broker_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    store = BrokerStore(pg_url.rsplit("/", 1)[0] + f"/{name}", KEYS)
    yield Broker(store, slots=2, refresh_s=100.0)
    store.close()


def test_a_session_and_its_refresh_on_postgres(broker: Broker) -> None:
    unit.test_a_session_then_its_refresh_and_what_the_caller_can_do_with_it(broker)


def test_refused_refreshes_on_postgres(broker: Broker) -> None:
    unit.test_replayed_truncated_and_foreign_refreshes_are_refused_and_the_key_stays(broker)


def test_two_controllers_never_take_one_key_twice(broker: Broker) -> None:
    slots = 16
    broker.slots = slots
    unit._pool(broker, "cta/b", b"\xbb" * 32)
    other = Broker(BrokerStore(str(broker.store.engine.url.render_as_string(
        hide_password=False)), KEYS), slots=slots)
    taken: list[object] = []
    start = threading.Barrier(2)

    def take(which: Broker, prefix: str) -> None:
        start.wait()
        for n in range(slots):
            key = which.take("cta/b", f"{prefix}{n}")
            if key is not None:
                taken.append(key.key_id)

    threads = [threading.Thread(target=take, args=(b, p)) for b, p in ((broker, "x"),
                                                                       (other, "y"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == slots and len(set(taken)) == slots
    other.store.close()  # type: ignore[attr-defined]
