"""The provisioning flows over a real SQLite database (provisioning/flows.py; seed 001, FIG.
7-11), with a fixed clock, the outside steps (head-ends, KDC records, billing host) answered in
process: records, certificates, the CRL, number holds and their quarantine, the audit log, and
the rules the database enforces whatever Python does. No sockets."""

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from common.pki.certs import build_ca, issue_device_certificate, phone_id
from common.pki.device_policy import (
    DevicePolicy,
    RevokedCertificate,
    certificate_binding,
    verify_device_chain,
)
from common.provisioning.records import (
    ChangeState,
    Conflict,
    CustomerKind,
    InvalidField,
    NotFound,
    WrongState,
)
from provisioning.ca import OperatorCa
from provisioning.db import (
    alembic_config,
    audit_log,
    changes,
    current_revision,
    make_engine,
    metadata,
    migrate,
    number_holds,
    phone_numbers,
)
from provisioning.flows import Policy, Provisioner, UntrustedDevice

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MACS = ["00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5f", "00:1a:2b:3c:4d:60"]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Pki:
    def __init__(self) -> None:
        self.manufacturer_key = ec.generate_private_key(ec.SECP256R1())
        self.manufacturer = build_ca(self.manufacturer_key, "manufacturer CA", "Manufacturer",
                                     T0 - timedelta(days=1))
        self.operator_key = ec.generate_private_key(ec.SECP256R1())
        self.operator = build_ca(self.operator_key, "operator CA", "TEST.REALM",
                                 T0 - timedelta(days=1))
        self.devices = {mac: issue_device_certificate(
            self.manufacturer, self.manufacturer_key,
            ec.generate_private_key(ec.SECP256R1()).public_key(), mac, T0 - timedelta(days=1))
            for mac in MACS}


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def prov(tmp_path: Path, pki: Pki, clock: Clock) -> Provisioner:
    engine = make_engine(f"sqlite:///{tmp_path / 'prov.db'}")
    migrate(engine)
    policy = Policy(headends=frozenset({"A", "B", "R"}),
                    service_options=("voice", "voicemail", "international"),
                    quarantine=timedelta(days=30), device_cert_lifetime=timedelta(days=365),
                    repair_cert_lifetime=timedelta(hours=24), kdc_records=True,
                    manufacturer_anchors=(pki.manufacturer,), crl_file=tmp_path / "op.crl")
    provisioner = Provisioner(engine, policy, OperatorCa(pki.operator, pki.operator_key), clock)
    provisioner.add_numbers("test", "A", [f"155510001{n:02d}" for n in range(3)])
    provisioner.add_numbers("test", "B", ["15552000100", "15552000101"])
    provisioner.add_numbers("test", "R", ["15559000100"])
    for mac in MACS:
        provisioner.report_device("api@test", [pki.devices[mac]], "10.0.0.9", "sc1")
    return provisioner


def acknowledge_everything(prov: Provisioner) -> list[dict]:
    """What the task runner and the billing host would do: every step acknowledged."""
    done = []
    while True:
        due = prov.due_tasks()
        if not due:
            break
        for task in due:
            payload = task["payload"]
            result = ({"state": "open" if payload["action"] == "open" else "closed",
                       "version": task["id"], "change_id": f"prov-{task['id']}"}
                      if task["kind"] == "headend" else {"result": payload["action"]})
            prov.task_done(task["id"], result)
            done.append(task)
    for record in prov.pending_billing():
        prov.ack_billing("billing@test", record["id"])
    return done


def new_customer(prov: Provisioner, mac: str = MACS[0], **extra) -> dict:
    record = prov.new_customer("alice", name=extra.pop("name", "Ada Lovelace"),
                               address=extra.pop("address", "1 Engine Row"), headend="A",
                               mac=mac, options=["voice"], **extra)
    return record


def kdc_policy(pki: Pki, crl_file: Path | None = None) -> DevicePolicy:
    crls = () if crl_file is None else (x509.load_der_x509_crl(crl_file.read_bytes()),)
    return DevicePolicy("TEST.REALM", (pki.operator,), (pki.manufacturer,), crls)


def current_certificate(prov: Provisioner, mac: str) -> x509.Certificate:
    return prov.operator_certificate(mac)


def test_new_device_flow(prov: Provisioner, pki: Pki, clock: Clock) -> None:
    record = new_customer(prov)
    assert record["state"] == "pending" and record["number"] == "15551000100"
    assert record["device"]["state"] == "assigned"
    steps = record["pending_change"]["steps"]
    assert [(s["kind"], s["payload"]["action"]) for s in steps] == [("headend", "open"),
                                                                    ("kdc", "add")]
    with pytest.raises(NotFound):
        prov.operator_certificate(MACS[0])
    # The billing host has not acknowledged yet: steps done is not enough.
    for task in prov.due_tasks():
        prov.task_done(task["id"], {"state": "open", "version": 1})
    assert prov.customer(record["id"])["state"] == "pending"
    acknowledge_everything(prov)
    record = prov.customer(record["id"])
    assert record["state"] == "active" and record["pending_change"] is None
    assert record["device"]["state"] == "provisioned"
    cert = current_certificate(prov, MACS[0])
    assert cert.public_key() == pki.devices[MACS[0]].public_key()
    # The KDC binds it as an operator device certificate with the number's phone ID.
    kind, chain = verify_device_chain(cert, [], kdc_policy(pki), clock.now)
    binding = certificate_binding(cert, kind, chain, kdc_policy(pki))
    assert (kind, binding.principal, binding.phone_id) == (
        "operator", "cta/001a2b3c4d5e", phone_id("15551000100"))
    assert prov.access_list("A") == [{"headend": "A", "mac": MACS[0], "desired": "open",
                                      "number": "15551000100", "acked_state": "open",
                                      "acked_version": 1}]
    billing = record["billing"]
    assert len(billing) == 1 and billing[0]["acked_by"] == "billing@test"


def test_every_change_is_audited(prov: Provisioner) -> None:
    record = new_customer(prov)
    acknowledge_everything(prov)
    prov.terminate("bob", record["id"], "moving abroad")
    acknowledge_everything(prov)
    actions = [(r["actor"], r["action"]) for r in reversed(prov.audit())]
    assert ("api@test", "device_reported") in actions
    for expected in [("alice", "customer_created"), ("alice", "device_assigned"),
                     ("alice", "change_started"), ("system", "headend_ack"),
                     ("system", "kdc_record"), ("billing@test", "billing_ack"),
                     ("system", "certificate_issued"), ("system", "change_completed"),
                     ("bob", "number_released"), ("bob", "certificate_revoked"),
                     ("bob", "change_started"), ("bob", "device_released")]:
        assert expected in actions
    assert all(r["at"].tzinfo is not None for r in prov.audit())
    history = {r["action"] for r in prov.history(record["id"])}
    assert {"customer_created", "certificate_issued", "certificate_revoked",
            "number_released", "billing_ack"} <= history


def test_deprovisioning_revokes_closes_and_quarantines(prov: Provisioner, pki: Pki,
                                                       clock: Clock) -> None:
    record = new_customer(prov)
    acknowledge_everything(prov)
    cert = current_certificate(prov, MACS[0])
    clock.now += timedelta(hours=1)
    ended = prov.terminate("bob", record["id"])
    assert ended["state"] == "terminated" and ended["device"]["state"] == "unprovisioned"
    assert [(s["payload"]["action"], s["kind"]) for s in ended["pending_change"]["steps"]] == [
        ("close", "headend"), ("suspend", "kdc")]
    # The CRL the KDC reads lists the certificate at once.
    crl_file = prov.policy.crl_file
    kind, chain = verify_device_chain(cert, [], kdc_policy(pki), clock.now)
    with pytest.raises(RevokedCertificate):
        certificate_binding(cert, kind, chain, kdc_policy(pki, crl_file))
    acknowledge_everything(prov)
    assert prov.customer(record["id"])["pending_change"] is None
    assert prov.access_list("A")[0]["acked_state"] == "closed"
    # The number stays held for nobody until the quarantine ends.
    with pytest.raises(Conflict, match="NUMBER_UNAVAILABLE"):
        new_customer(prov, MACS[1], name="Charles", number="15551000100")
    assert new_customer(prov, MACS[1], name="Charles")["number"] == "15551000101"
    clock.now += timedelta(days=30)
    assert prov.sweep_quarantine() == ["15551000100"]
    assert new_customer(prov, MACS[2], name="Grace", number="15551000100")["number"] == (
        "15551000100")
    # The device is unprovisioned again and can be given to another customer.
    assert prov.device(MACS[0])["state"] == "unprovisioned"


def test_service_change_issues_a_later_certificate(prov: Provisioner) -> None:
    record = new_customer(prov)
    acknowledge_everything(prov)
    old = current_certificate(prov, MACS[0])
    changed = prov.change_service("alice", record["id"], ["voice", "international"])
    assert changed["state"] == "active"
    assert [s["payload"]["action"] for s in changed["pending_change"]["steps"]] == ["open"]
    # The old certificate stays valid until the new one exists.
    assert current_certificate(prov, MACS[0]) == old
    assert all(c["revoked_at"] is None for c in changed["certificates"])
    acknowledge_everything(prov)
    new = current_certificate(prov, MACS[0])
    assert new.serial_number != old.serial_number
    assert new.not_valid_before_utc > old.not_valid_before_utc  # FIG. 9: not a replay
    certs = prov.customer(record["id"])["certificates"]
    assert [c["revocation_reason"] for c in certs] == ["superseded", None]
    with pytest.raises(InvalidField, match="already"):
        prov.change_service("alice", record["id"], ["voice", "international"])


def test_segment_move(prov: Provisioner) -> None:
    record = new_customer(prov)
    acknowledge_everything(prov)
    moved = prov.move("alice", record["id"], "B")
    assert (moved["state"], moved["headend"], moved["number"]) == ("pending", "B",
                                                                   "15552000100")
    assert [(s["payload"].get("headend") or s["payload"]["number"], s["payload"]["action"])
            for s in moved["pending_change"]["steps"]] == [
        ("A", "close"), ("B", "open"), ("15551000100", "suspend"), ("15552000100", "add")]
    assert moved["certificates"][0]["revocation_reason"] == "superseded"
    acknowledge_everything(prov)
    assert prov.customer(record["id"])["state"] == "active"
    assert {(e["headend"], e["acked_state"]) for e in prov.access_list()} == {
        ("A", "closed"), ("B", "open")}
    assert current_certificate(prov, MACS[0]).subject.get_attributes_for_oid(
        x509.NameOID.SERIAL_NUMBER)[0].value == phone_id("15552000100").hex()
    pools = {p["headend"]: p for p in prov.pool()}
    assert (pools["A"]["quarantined"], pools["B"]["assigned"]) == (1, 1)


def test_repair_and_loaner(prov: Provisioner, clock: Clock) -> None:
    owner = new_customer(prov)
    acknowledge_everything(prov)
    # The device goes for repair: the customer gets a loaner, same number.
    swapped = prov.swap("alice", owner["id"], MACS[1])
    assert swapped["number"] == owner["number"] and swapped["mac"] == MACS[1]
    assert prov.device(MACS[0])["state"] == "unprovisioned"
    acknowledge_everything(prov)
    assert current_certificate(prov, MACS[1]) is not None
    with pytest.raises(NotFound):
        prov.operator_certificate(MACS[0])
    # At the repair facility the device is provisioned for the facility's account, with a
    # short test certificate, billed to the facility.
    repair = prov.new_customer("tech", name="Repair bench 3", address="Repair facility",
                               headend="R", mac=MACS[0], kind=CustomerKind.REPAIR)
    acknowledge_everything(prov)
    test_cert = current_certificate(prov, MACS[0])
    assert test_cert.not_valid_after_utc - clock.now <= timedelta(hours=24, minutes=1)
    assert prov.customer(repair["id"])["billing"][0]["account"] == "repair"
    # Repaired: the facility's account ends, and the owner gets the device back.
    with pytest.raises(Conflict, match="DEVICE_IN_USE"):
        prov.swap("alice", owner["id"], MACS[0])
    prov.terminate("tech", repair["id"])
    acknowledge_everything(prov)
    prov.swap("alice", owner["id"], MACS[0])
    acknowledge_everything(prov)
    back = prov.customer(owner["id"])
    assert (back["state"], back["mac"], back["number"]) == ("active", MACS[0], owner["number"])
    assert prov.device(MACS[1])["state"] == "unprovisioned"  # the loaner goes back
    assert current_certificate(prov, MACS[0]).not_valid_after_utc - clock.now > timedelta(
        days=300)


def test_suspend_and_resume(prov: Provisioner) -> None:
    record = new_customer(prov)
    acknowledge_everything(prov)
    assert prov.suspend("alice", record["id"])["state"] == "suspended"
    with pytest.raises(WrongState):
        prov.move("alice", record["id"], "B")
    acknowledge_everything(prov)
    resumed = prov.resume("alice", record["id"])
    assert resumed["state"] == "suspended"  # until the head-end and the KDC have it
    acknowledge_everything(prov)
    assert prov.customer(record["id"])["state"] == "active"


def lines(prov: Provisioner, since: int = 0) -> list[tuple]:
    page = prov.lines_since("sc1", since)
    return [(r["number"], r["mac"], r["state"], bool(r["serial"])) for r in page["lines"]]


def test_the_controller_lines_follow_every_change(prov: Provisioner) -> None:
    """GET /v1/lines: a line is assigned when the change starts, gets its certificate when it
    is issued, and is removed at once when the service ends or moves; each row carries the
    version of its last change, and a controller that pulls from a version sees only what
    changed after it."""
    assert prov.lines_since("sc1", 0) == {"controller": "sc1", "version": 0, "more": False,
                                           "lines": []}
    record = new_customer(prov)
    assert lines(prov) == [("15551000100", MACS[0], "assigned", False)]
    acknowledge_everything(prov)
    first = prov.lines_since("sc1", 0)
    assert lines(prov) == [("15551000100", MACS[0], "assigned", True)]
    assert first["lines"][0]["serial"] == prov.device(MACS[0])["operator_serial"]
    held = first["version"]
    assert prov.lines_since("sc1", held)["lines"] == []
    assert prov.lines_since("elsewhere", 0)["lines"] == []  # another controller's
    prov.suspend("alice", record["id"])
    assert lines(prov, held) == [("15551000100", MACS[0], "removed", False)]
    acknowledge_everything(prov)
    prov.resume("alice", record["id"])  # the kept certificate is delivered again
    assert lines(prov, held) == [("15551000100", MACS[0], "assigned", True)]
    acknowledge_everything(prov)
    prov.move("alice", record["id"], "B")
    assert lines(prov, held) == [("15551000100", MACS[0], "removed", False),
                                 ("15552000100", MACS[0], "assigned", False)]
    acknowledge_everything(prov)
    prov.terminate("bob", record["id"])
    assert lines(prov) == [("15551000100", MACS[0], "removed", False),
                           ("15552000100", MACS[0], "removed", False)]
    paged = prov.lines_since("sc1", 0, limit=1)
    assert paged["more"] and len(paged["lines"]) == 1
    assert paged["version"] == paged["lines"][0]["version"]


def test_one_change_at_a_time(prov: Provisioner) -> None:
    record = new_customer(prov)
    with pytest.raises(WrongState):
        prov.change_service("alice", record["id"], ["voicemail"])  # still pending
    acknowledge_everything(prov)
    prov.change_service("alice", record["id"], ["voicemail"])
    with pytest.raises(Conflict, match="CHANGE_PENDING"):
        prov.move("alice", record["id"], "B")
    # The database refuses a second change under way, whatever the code does.
    with prov.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(changes.insert().values(customer_id=record["id"], kind="move",
                                             state=ChangeState.PENDING, actor="x", detail={},
                                             created_at=T0))
    # Terminating supersedes the change under way; its steps still run, in order.
    prov.terminate("bob", record["id"])
    done = acknowledge_everything(prov)
    assert [t["payload"]["action"] for t in done if t["kind"] == "headend"] == ["open", "close"]
    assert prov.access_list("A")[0]["acked_state"] == "closed"


def test_number_held_twice_is_refused_by_the_database(prov: Provisioner) -> None:
    record = new_customer(prov)
    other = new_customer(prov, MACS[1], name="Charles")
    with prov.engine.begin() as conn:
        number_id = conn.execute(sa.select(phone_numbers.c.id).where(
            phone_numbers.c.number == record["number"])).scalar()
    with prov.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(number_holds.insert().values(number_id=number_id,
                                                  customer_id=other["id"],
                                                  state="quarantined", assigned_at=T0))


def test_concurrent_requests_for_one_number(prov: Provisioner) -> None:
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def attempt(mac: str, name: str) -> None:
        barrier.wait()
        try:
            results[mac] = new_customer(prov, mac, name=name, number="15551000102")
        except Conflict as exc:
            results[mac] = exc

    threads = [threading.Thread(target=attempt, args=(mac, name))
               for mac, name in ((MACS[0], "Ada"), (MACS[1], "Charles"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    outcomes = sorted(type(r).__name__ for r in results.values())
    assert outcomes == ["Conflict", "dict"]
    refused = next(r for r in results.values() if isinstance(r, Conflict))
    assert refused.status == "NUMBER_UNAVAILABLE"
    with prov.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(number_holds)).scalar() == 1
        # The refused request left nothing behind: no customer, no billing record.
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM billing_records")).scalar() == 1


def test_device_reports(prov: Provisioner, pki: Pki) -> None:
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    foreign = build_ca(foreign_key, "other CA", "Else", T0 - timedelta(days=1))
    fake = issue_device_certificate(foreign, foreign_key, foreign_key.public_key(), MACS[0],
                                    T0 - timedelta(days=1))
    with pytest.raises(UntrustedDevice) as err:
        prov.report_device("api@test", [fake], None, None)
    assert err.value.http_status == 403
    # A second, different factory certificate for a MAC that serves a customer: refused.
    new_customer(prov)
    clone = issue_device_certificate(pki.manufacturer, pki.manufacturer_key,
                                     foreign_key.public_key(), MACS[0], T0 - timedelta(days=1))
    with pytest.raises(Conflict, match="CERTIFICATE_MISMATCH"):
        prov.report_device("api@test", [clone], "10.6.6.6", "sc9")
    answer = prov.report_device("api@test", [pki.devices[MACS[0]]], "10.0.0.10", "sc1")
    assert answer == {"approved": True, "mac": MACS[0], "state": "assigned",
                      "number": "15551000100"}
    with prov.engine.connect() as conn:
        refused = conn.execute(sa.select(audit_log.c.detail).where(
            audit_log.c.action == "device_report_refused")).scalar()
    assert refused["address"] == "10.6.6.6"


def test_validation(prov: Provisioner) -> None:
    with pytest.raises(InvalidField, match="six octets"):
        new_customer(prov, "00:1a:2b")
    with pytest.raises(InvalidField, match="reported in"):
        new_customer(prov, "00:1a:2b:3c:4d:99")
    with pytest.raises(InvalidField, match="not in head-end A"):
        new_customer(prov, number="15552000100")
    new_customer(prov)
    with pytest.raises(InvalidField, match="already has this name"):
        new_customer(prov, MACS[1])
    with pytest.raises(Conflict, match="DEVICE_IN_USE"):
        new_customer(prov, MACS[0], name="Someone else")
    with pytest.raises(Conflict, match="NUMBER_ELSEWHERE"):
        prov.add_numbers("x", "B", ["15551000100"])


def test_failed_steps_back_off(prov: Provisioner, clock: Clock) -> None:
    new_customer(prov)
    first = prov.due_tasks()[0]
    prov.retry_base = timedelta(seconds=2)
    assert prov.task_failed(first["id"], "head-end down") == clock.now + timedelta(seconds=2)
    assert first["id"] not in [t["id"] for t in prov.due_tasks()]
    assert prov.task_failed(first["id"], "head-end down") == clock.now + timedelta(seconds=4)
    clock.now += timedelta(seconds=5)
    assert first["id"] in [t["id"] for t in prov.due_tasks()]


def test_alembic_from_empty_matches_the_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert current_revision(engine) is None
    migrate(engine)
    assert current_revision(engine) == "0002"
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    command.downgrade(alembic_config(engine), "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    migrate(engine)
    assert current_revision(engine) == "0002"
