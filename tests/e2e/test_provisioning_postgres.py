"""The provisioning records on a real PostgreSQL (tests/postgres.py): the Alembic migration from
an empty database gives exactly the tables the code declares; the flows; two transactions
asking for one number at the same moment, of which the database's unique index lets exactly
one through; and the service itself running on it."""

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from common.provisioning.records import Conflict
from provisioning.ca import OperatorCa
from provisioning.db import current_revision, make_engine, metadata, migrate, number_holds
from provisioning.flows import Policy, Provisioner
from tests.e2e.test_provisioning import (
    ack_billing,
    cli,
    configure,
    customer_state,
    pki,  # noqa: F401
    report,
    start_headend,
    start_provisioning,
    wait_for,
)
from tests.postgres import postgres_server
from tests.unit.test_provisioning_flows import (
    MACS,
    Clock,
    Pki,
    acknowledge_everything,
    new_customer,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture()
def database(pg_url: str) -> Iterator[str]:
    """A fresh database on the server for each test."""
    name = f"prov_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    admin.dispose()


def provisioner(url: str, tmp_path: Path) -> Provisioner:
    engine = make_engine(url)
    migrate(engine)
    pki_ = Pki()
    policy = Policy(headends=frozenset({"A", "B"}), service_options=("voice", "voicemail"),
                    quarantine=timedelta(days=30), device_cert_lifetime=timedelta(days=365),
                    repair_cert_lifetime=timedelta(hours=24), kdc_records=True,
                    manufacturer_anchors=(pki_.manufacturer,), crl_file=tmp_path / "op.crl")
    prov = Provisioner(engine, policy, OperatorCa(pki_.operator, pki_.operator_key), Clock())
    prov.add_numbers("test", "A", ["15551000100", "15551000101"])
    prov.add_numbers("test", "B", ["15552000100"])
    for mac in MACS:
        prov.report_device("api@test", [pki_.devices[mac]], "10.0.0.9", "sc1")
    return prov


def test_alembic_upgrade_from_empty(database: str) -> None:
    engine = make_engine(database)
    assert current_revision(engine) is None
    migrate(engine)
    assert current_revision(engine) == "0002"
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("number_holds")}
    assert indexes["uq_number_holds_live"]["unique"]
    engine.dispose()


def test_flows_on_postgres(database: str, tmp_path: Path) -> None:
    prov = provisioner(database, tmp_path)
    record = new_customer(prov)
    acknowledge_everything(prov)
    assert prov.customer(record["id"])["state"] == "active"
    moved = prov.move("alice", record["id"], "B")
    assert moved["number"] == "15552000100"
    acknowledge_everything(prov)
    prov.terminate("bob", record["id"])
    acknowledge_everything(prov)
    final = prov.customer(record["id"])
    assert final["state"] == "terminated"
    assert [c["revocation_reason"] for c in final["certificates"]] == [
        "superseded", "cessationOfOperation"]
    # The controller's lines: both numbers removed, in the order of their versions.
    feed = prov.lines_since("sc1", 0)
    assert [(r["number"], r["state"]) for r in feed["lines"]] == [
        ("15551000100", "removed"), ("15552000100", "removed")]
    assert feed["version"] == feed["lines"][-1]["version"]
    prov.engine.dispose()


def test_concurrent_requests_for_one_number(database: str, tmp_path: Path) -> None:
    prov = provisioner(database, tmp_path)
    barrier = threading.Barrier(4)
    results: list[object] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            outcome: object = new_customer(prov, MACS[index % len(MACS)],
                                           name=f"Customer {index}", number="15551000101")
        except Conflict as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join(30)
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(winners) == 1 and len(losers) == 2, results
    assert {r.status for r in losers} == {"NUMBER_UNAVAILABLE"}
    with prov.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(number_holds)).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 1
    prov.engine.dispose()


def test_the_service_runs_on_postgres(database: str, pki: Path,  # noqa: F811
                                      tmp_path: Path) -> None:
    headend = start_headend(tmp_path, pki, "A")
    config = configure(tmp_path, pki, {"A": f"https://127.0.0.1:{headend.listening['port']}"},
                       database_url=database)
    server = start_provisioning(config)
    try:
        assert server.listening["database"] == "postgresql"
        assert report(server, pki, MACS[2], "10.1.0.9")[0] == 200
        cli("provisioning", "customer", "add", "--config", str(config), "--name", "Grace",
            "--address", "3 Compiler Way", "--headend", "A", "--mac", MACS[2])
        ack_billing(server, pki)
        wait_for(lambda: customer_state(server, pki, "15551000100")["state"] == "active",
                 "the customer to become active on PostgreSQL")
    finally:
        server.stop()
        headend.stop()
