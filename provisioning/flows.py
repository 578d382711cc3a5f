"""The provisioning CA's flows over its records (seed 001, FIG. 7-11): every change of state is
one committed transaction that also writes its audit rows.

A lifecycle change (new device, de-provisioning, suspension, service change, segment move,
device swap) starts in one transaction: the customer's records change, its number is held or
released, a billing record is written, and the steps the change needs outside this database
are queued as `tasks` rows (an outbox): head-end access-list changes and KDC customer records,
as common/provisioning/lifecycle.py `plan_change` derives them. `provisioning/tasks.py` carries
the tasks out, each acknowledgement committed as it arrives (`task_done`); the billing host
acknowledges the billing record (`ack_billing`). When the last of them is in, the change
completes in the same transaction as that acknowledgement (`_complete_if_ready`): the operator
certificate is issued and the customer reaches its final state. A crash at any point leaves
either the change not started at all, or started with its remaining steps still queued: after
a restart they are sent again (the head-end and the KDC records apply each step once).
"""

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from common.errors import KerberosError
from common.log import get_logger
from common.pki.chain import verify_chain
from common.provisioning.lifecycle import (
    Service,
    check_change_allowed,
    plan_change,
    state_after,
    state_during,
)
from common.provisioning.records import (
    ChangeKind,
    ChangeState,
    Conflict,
    CustomerKind,
    CustomerState,
    DeviceState,
    HoldState,
    InvalidField,
    NotFound,
    ProvisioningError,
    check_headend,
    check_options,
    check_text,
    normalize_mac,
    normalize_number,
)
from provisioning.ca import OperatorCa, Revoked, write_public_file
from provisioning.db import (
    access_entries,
    audit_log,
    billing_records,
    certificates,
    changes,
    controller_lines,
    customers,
    devices,
    line_feed,
    number_holds,
    phone_numbers,
    tasks,
    utc,
)

log = get_logger(__name__)
MAX_TASK_BACKOFF = timedelta(minutes=5)


class UntrustedDevice(ProvisioningError):
    """A reported device certificate that does not chain to a manufacturer root."""

    http_status = 403


@dataclass(frozen=True)
class Policy:
    """What the flows need from the settings (provisioning/settings.py)."""

    headends: frozenset[str]
    service_options: tuple[str, ...]
    quarantine: timedelta
    device_cert_lifetime: timedelta
    repair_cert_lifetime: timedelta
    kdc_records: bool
    manufacturer_anchors: tuple[x509.Certificate, ...] = ()
    crl_lifetime: timedelta = timedelta(days=7)
    crl_file: Any = None  # Path | None: where the CRL goes after each revocation


@dataclass
class Outcome:
    """What a transaction did that matters after its commit."""

    revoked: bool = False
    completed: list[int] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _audit(conn: sa.Connection, now: datetime, actor: str, what: str, entity: str,
           entity_id: object, /, **detail: Any) -> None:
    conn.execute(audit_log.insert().values(at=now, actor=actor[:128], action=what,
                                           entity=entity, entity_id=str(entity_id),
                                           detail=_jsonable(detail)))


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _service(row: Any) -> Service | None:
    """The service a customer row grants now (None for a terminated one)."""
    if row.state == CustomerState.TERMINATED or row.number is None:
        return None
    return Service(row.headend, row.mac, row.number, tuple(row.options),
                   open=row.state != CustomerState.SUSPENDED)


def _service_json(service: Service | None) -> dict[str, Any] | None:
    if service is None:
        return None
    return {"headend": service.headend, "mac": service.mac, "number": service.number,
            "options": list(service.options), "open": service.open}


class Provisioner:
    """The flows over one database. Thread-safe: each call is its own transaction(s).

    `ca` issues operator certificates when a change completes (the service has it; the command
    line only starts changes, which the running service completes)."""

    def __init__(self, engine: sa.Engine, policy: Policy, ca: OperatorCa | None = None,
                 clock: Callable[[], datetime] = _now) -> None:
        self.engine = engine
        self.policy = policy
        self.ca = ca
        self.clock = clock
        self._crl_lock = threading.Lock()

    # --- the number pool ----------------------------------------------------------------

    def add_numbers(self, actor: str, headend: str, numbers: Iterable[str]) -> int:
        """Add numbers to a head-end's pool (those already there are left alone)."""
        check_headend(headend, self.policy.headends)
        wanted = sorted({normalize_number(n) for n in numbers})
        now = self.clock()
        with self.engine.begin() as conn:
            existing: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                existing.update((r.number, r.headend) for r in conn.execute(
                    sa.select(phone_numbers.c.number, phone_numbers.c.headend)
                    .where(phone_numbers.c.number.in_(wanted[start:start + 500]))))
            elsewhere = sorted(n for n, h in existing.items() if h != headend)
            if elsewhere:
                raise Conflict("NUMBER_ELSEWHERE", f"{elsewhere[0]} belongs to another "
                               "head-end's pool")
            new = [n for n in wanted if n not in existing]
            if new:
                conn.execute(phone_numbers.insert(), [
                    {"number": n, "headend": headend, "created_at": now} for n in new])
                _audit(conn, now, actor, "numbers_added", "headend", headend, count=len(new),
                       first=new[0], last=new[-1])
        return len(new)

    def pool(self) -> list[dict[str, Any]]:
        """Per head-end: numbers in the pool, assigned, in quarantine, free."""
        live = (sa.select(number_holds.c.number_id, number_holds.c.state)
                .where(number_holds.c.state != HoldState.RELEASED).subquery())
        query = (sa.select(phone_numbers.c.headend, live.c.state, sa.func.count())
                 .select_from(phone_numbers.outerjoin(live,
                                                      live.c.number_id == phone_numbers.c.id))
                 .group_by(phone_numbers.c.headend, live.c.state))
        totals: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for headend, state, count in conn.execute(query):
                entry = totals.setdefault(headend, {"headend": headend, "total": 0,
                                                    "assigned": 0, "quarantined": 0})
                entry["total"] += count
                if state:
                    entry[state] += count
        for entry in totals.values():
            entry["free"] = entry["total"] - entry["assigned"] - entry["quarantined"]
        return [totals[h] for h in sorted(totals)]

    def _hold_number(self, conn: sa.Connection, customer_id: int, headend: str,
                     requested: str | None, now: datetime) -> str:
        """Hold a number of `headend`'s pool for the customer: `requested`, else the lowest
        free one. The unique index on live holds decides between concurrent requests; the
        loser gets NUMBER_UNAVAILABLE (a requested number) or tries the next free one."""
        if requested is not None:
            number = normalize_number(requested)
            row = conn.execute(sa.select(phone_numbers.c.id, phone_numbers.c.headend)
                               .where(phone_numbers.c.number == number)).first()
            if row is None or row.headend != headend:
                raise InvalidField("number", f"{number} is not in head-end {headend}'s pool")
            if not self._insert_hold(conn, row.id, customer_id, now):
                raise Conflict("NUMBER_UNAVAILABLE", f"{number} is assigned or in quarantine")
            return number
        live = sa.select(number_holds.c.id).where(
            number_holds.c.number_id == phone_numbers.c.id,
            number_holds.c.state != HoldState.RELEASED)
        for _ in range(20):
            row = conn.execute(sa.select(phone_numbers.c.id, phone_numbers.c.number)
                               .where(phone_numbers.c.headend == headend, ~live.exists())
                               .order_by(phone_numbers.c.number).limit(1)).first()
            if row is None:
                raise Conflict("POOL_EMPTY", f"head-end {headend} has no free number")
            if self._insert_hold(conn, row.id, customer_id, now):
                return str(row.number)
        raise Conflict("NUMBER_UNAVAILABLE", "the pool is busy; try again")

    @staticmethod
    def _insert_hold(conn: sa.Connection, number_id: int, customer_id: int,
                     now: datetime) -> bool:
        savepoint = conn.begin_nested()
        try:
            conn.execute(number_holds.insert().values(
                number_id=number_id, customer_id=customer_id, state=HoldState.ASSIGNED,
                assigned_at=now))
        except sa.exc.IntegrityError:
            savepoint.rollback()
            return False
        savepoint.commit()
        return True

    def _release_number(self, conn: sa.Connection, customer_id: int, actor: str,
                        now: datetime) -> None:
        quarantine = self.policy.quarantine
        state = HoldState.QUARANTINED if quarantine > timedelta(0) else HoldState.RELEASED
        rows = conn.execute(sa.select(number_holds.c.id, phone_numbers.c.number)
                            .join(phone_numbers, phone_numbers.c.id == number_holds.c.number_id)
                            .where(number_holds.c.customer_id == customer_id,
                                   number_holds.c.state == HoldState.ASSIGNED)).all()
        for row in rows:
            conn.execute(number_holds.update().where(number_holds.c.id == row.id).values(
                state=state, released_at=now, held_until=now + quarantine))
            _audit(conn, now, actor, "number_released", "number", row.number,
                   customer=customer_id, state=state, held_until=now + quarantine)

    def sweep_quarantine(self, actor: str = "system") -> list[str]:
        """Return to the pool every number whose quarantine is over."""
        now = self.clock()
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(number_holds.c.id, phone_numbers.c.number)
                                .join(phone_numbers,
                                      phone_numbers.c.id == number_holds.c.number_id)
                                .where(number_holds.c.state == HoldState.QUARANTINED,
                                       number_holds.c.held_until <= now)).all()
            for row in rows:
                conn.execute(number_holds.update().where(number_holds.c.id == row.id)
                             .values(state=HoldState.RELEASED))
                _audit(conn, now, actor, "number_returned", "number", row.number)
        return [str(r.number) for r in rows]

    # --- devices ------------------------------------------------------------------------

    def report_device(self, actor: str, chain: Sequence[x509.Certificate], address: str | None,
                      controller: str | None) -> dict[str, Any]:
        """A signaling controller reports a device that logged in with its factory
        certificate (FIG. 7 "forward CTA certificate"). The chain must lead to a manufacturer
        root; the device is recorded (or its address updated) and the answer says whether
        it is approved and, if provisioned, its number."""
        if not chain:
            raise InvalidField("certificates", "the device's certificate chain is empty")
        now = self.clock()
        try:
            verify_chain(chain[0], list(chain[1:]), list(self.policy.manufacturer_anchors), now)
        except KerberosError as exc:
            raise UntrustedDevice("UNTRUSTED_DEVICE", exc.status) from exc
        names = chain[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if not names:
            raise InvalidField("certificates", "the device certificate has no CN")
        mac = normalize_mac(str(names[0].value))
        der = chain[0].public_bytes(Encoding.DER)
        thumbprint = hashlib.sha256(der).hexdigest()
        address = (address or "")[:64] or None
        controller = (controller or "")[:255] or None
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(devices).where(devices.c.mac == mac)).first()
            if row is None:
                conn.execute(devices.insert().values(
                    mac=mac, factory_thumbprint=thumbprint, factory_cert=der,
                    state=DeviceState.UNPROVISIONED, address=address, controller=controller,
                    reported_at=now, updated_at=now))
                _audit(conn, now, actor, "device_reported", "device", mac, address=address,
                       controller=controller, thumbprint=thumbprint)
                return {"approved": True, "mac": mac, "state": DeviceState.UNPROVISIONED,
                        "number": None}
            if row.factory_thumbprint != thumbprint:
                if row.customer_id is not None:
                    # Another certificate for a MAC that serves a customer: a clone, or a
                    # device the records do not know. The recorded key stays.
                    # The refusal is recorded (this transaction commits), then reported.
                    _audit(conn, now, actor, "device_report_refused", "device", mac,
                           address=address, controller=controller, thumbprint=thumbprint)
                    refusal = Conflict("CERTIFICATE_MISMATCH", f"{mac} is provisioned with "
                                       "another factory certificate")
                    conn.commit()
                    raise refusal
                conn.execute(devices.update().where(devices.c.id == row.id).values(
                    factory_thumbprint=thumbprint, factory_cert=der))
                _audit(conn, now, actor, "device_certificate_changed", "device", mac,
                       thumbprint=thumbprint, previous=row.factory_thumbprint)
            conn.execute(devices.update().where(devices.c.id == row.id).values(
                address=address, controller=controller, reported_at=now, updated_at=now))
            _audit(conn, now, actor, "device_reported", "device", mac, address=address,
                   controller=controller)
            number = None
            if row.customer_id is not None:
                number = conn.execute(sa.select(customers.c.number).where(
                    customers.c.id == row.customer_id)).scalar()
            return {"approved": True, "mac": mac, "state": row.state, "number": number}

    def device(self, mac: str) -> dict[str, Any]:
        mac = normalize_mac(mac)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(devices).where(devices.c.mac == mac)).first()
            if row is None:
                raise NotFound("NO_DEVICE", f"no device {mac}")
            number = None
            if row.customer_id is not None:
                number = conn.execute(sa.select(customers.c.number).where(
                    customers.c.id == row.customer_id)).scalar()
        return {"mac": row.mac, "state": row.state, "customer_id": row.customer_id,
                "number": number, "factory_thumbprint": row.factory_thumbprint,
                "operator_serial": row.operator_serial, "address": row.address,
                "controller": row.controller, "reported_at": utc(row.reported_at)}

    def devices(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        query = sa.select(devices).order_by(devices.c.reported_at.desc()).limit(limit)
        if state is not None:
            query = query.where(devices.c.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [{"mac": r.mac, "state": r.state, "customer_id": r.customer_id,
                 "operator_serial": r.operator_serial, "address": r.address,
                 "controller": r.controller, "reported_at": utc(r.reported_at)} for r in rows]

    def operator_certificate(self, mac: str) -> x509.Certificate:
        """The current operator certificate of a provisioned device."""
        mac = normalize_mac(mac)
        with self.engine.connect() as conn:
            der = conn.execute(sa.select(certificates.c.der).join(
                devices, devices.c.operator_serial == certificates.c.serial).where(
                devices.c.mac == mac, devices.c.state == DeviceState.PROVISIONED,
                certificates.c.revoked_at.is_(None))).scalar()
        if der is None:
            raise NotFound("NO_CERTIFICATE", f"{mac} has no operator certificate")
        return x509.load_der_x509_certificate(der)

    def _take_device(self, conn: sa.Connection, mac: str, customer_id: int, actor: str,
                     now: datetime) -> None:
        row = conn.execute(sa.select(devices.c.id, devices.c.state, devices.c.customer_id)
                           .where(devices.c.mac == mac)).first()
        if row is None:
            raise InvalidField("mac", f"no device {mac} has reported in: it must log in "
                               "(unprovisioned) before it can be provisioned")
        if row.customer_id is not None:
            raise Conflict("DEVICE_IN_USE", f"device {mac} belongs to customer "
                           f"{row.customer_id}")
        conn.execute(devices.update().where(devices.c.id == row.id).values(
            state=DeviceState.ASSIGNED, customer_id=customer_id, updated_at=now))
        _audit(conn, now, actor, "device_assigned", "device", mac, customer=customer_id)

    def _free_device(self, conn: sa.Connection, mac: str, actor: str, now: datetime) -> None:
        conn.execute(devices.update().where(devices.c.mac == mac).values(
            state=DeviceState.UNPROVISIONED, customer_id=None, operator_serial=None,
            updated_at=now))
        _audit(conn, now, actor, "device_released", "device", mac)

    # --- customers ----------------------------------------------------------------------

    def new_customer(self, actor: str, *, name: str, address: str, headend: str, mac: str,
                     options: Sequence[str] = ("voice",), number: str | None = None,
                     kind: CustomerKind = CustomerKind.CUSTOMER) -> dict[str, Any]:
        """FIG. 7: a customer for a device that has reported in; a number of the head-end's
        pool is held for it, billing is told, the head-end opens the MAC, the KDC gets a
        customer record, and once all have acknowledged the device's operator certificate is
        issued."""
        name = check_text("name", name)
        address = check_text("address", address, max_length=400)
        headend = check_headend(headend, self.policy.headends)
        mac = normalize_mac(mac)
        chosen = check_options(options, self.policy.service_options)
        kind = CustomerKind(kind)
        now = self.clock()
        with self.engine.begin() as conn:
            duplicate = conn.execute(sa.select(customers.c.id).where(
                sa.func.lower(customers.c.name) == name.lower(),
                sa.func.lower(customers.c.address) == address.lower(),
                customers.c.state != CustomerState.TERMINATED)).first()
            if duplicate is not None:
                raise InvalidField("name", f"customer {duplicate.id} already has this name "
                                   "and address")
            try:
                with conn.begin_nested():
                    customer_id = _new_id(conn.execute(customers.insert().values(
                        kind=kind, name=name, address=address, options=list(chosen),
                        headend=headend, number=None, mac=mac, state=CustomerState.PENDING,
                        created_at=now, updated_at=now)))
            except sa.exc.IntegrityError as exc:
                raise Conflict("DEVICE_IN_USE", f"device {mac} belongs to another customer"
                               ) from exc
            self._take_device(conn, mac, customer_id, actor, now)
            held = self._hold_number(conn, customer_id, headend, number, now)
            conn.execute(customers.update().where(customers.c.id == customer_id)
                         .values(number=held))
            _audit(conn, now, actor, "customer_created", "customer", customer_id, name=name,
                   kind=kind, headend=headend, mac=mac, number=held, options=list(chosen))
            after = Service(headend, mac, held, chosen)
            self._start_change(conn, customer_id, kind, ChangeKind.NEW, None, after, actor, now,
                               billing={"name": name, "address": address, "number": held,
                                        "options": list(chosen)})
        log.info("customer_created", customer=customer_id, number=held, mac=mac,
                 headend=headend, actor=actor)
        return self.customer(customer_id)

    def _customer_row(self, conn: sa.Connection, customer_id: int) -> Any:
        row = conn.execute(sa.select(customers).where(customers.c.id == customer_id)).first()
        if row is None:
            raise NotFound("NO_CUSTOMER", f"no customer {customer_id}")
        return row

    def _begin(self, conn: sa.Connection, customer_id: int, kind: ChangeKind,
               actor: str, now: datetime) -> Any:
        row = self._customer_row(conn, customer_id)
        check_change_allowed(kind, CustomerState(row.state))
        pending = conn.execute(sa.select(changes.c.id, changes.c.kind).where(
            changes.c.customer_id == customer_id,
            changes.c.state == ChangeState.PENDING)).first()
        if pending is not None:
            if kind != ChangeKind.TERMINATE:
                raise Conflict("CHANGE_PENDING", f"change {pending.id} ({pending.kind}) of this "
                               "customer is still under way")
            # Terminating supersedes a change under way: its queued steps still run, in order,
            # before the terminate's own (tasks are done in order per head-end MAC and per
            # number), so the end state is the terminate's.
            conn.execute(changes.update().where(changes.c.id == pending.id).values(
                state=ChangeState.CANCELLED, done_at=now))
            _audit(conn, now, actor, "change_cancelled", "customer", customer_id,
                   change=pending.id, kind=pending.kind)
        return row

    def terminate(self, actor: str, customer_id: int, reason: str = "") -> dict[str, Any]:
        """FIG. 8: service ends. The head-end closes the MAC, the KDC record is suspended,
        the number goes into quarantine, the certificate is revoked (CRL), the device is
        unprovisioned again."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._begin(conn, customer_id, ChangeKind.TERMINATE, actor, now)
            before = _service(row)
            conn.execute(customers.update().where(customers.c.id == customer_id).values(
                state=state_during(ChangeKind.TERMINATE), updated_at=now))
            self._release_number(conn, customer_id, actor, now)
            outcome = self._start_change(conn, customer_id, row.kind, ChangeKind.TERMINATE,
                                         before, None, actor, now,
                                         billing={"number": row.number, "reason": reason[:200]})
            self._free_device(conn, row.mac, actor, now)
        self._after(outcome)
        return self.customer(customer_id)

    def suspend(self, actor: str, customer_id: int) -> dict[str, Any]:
        return self._toggle(actor, customer_id, ChangeKind.SUSPEND)

    def resume(self, actor: str, customer_id: int) -> dict[str, Any]:
        return self._toggle(actor, customer_id, ChangeKind.RESUME)

    def _toggle(self, actor: str, customer_id: int, kind: ChangeKind) -> dict[str, Any]:
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._begin(conn, customer_id, kind, actor, now)
            before = _service(row)
            assert before is not None
            after = Service(before.headend, before.mac, before.number, before.options,
                            open=kind == ChangeKind.RESUME)
            conn.execute(customers.update().where(customers.c.id == customer_id).values(
                state=state_during(kind), updated_at=now))
            self._start_change(conn, customer_id, row.kind, kind, before, after, actor, now,
                               billing={"number": row.number})
        return self.customer(customer_id)

    def change_service(self, actor: str, customer_id: int, options: Sequence[str]
                       ) -> dict[str, Any]:
        """FIG. 9: new service options; billing and the head-end are told and a new
        certificate is issued (the old one is revoked, as superseded, once it is)."""
        chosen = check_options(options, self.policy.service_options)
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._begin(conn, customer_id, ChangeKind.SERVICE_CHANGE, actor, now)
            before = _service(row)
            assert before is not None
            if chosen == before.options:
                raise InvalidField("options", "these are the customer's options already")
            after = Service(before.headend, before.mac, before.number, chosen)
            conn.execute(customers.update().where(customers.c.id == customer_id).values(
                options=list(chosen), state=state_during(ChangeKind.SERVICE_CHANGE),
                updated_at=now))
            self._start_change(conn, customer_id, row.kind, ChangeKind.SERVICE_CHANGE, before,
                               after, actor, now,
                               billing={"number": row.number, "options": list(chosen),
                                        "previous_options": list(before.options)})
        return self.customer(customer_id)

    def move(self, actor: str, customer_id: int, headend: str, number: str | None = None
             ) -> dict[str, Any]:
        """FIG. 10: the customer moves to another head-end's segment and gets a number of its
        pool; the old number goes into quarantine, the old head-end closes the MAC, the new one
        opens it, and a certificate with the new phone ID is issued (the old one is revoked at
        once)."""
        headend = check_headend(headend, self.policy.headends)
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._begin(conn, customer_id, ChangeKind.MOVE, actor, now)
            before = _service(row)
            assert before is not None
            if headend == before.headend:
                raise InvalidField("headend", f"the customer is on head-end {headend} already")
            self._release_number(conn, customer_id, actor, now)
            held = self._hold_number(conn, customer_id, headend, number, now)
            after = Service(headend, before.mac, held, before.options)
            conn.execute(customers.update().where(customers.c.id == customer_id).values(
                headend=headend, number=held, state=state_during(ChangeKind.MOVE),
                updated_at=now))
            conn.execute(devices.update().where(devices.c.mac == row.mac).values(
                state=DeviceState.ASSIGNED, updated_at=now))
            outcome = self._start_change(
                conn, customer_id, row.kind, ChangeKind.MOVE, before, after, actor, now,
                billing={"number": held, "previous_number": before.number,
                         "headend": headend, "previous_headend": before.headend})
        self._after(outcome)
        return self.customer(customer_id)

    def swap(self, actor: str, customer_id: int, mac: str) -> dict[str, Any]:
        """FIG. 11: another device for the same customer and number (a loaner while the
        device is repaired, or the repaired device back). The old device's certificate is
        revoked and it is unprovisioned; the new one gets the customer's certificate."""
        mac = normalize_mac(mac)
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._begin(conn, customer_id, ChangeKind.SWAP, actor, now)
            before = _service(row)
            assert before is not None
            if mac == before.mac:
                raise InvalidField("mac", "this is the customer's device already")
            self._take_device(conn, mac, customer_id, actor, now)
            try:
                with conn.begin_nested():
                    conn.execute(customers.update().where(customers.c.id == customer_id).values(
                        mac=mac, state=state_during(ChangeKind.SWAP), updated_at=now))
            except sa.exc.IntegrityError as exc:
                raise Conflict("DEVICE_IN_USE", f"device {mac} belongs to another customer"
                               ) from exc
            after = Service(before.headend, mac, before.number, before.options)
            outcome = self._start_change(conn, customer_id, row.kind, ChangeKind.SWAP, before,
                                         after, actor, now,
                                         billing={"number": row.number, "mac": mac,
                                                  "previous_mac": before.mac})
            self._free_device(conn, before.mac, actor, now)
        self._after(outcome)
        return self.customer(customer_id)

    def _start_change(self, conn: sa.Connection, customer_id: int, customer_kind: str,
                      kind: ChangeKind, before: Service | None, after: Service | None,
                      actor: str, now: datetime, billing: dict[str, Any]) -> Outcome:
        plan = plan_change(before, after)
        detail = {"before": _service_json(before), "after": _service_json(after),
                  "issue_certificate": plan.issue_certificate,
                  "revoke_on_issue": plan.revoke_on_issue}
        change_id = _new_id(conn.execute(changes.insert().values(
            customer_id=customer_id, kind=kind, state=ChangeState.PENDING, actor=actor[:128],
            detail=detail, created_at=now)))
        for step in plan.access:
            self._set_access(conn, step.headend, step.mac, step.action == "open", step.number,
                             now)
            self._queue(conn, change_id, "headend", f"headend:{step.headend}:{step.mac}",
                        {"headend": step.headend, "mac": step.mac, "action": step.action,
                         "number": step.number, "options": list(step.options)}, now)
        if self.policy.kdc_records:
            for kdc in plan.kdc:
                self._queue(conn, change_id, "kdc", f"kdc:{kdc.number}",
                            {"action": kdc.action, "number": kdc.number, "mac": kdc.mac}, now)
        outcome = Outcome()
        if plan.revoke_now is not None:
            outcome.revoked = self._revoke(conn, customer_id, plan.revoke_now, actor, now)
        conn.execute(billing_records.insert().values(
            customer_id=customer_id, change_id=change_id, kind=kind,
            account=customer_kind, detail=_jsonable(billing), created_at=now))
        self._update_lines(conn, before, after, now)
        _audit(conn, now, actor, "change_started", "customer", customer_id, change=change_id,
               kind=kind, before=detail["before"], after=detail["after"],
               steps=[f"{s.action} {s.mac} at {s.headend}" for s in plan.access]
               + ([f"kdc {k.action} {k.number}" for k in plan.kdc]
                  if self.policy.kdc_records else []))
        return outcome

    # --- the controllers' lines (GET /v1/lines) ------------------------------------------

    @staticmethod
    def _next_version(conn: sa.Connection) -> int:
        """The feed's next version. The counter row stays locked until this transaction
        commits, so versions become visible in the order they were taken."""
        conn.execute(line_feed.update().where(line_feed.c.id == 1).values(
            version=line_feed.c.version + 1))
        return int(conn.execute(sa.select(line_feed.c.version)
                                .where(line_feed.c.id == 1)).scalar_one())

    def _set_line(self, conn: sa.Connection, mac: str, number: str, assigned: bool,
                  serial: str | None, now: datetime) -> None:
        """The line (number, MAC) at the controller that reported the device."""
        controller = conn.execute(sa.select(devices.c.controller).where(
            devices.c.mac == mac)).scalar() or ""
        values = {"mac": mac, "state": "assigned" if assigned else "removed",
                  "serial": serial if assigned else None,
                  "version": self._next_version(conn), "updated_at": now}
        updated = conn.execute(controller_lines.update().where(
            controller_lines.c.controller == controller,
            controller_lines.c.number == number).values(**values))
        if updated.rowcount == 0:
            conn.execute(controller_lines.insert().values(controller=controller,
                                                          number=number, **values))

    def _update_lines(self, conn: sa.Connection, before: Service | None,
                      after: Service | None, now: datetime) -> None:
        """A change's effect on the controllers' lines, at its start: a line that is no
        longer open is removed at once (the controller then refuses the device, FIG. 8); an
        open one is assigned, with the device's current operator certificate (kept across a
        suspension or a service change; a new one replaces it when issued)."""
        old = (before.mac, before.number) if before is not None and before.open else None
        new = (after.mac, after.number) if after is not None and after.open else None
        if old is not None and old != new:
            self._set_line(conn, old[0], old[1], False, None, now)
        if new is not None:
            serial = conn.execute(sa.select(devices.c.operator_serial).where(
                devices.c.mac == new[0])).scalar()
            self._set_line(conn, new[0], new[1], True, serial, now)

    def lines_since(self, controller: str, since: int, limit: int = 1000) -> dict[str, Any]:
        """The lines of `controller` changed after version `since`, oldest change first (at
        most `limit`; `more` says whether others follow), and the feed's version."""
        with self.engine.connect() as conn:
            # The counter first: every version up to it is committed (writers take versions
            # one at a time and hold the counter until they commit), so no row up to it can
            # appear later.
            current = int(conn.execute(sa.select(line_feed.c.version)
                                       .where(line_feed.c.id == 1)).scalar_one())
            rows = conn.execute(sa.select(controller_lines).where(
                controller_lines.c.controller == controller,
                controller_lines.c.version > since, controller_lines.c.version <= current)
                .order_by(controller_lines.c.version).limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"controller": controller,
                "version": rows[-1].version if more else current,
                "more": more,
                "lines": [{"number": r.number, "mac": r.mac, "state": r.state,
                           "serial": r.serial, "version": r.version} for r in rows]}

    @staticmethod
    def _set_access(conn: sa.Connection, headend: str, mac: str, open_: bool,
                    number: str | None, now: datetime) -> None:
        values = {"desired": "open" if open_ else "closed", "number": number,
                  "updated_at": now}
        updated = conn.execute(access_entries.update().where(
            access_entries.c.headend == headend, access_entries.c.mac == mac).values(**values))
        if updated.rowcount == 0:
            conn.execute(access_entries.insert().values(headend=headend, mac=mac, **values))

    def _queue(self, conn: sa.Connection, change_id: int, kind: str, target: str,
               payload: dict[str, Any], now: datetime) -> None:
        conn.execute(tasks.insert().values(change_id=change_id, kind=kind, target=target,
                                           payload=payload, state="pending", attempts=0,
                                           not_before=now, created_at=now))

    def _revoke(self, conn: sa.Connection, customer_id: int, reason: str, actor: str,
                now: datetime, keep: str | None = None) -> bool:
        query = sa.select(certificates.c.serial).where(
            certificates.c.customer_id == customer_id, certificates.c.revoked_at.is_(None))
        if keep is not None:
            query = query.where(certificates.c.serial != keep)
        serials = [r.serial for r in conn.execute(query)]
        for serial in serials:
            conn.execute(certificates.update().where(certificates.c.serial == serial).values(
                revoked_at=now, revocation_reason=reason))
            conn.execute(devices.update().where(devices.c.operator_serial == serial).values(
                operator_serial=None, updated_at=now))
            _audit(conn, now, actor, "certificate_revoked", "certificate", serial,
                   customer=customer_id, reason=reason)
        return bool(serials)

    # --- acknowledgements and completion ------------------------------------------------

    def due_tasks(self) -> list[dict[str, Any]]:
        """The tasks to try now: per target (a head-end's MAC, a KDC number) the oldest
        pending one, when its retry time has come; a target's later tasks wait for it."""
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tasks).where(tasks.c.state == "pending")
                                .order_by(tasks.c.id)).all()
        seen: set[str] = set()
        due = []
        for row in rows:
            if row.target in seen:
                continue
            seen.add(row.target)
            if utc(row.not_before) <= now:
                due.append({"id": row.id, "change_id": row.change_id, "kind": row.kind,
                            "payload": row.payload, "attempts": row.attempts})
        return due

    def task_done(self, task_id: int, result: dict[str, Any], actor: str = "system") -> None:
        """Record a step's acknowledgement; complete its change when it was the last."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
            if row is None or row.state != "pending":
                return
            conn.execute(tasks.update().where(tasks.c.id == task_id).values(
                state="done", done_at=now, result=_jsonable(result), last_error=None))
            if row.kind == "headend":
                conn.execute(access_entries.update().where(
                    access_entries.c.headend == row.payload["headend"],
                    access_entries.c.mac == row.payload["mac"]).values(
                    acked_version=result.get("version"), acked_state=result.get("state"),
                    acked_at=now))
                _audit(conn, now, actor, "headend_ack", "access",
                       f"{row.payload['headend']}:{row.payload['mac']}",
                       action=row.payload["action"], version=result.get("version"),
                       task=task_id)
            else:
                _audit(conn, now, actor, "kdc_record", "number", row.payload["number"],
                       action=row.payload["action"], result=result.get("result"), task=task_id)
            outcome = self._complete_if_ready(conn, row.change_id, now)
        self._after(outcome)

    def task_failed(self, task_id: int, error: str) -> datetime:
        """Record a failed attempt; the task is tried again later (doubling the wait)."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(tasks.c.attempts).where(tasks.c.id == task_id)).first()
            attempts = (row.attempts if row else 0) + 1
            wait = min(self.retry_base * (1 << min(attempts - 1, 16)), MAX_TASK_BACKOFF)
            retry_at = now + wait
            conn.execute(tasks.update().where(tasks.c.id == task_id).values(
                attempts=attempts, last_error=error[:500], not_before=retry_at))
        return retry_at

    retry_base = timedelta(seconds=2)

    def pending_billing(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(billing_records).where(
                billing_records.c.acked_at.is_(None)).order_by(billing_records.c.id)
                .limit(limit)).all()
        return [_billing_json(r) for r in rows]

    def ack_billing(self, actor: str, record_id: int) -> dict[str, Any]:
        """The billing host has the record (FIG. 7 "ACK"); a repeated acknowledgement
        changes nothing."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(billing_records).where(
                billing_records.c.id == record_id)).first()
            if row is None:
                raise NotFound("NO_BILLING_RECORD", f"no billing record {record_id}")
            if row.acked_at is not None:
                return _billing_json(row)
            conn.execute(billing_records.update().where(billing_records.c.id == record_id)
                         .values(acked_at=now, acked_by=actor[:128]))
            _audit(conn, now, actor, "billing_ack", "billing", record_id,
                   customer=row.customer_id, change=row.change_id)
            outcome = self._complete_if_ready(conn, row.change_id, now)
            row = conn.execute(sa.select(billing_records).where(
                billing_records.c.id == record_id)).one()
        self._after(outcome)
        return _billing_json(row)

    def _complete_if_ready(self, conn: sa.Connection, change_id: int, now: datetime
                           ) -> Outcome:
        outcome = Outcome()
        # The change's row lock orders concurrent acknowledgements of one change (PostgreSQL;
        # SQLite's write transactions are serial anyway): the last one to take it sees every
        # other step done, and a completed change is seen as such.
        change = conn.execute(sa.select(changes).where(changes.c.id == change_id)
                              .with_for_update()).first()
        if change is None or change.state != ChangeState.PENDING:
            return outcome
        waiting = conn.execute(sa.select(sa.func.count()).select_from(tasks).where(
            tasks.c.change_id == change_id, tasks.c.state == "pending")).scalar()
        unacked = conn.execute(sa.select(sa.func.count()).select_from(billing_records).where(
            billing_records.c.change_id == change_id,
            billing_records.c.acked_at.is_(None))).scalar()
        if waiting or unacked:
            return outcome
        row = self._customer_row(conn, change.customer_id)
        kind = ChangeKind(change.kind)
        serial = None
        if change.detail.get("issue_certificate"):
            serial = self._issue(conn, row, now)
            if change.detail.get("revoke_on_issue"):
                outcome.revoked = self._revoke(conn, row.id, "superseded", "system", now,
                                               keep=serial)
        conn.execute(customers.update().where(customers.c.id == row.id).values(
            state=state_after(kind), updated_at=now))
        conn.execute(changes.update().where(changes.c.id == change_id).values(
            state=ChangeState.DONE, done_at=now))
        _audit(conn, now, "system", "change_completed", "customer", row.id, change=change_id,
               kind=kind, state=state_after(kind), certificate=serial)
        outcome.completed.append(change_id)
        log.info("change_completed", customer=row.id, change=change_id, kind=kind,
                 certificate=serial)
        return outcome

    def _issue(self, conn: sa.Connection, customer: Any, now: datetime) -> str:
        if self.ca is None:
            raise RuntimeError("completing a change needs the operator CA (the service has it)")
        device = conn.execute(sa.select(devices).where(devices.c.mac == customer.mac)).one()
        factory = x509.load_der_x509_certificate(device.factory_cert)
        lifetime = (self.policy.repair_cert_lifetime if customer.kind == CustomerKind.REPAIR
                    else self.policy.device_cert_lifetime)
        # One second later than the newest certificate this device had, so a device checking
        # that a new certificate starts after its current one (seed 001, FIG. 9) accepts it
        # even when both are issued within the same second.
        newest = conn.execute(sa.select(sa.func.max(certificates.c.not_before)).where(
            certificates.c.mac == customer.mac)).scalar()
        issued_at = now.replace(microsecond=0)
        if newest is not None and utc(newest) + timedelta(minutes=5) >= issued_at:
            issued_at = utc(newest) + timedelta(minutes=5, seconds=1)
        cert = self.ca.issue(factory, customer.mac, customer.number, issued_at, lifetime)
        serial = format(cert.serial_number, "x")
        conn.execute(certificates.insert().values(
            serial=serial, mac=customer.mac, customer_id=customer.id, number=customer.number,
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            der=cert.public_bytes(Encoding.DER)))
        conn.execute(devices.update().where(devices.c.id == device.id).values(
            state=DeviceState.PROVISIONED, operator_serial=serial, updated_at=now))
        self._set_line(conn, customer.mac, customer.number, True, serial, now)
        _audit(conn, now, "system", "certificate_issued", "certificate", serial,
               customer=customer.id, mac=customer.mac, number=customer.number,
               not_after=cert.not_valid_after_utc)
        return serial

    # --- the CRL ------------------------------------------------------------------------

    def _after(self, outcome: Outcome) -> None:
        if outcome.revoked:
            self.write_crl()

    def revoked(self) -> list[Revoked]:
        """Revoked certificates not yet expired (an expired one need not be listed,
        RFC 5280 §3.3)."""
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(certificates.c.serial, certificates.c.revoked_at,
                                          certificates.c.revocation_reason)
                                .where(certificates.c.revoked_at.is_not(None),
                                       certificates.c.not_after > now)
                                .order_by(certificates.c.serial)).all()
        return [Revoked(int(r.serial, 16), utc(r.revoked_at), r.revocation_reason)
                for r in rows]

    def revocation_state(self) -> tuple[int, str | None]:
        """(how many certificates are revoked, the latest revocation): when it changes, the
        CRL is out of date (revoked by another process: the command line, another server)."""
        with self.engine.connect() as conn:
            count, latest = conn.execute(sa.select(sa.func.count(),
                                                   sa.func.max(certificates.c.revoked_at))
                                         .where(certificates.c.revoked_at.is_not(None))).one()
        return int(count), None if latest is None else str(latest)

    def write_crl(self) -> bytes | None:
        """Write the CRL file (when the service has its CA and a CRL path)."""
        if self.ca is None or self.policy.crl_file is None:
            return None
        with self._crl_lock:
            der = self.ca.crl(self.revoked(), self.clock().replace(microsecond=0),
                              self.policy.crl_lifetime)
            write_public_file(self.policy.crl_file, der)
        log.info("crl_written", path=str(self.policy.crl_file))
        return der

    # --- reading ------------------------------------------------------------------------

    def customer(self, customer_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = self._customer_row(conn, customer_id)
            device = conn.execute(sa.select(devices).where(devices.c.mac == row.mac)).first()
            pending = conn.execute(sa.select(changes).where(
                changes.c.customer_id == customer_id,
                changes.c.state == ChangeState.PENDING)).first()
            steps = []
            if pending is not None:
                steps = [{"id": t.id, "kind": t.kind, "payload": t.payload, "state": t.state,
                          "attempts": t.attempts, "last_error": t.last_error}
                         for t in conn.execute(sa.select(tasks).where(
                             tasks.c.change_id == pending.id).order_by(tasks.c.id))]
            billing = [_billing_json(b) for b in conn.execute(
                sa.select(billing_records).where(billing_records.c.customer_id == customer_id)
                .order_by(billing_records.c.id))]
            certs = [{"serial": c.serial, "mac": c.mac, "number": c.number,
                      "not_before": utc(c.not_before), "not_after": utc(c.not_after),
                      "revoked_at": utc(c.revoked_at) if c.revoked_at else None,
                      "revocation_reason": c.revocation_reason}
                     for c in conn.execute(sa.select(certificates).where(
                         certificates.c.customer_id == customer_id)
                         .order_by(certificates.c.not_before))]
        return {"id": row.id, "kind": row.kind, "name": row.name, "address": row.address,
                "options": list(row.options), "headend": row.headend, "number": row.number,
                "mac": row.mac, "state": row.state, "created_at": utc(row.created_at),
                "updated_at": utc(row.updated_at),
                "device": None if device is None else {
                    "state": device.state, "operator_serial": device.operator_serial,
                    "address": device.address, "controller": device.controller},
                "pending_change": None if pending is None else {
                    "id": pending.id, "kind": pending.kind, "actor": pending.actor,
                    "created_at": utc(pending.created_at), "steps": steps},
                "billing": billing, "certificates": certs}

    def search(self, query: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """Customers whose name, address, number or MAC contains `query` (all if empty)."""
        select = sa.select(customers).order_by(customers.c.id.desc()).limit(limit)
        text = query.strip()
        if text:
            like = f"%{text.lower()}%"
            conditions: list[sa.ColumnElement[bool]] = [
                          sa.func.lower(customers.c.name).like(like),
                          sa.func.lower(customers.c.address).like(like),
                          customers.c.number.like(f"%{''.join(c for c in text if c.isdigit())}%")
                          if any(c.isdigit() for c in text) else sa.false(),
                          customers.c.mac.like(like)]
            if text.isdigit():
                conditions.append(customers.c.id == int(text))
            select = select.where(sa.or_(*conditions))
        with self.engine.connect() as conn:
            rows = conn.execute(select).all()
        return [{"id": r.id, "kind": r.kind, "name": r.name, "address": r.address,
                 "number": r.number, "mac": r.mac, "headend": r.headend, "state": r.state}
                for r in rows]

    def history(self, customer_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """Audit rows about the customer, its numbers, devices and certificates."""
        with self.engine.connect() as conn:
            row = self._customer_row(conn, customer_id)
            serials = [r.serial for r in conn.execute(sa.select(certificates.c.serial).where(
                certificates.c.customer_id == customer_id))]
            numbers = [r.number for r in conn.execute(
                sa.select(phone_numbers.c.number).join(
                    number_holds, number_holds.c.number_id == phone_numbers.c.id)
                .where(number_holds.c.customer_id == customer_id))]
            macs = {row.mac} | {r.mac for r in conn.execute(sa.select(certificates.c.mac).where(
                certificates.c.customer_id == customer_id))}
            condition = sa.or_(
                sa.and_(audit_log.c.entity == "customer",
                        audit_log.c.entity_id == str(customer_id)),
                sa.and_(audit_log.c.entity == "certificate", audit_log.c.entity_id.in_(serials)),
                sa.and_(audit_log.c.entity == "number", audit_log.c.entity_id.in_(numbers)),
                sa.and_(audit_log.c.entity == "device", audit_log.c.entity_id.in_(macs)),
                sa.and_(audit_log.c.entity == "billing", audit_log.c.entity_id.in_(
                    sa.select(sa.cast(billing_records.c.id, sa.String)).where(
                        billing_records.c.customer_id == customer_id))))
            rows = conn.execute(sa.select(audit_log).where(condition)
                                .order_by(audit_log.c.id.desc()).limit(limit)).all()
        return [{"at": utc(r.at), "actor": r.actor, "action": r.action, "entity": r.entity,
                 "entity_id": r.entity_id, "detail": r.detail} for r in rows]

    def audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.id.desc())
                                .limit(limit)).all()
        return [{"at": utc(r.at), "actor": r.actor, "action": r.action, "entity": r.entity,
                 "entity_id": r.entity_id, "detail": r.detail} for r in rows]

    def access_list(self, headend: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(access_entries).order_by(access_entries.c.headend,
                                                   access_entries.c.mac)
        if headend is not None:
            query = query.where(access_entries.c.headend == headend)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [{"headend": r.headend, "mac": r.mac, "desired": r.desired, "number": r.number,
                 "acked_state": r.acked_state, "acked_version": r.acked_version}
                for r in rows]

    def customer_by_number(self, number: str) -> dict[str, Any]:
        number = normalize_number(number)
        with self.engine.connect() as conn:
            customer_id = conn.execute(sa.select(customers.c.id).where(
                customers.c.number == number, customers.c.state != CustomerState.TERMINATED)
                .order_by(customers.c.id.desc())).scalar()
        if customer_id is None:
            raise NotFound("NO_CUSTOMER", f"no customer has {number}")
        return self.customer(customer_id)


def _billing_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "customer_id": row.customer_id, "change_id": row.change_id,
            "kind": row.kind, "account": row.account, "detail": row.detail,
            "created_at": utc(row.created_at),
            "acked_at": utc(row.acked_at) if row.acked_at else None,
            "acked_by": row.acked_by}


