"""The signaling controller's side of provisioning (seed 001, FIG. 7 and 8), with no I/O: the
lines the provisioning service assigned to this controller, which devices it admits, which
unprovisioned devices it reports, and which operator certificates it delivers.

- **Lines.** The controller pulls `GET /v1/lines?controller=<principal>&since=<version>`
  from the provisioning service (docs/protocol.md §11): rows (number, MAC, assigned |
  removed, the serial of the certificate to deliver, version). `LineTable.apply` turns each
  page into what changed: lines to add to call routing, lines to take away, devices that hold
  no line any more (their SAs go at once) and certificates to deliver. Nothing else changes
  the table: there is no way to push an assignment to a controller, so one that does not come
  from the provisioning service (over TLS the controller verified) cannot reach it.
- **Admission** (`LineTable.check_admission`, at every AP exchange, after the ticket was
  verified): a device (`cta/<mac>`) holding an *unrestricted* ticket is admitted only while
  its MAC holds a line here (or is one of the controller's configured lines); otherwise
  `LineRemoved` (KDC_ERR_CLIENT_REVOKED), "the ticket will be rejected because that phone
  number is no longer in the signaling controller's database" (FIG. 8), which makes the device
  log in again. Restricted (unprovisioned) devices, network servers and peer controllers are
  not concerned. Until the first complete pull the rule is not applied (a controller that
  starts while the provisioning service is down keeps serving its devices).
- **Reports** (`PendingReports`): each new SA of an unprovisioned device is reported once
  (its certificate chain from the ticket's DeviceRestriction, its address), off the request
  path; a failed report is retried (1 s doubling to 5 minutes), a newer SA's report replacing
  one not yet sent.
- **Deliveries** (`Deliveries`): a line whose certificate serial is new is delivered to the
  device in a SIP MESSAGE over its ESP SA (common/provisioning/delivery.py), repeated (1 s
  doubling, at most `MAX_SENDS` per SA) until the device answers; a final answer ends it
  (2xx delivered, else refused), a new SA of the device starts the repeats again.
"""

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.codes import ErrorCode
from common.errors import KerberosError, MalformedMessage
from common.messages.restriction import DeviceRestriction

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NUMBER = re.compile(r"^\+?[0-9]{1,15}$")
MAX_SENDS = 6
MAX_BACKOFF_S = 300.0


class LineRemoved(KerberosError):
    """A device whose ticket is still valid holds no line here any more (FIG. 8)."""

    code = ErrorCode.KDC_ERR_CLIENT_REVOKED


def device_principal(mac: str) -> str:
    """`cta/<12 lowercase hex digits>` of a MAC address (common/pki/device_policy.py)."""
    return "cta/" + mac.replace(":", "").lower()


@dataclass(frozen=True, slots=True)
class Line:
    number: str
    mac: str
    assigned: bool
    serial: str | None
    version: int

    @property
    def principal(self) -> str:
        return device_principal(self.mac)


@dataclass(frozen=True, slots=True)
class LinePage:
    version: int
    more: bool
    lines: tuple[Line, ...]


def decode_line_page(data: Any) -> LinePage:
    """A `GET /v1/lines` answer (parsed JSON), every field checked; MalformedMessage if it is
    not one."""
    try:
        version, more, rows = data["version"], data["more"], data["lines"]
        if not isinstance(version, int) or version < 0 or not isinstance(more, bool) \
                or not isinstance(rows, list):
            raise TypeError("version, more, lines")
        lines = []
        for row in rows:
            number, mac, state, serial, row_version = (
                row["number"], row["mac"], row["state"], row["serial"], row["version"])
            if not (isinstance(number, str) and _NUMBER.match(number) and isinstance(mac, str)
                    and _MAC.match(mac) and state in ("assigned", "removed")
                    and (serial is None or (isinstance(serial, str)
                                            and re.fullmatch(r"[0-9a-f]{1,40}", serial)))
                    and isinstance(row_version, int) and 0 < row_version):
                raise ValueError(f"bad line {row!r:.200}")
            lines.append(Line(number, mac, state == "assigned", serial, row_version))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage("BAD_LINE_PAGE", str(exc)) from exc
    return LinePage(version, more, tuple(lines))


@dataclass
class LineChanges:
    """What one page changed, for the daemon to act on."""

    assigned: list[Line] = field(default_factory=list)  # new or changed: routing gets them
    removed: list[Line] = field(default_factory=list)  # gone: routing loses them
    revoked: list[str] = field(default_factory=list)  # principals with no line left here
    deliver: list[Line] = field(default_factory=list)  # a certificate to deliver
    reset: bool = False  # the feed went back (a restored database): pull again from 0


class LineTable:
    """The lines the provisioning service assigned to this controller, by number, and the
    feed version they are at. `static` are the principals of the controller's configured
    lines, which are admitted whatever the feed says."""

    def __init__(self, static: Iterable[str] = ()) -> None:
        self.static = frozenset(static)
        self.version = 0
        self.synced = False
        self.lines: dict[str, Line] = {}  # number → line
        self.by_principal: dict[str, str] = {}  # principal → number
        self._seen: set[str] | None = None  # numbers seen by a full pull under way

    def apply(self, page: LinePage) -> LineChanges:
        """Apply one page pulled with `since=self.version`."""
        changes = LineChanges()
        if page.version < self.version:
            # The service's feed is behind what we hold: its database was restored. Pull
            # everything again; what that full pull does not list is removed at its end.
            self.version = 0
            self.synced = False
            changes.reset = True
            return changes
        if self.version == 0 and self._seen is None:
            self._seen = set()
        for line in page.lines:
            self._apply_line(line, changes)
            if self._seen is not None:
                self._seen.add(line.number)
        self.version = page.version
        if not page.more:
            if self._seen is not None:
                for number in [n for n in self.lines if n not in self._seen]:
                    self._remove(self.lines[number], changes)
                self._seen = None
            self.synced = True
        return changes

    def _apply_line(self, line: Line, changes: LineChanges) -> None:
        current = self.lines.get(line.number)
        if not line.assigned:
            if current is not None:
                self._remove(current, changes)
            return
        if current is not None and current.mac != line.mac:
            self._remove(current, changes)
            current = None
        self.lines[line.number] = line
        principal = line.principal
        previous = self.by_principal.get(principal)
        if previous is not None and previous != line.number:
            # The device's number changed (a segment move within this controller).
            old = self.lines.pop(previous, None)
            if old is not None:
                changes.removed.append(old)
        self.by_principal[principal] = line.number
        if current is None or current.number != line.number:
            changes.assigned.append(line)
        if line.serial is not None and (current is None or current.serial != line.serial):
            changes.deliver.append(line)

    def _remove(self, line: Line, changes: LineChanges) -> None:
        del self.lines[line.number]
        changes.removed.append(line)
        principal = line.principal
        if self.by_principal.get(principal) == line.number:
            del self.by_principal[principal]
            if principal not in self.static:
                changes.revoked.append(principal)

    def check_admission(self, client: str, restriction: DeviceRestriction | None) -> None:
        """Raise LineRemoved for a device with an unrestricted ticket and no line here (the
        module's docstring); `client` is the ticket's principal with or without realm."""
        principal = client.partition("@")[0]
        if restriction is not None or not self.synced or not principal.startswith("cta/"):
            return
        if principal in self.by_principal or principal in self.static:
            return
        raise LineRemoved("NO_LINE", principal)


def _backoff(failures: int) -> float:
    return min(MAX_BACKOFF_S, 2.0 ** max(0, failures - 1))


@dataclass
class Report:
    """An unprovisioned device to report: its certificate chain (DER, device first, from the
    ticket) and the address its SA came from."""

    principal: str
    certificates: tuple[bytes, ...]
    address: str
    failures: int = 0
    due: float = 0.0


class PendingReports:
    """Reports not yet acknowledged by the provisioning service, one per device (the newest
    SA's), each retried with a growing delay."""

    def __init__(self, max_pending: int = 100_000) -> None:
        self.pending: dict[str, Report] = {}
        self.max_pending = max_pending

    def add(self, principal: str, restriction: DeviceRestriction, address: str,
            mono: float) -> bool:
        """A new SA of an unprovisioned device; False when there is nothing to report (no
        chain in the ticket, or too many reports waiting)."""
        if not restriction.certificates:
            return False
        if principal not in self.pending and len(self.pending) >= self.max_pending:
            return False
        self.pending[principal] = Report(principal, restriction.certificates, address,
                                         due=mono)
        return True

    def due(self, mono: float) -> list[Report]:
        return [r for r in self.pending.values() if r.due <= mono]

    def done(self, report: Report) -> None:
        if self.pending.get(report.principal) is report:
            del self.pending[report.principal]

    def failed(self, report: Report, mono: float) -> float:
        """Schedule the next try; returns its delay in seconds."""
        report.failures += 1
        delay = _backoff(report.failures)
        report.due = mono + delay
        return delay


@dataclass
class Delivery:
    """An operator certificate to deliver to a device (its line's serial)."""

    principal: str
    mac: str
    number: str
    serial: str
    call_id: str
    state: str = "pending"  # pending → delivered | refused
    sends: int = 0  # MESSAGEs sent on the device's current SA
    due: float = 0.0
    answer: int = 0  # the device's final SIP status


class Deliveries:
    """The certificate deliveries under way or done, by device."""

    def __init__(self, new_call_id: Callable[[], str]) -> None:
        self.by_principal: dict[str, Delivery] = {}
        self.by_call_id: dict[str, Delivery] = {}
        self.new_call_id = new_call_id

    def want(self, line: Line, mono: float) -> Delivery | None:
        """A line with a certificate: deliver it unless that serial was delivered already."""
        if line.serial is None:
            return None
        current = self.by_principal.get(line.principal)
        if current is not None and current.serial == line.serial:
            return None
        self.cancel(line.principal)
        delivery = Delivery(line.principal, line.mac, line.number, line.serial,
                            self.new_call_id(), due=mono)
        self.by_principal[delivery.principal] = delivery
        self.by_call_id[delivery.call_id] = delivery
        return delivery

    def cancel(self, principal: str) -> None:
        """The line went (or changed): forget its delivery, done or not."""
        old = self.by_principal.pop(principal, None)
        if old is not None:
            self.by_call_id.pop(old.call_id, None)

    def due(self, mono: float, online: Callable[[str], bool]) -> list[Delivery]:
        return [d for d in self.by_principal.values() if d.state == "pending"
                and d.due <= mono and d.sends < MAX_SENDS and online(d.principal)]

    def sent(self, delivery: Delivery, mono: float) -> None:
        delivery.sends += 1
        delivery.due = mono + _backoff(delivery.sends)

    def new_sa(self, principal: str, mono: float) -> None:
        """The device has a new SA: send a pending delivery on it at once."""
        delivery = self.by_principal.get(principal)
        if delivery is not None and delivery.state == "pending":
            delivery.sends = 0
            delivery.due = mono

    def answered(self, call_id: str, status: int) -> Delivery | None:
        """The device's response to a MESSAGE; the delivery when it was final."""
        delivery = self.by_call_id.get(call_id)
        if delivery is None or status < 200 or delivery.state != "pending":
            return None
        delivery.state = "delivered" if status < 300 else "refused"
        delivery.answer = status
        return delivery

    def status(self) -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for delivery in self.by_principal.values():
            counts[delivery.state] = counts.get(delivery.state, 0) + 1
        return counts
