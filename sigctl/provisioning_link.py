"""The signaling controller's link to the provisioning service (seed 001, FIG. 7 and 8): HTTPS
with mutual TLS to its API listener, off the key-management path. The decisions are in
common/provisioning/lines.py; this module does the I/O.

- **Reports.** Each new SA of an unprovisioned device (a ticket with the DeviceRestriction) is
  reported with `POST /v1/devices/report`: the certificate chain the KDC verified at PKINIT
  (carried in the restriction), the device's address and this controller's principal. The
  AP exchange never waits for it; a failed report is retried, a refusal (403, 409) is logged.
- **Lines.** Every `provisioning_poll_s` the controller pulls `GET /v1/lines` from the
  version it holds: assigned lines become lines of call control (the configured `lines`
  win), removed ones stop being lines, and a device left without a line loses its SAs at
  once (a Rekey tells it, its next AP exchange is refused with KDC_ERR_CLIENT_REVOKED and it
  logs in again). The controller opens no listener for this: an assignment can only come from
  the service whose TLS certificate chains to `provisioning_ca_file`.
- **Certificate deliveries.** A line whose operator certificate is new is delivered to its
  device: the seed 004 request and the certificate are fetched from the service
  (`GET /v1/devices/{mac}/certificate-request`, `.../certificate`) and sent in a SIP MESSAGE
  over the device's ESP SA (common/provisioning/delivery.py), repeated until it answers.
"""

import asyncio
import base64
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from common.calls import sip
from common.errors import MalformedMessage
from common.log import get_logger
from common.messages.restriction import DeviceRestriction
from common.pktc import esp
from common.pktc.km_server import ControllerSa
from common.provisioning.delivery import (
    CertificateDelivery,
    build_delivery_message,
    refusal_of,
)
from common.provisioning.lines import (
    Deliveries,
    Delivery,
    LineChanges,
    LineTable,
    PendingReports,
    Report,
    decode_line_page,
)
from runtime.controller_link import SIP_PORT
from runtime.https_client import tls_context
from sigctl.settings import SigctlSettings

if TYPE_CHECKING:
    from sigctl.server import Controller

log = get_logger("sigctl.provisioning")
TICK_S = 0.2
CALL_ID_PREFIX = "certificate-delivery-"  # the Call-IDs of our MESSAGEs


class ProvisioningLink:
    def __init__(self, settings: SigctlSettings, controller: "Controller") -> None:
        assert settings.provisioning_url and settings.provisioning_ca_file
        self.settings = settings
        self.controller = controller
        self.base = settings.provisioning_url.rstrip("/")
        self.context = tls_context(settings.provisioning_ca_file,
                                   settings.provisioning_client_cert_file,
                                   settings.provisioning_client_key_file)
        self.client: httpx.AsyncClient | None = None
        self.table = LineTable(settings.lines.values())
        self.reports = PendingReports()
        self.deliveries = Deliveries(
            lambda: f"{CALL_ID_PREFIX}{secrets.token_hex(12)}@{settings.principal}")
        # serial → what to deliver, fetched once per certificate while it is under way
        self._bodies: dict[str, CertificateDelivery] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._sync_failing = False
        controller.core.admit = self.admit

    # Hooks the controller calls ------------------------------------------------------

    def admit(self, client: str, restriction: DeviceRestriction | None) -> None:
        """KeyManagementServer.admit: common/provisioning/lines.py `check_admission`."""
        self.table.check_admission(client, restriction)

    def sa_installed(self, sa: ControllerSa) -> None:
        """A new SA: report the device if it is unprovisioned; send it a pending delivery."""
        principal = sa.client.partition("@")[0]
        mono = time.monotonic()
        if sa.restriction is not None and self.reports.add(principal, sa.restriction,
                                                           sa.peer[0], mono):
            self._wake.set()
        self.deliveries.new_sa(principal, mono)
        self._wake.set()

    def claims(self, sa: ControllerSa, payload: bytes) -> bool:
        """A device's SIP response to one of our MESSAGEs (True: it was ours)."""
        # Call control's traffic passes with two byte comparisons, unparsed.
        if not payload.startswith(b"SIP/2.0 ") or CALL_ID_PREFIX.encode() not in payload:
            return False
        try:
            message = sip.parse(payload)
        except sip.SipError:
            return False
        delivery = self.deliveries.by_call_id.get(message.call_id)
        if delivery is None or delivery.principal != sa.client.partition("@")[0]:
            return False
        done = self.deliveries.answered(message.call_id, message.status)
        if done is not None:
            self._bodies.pop(done.serial, None)
            if done.state == "delivered":
                log.info("certificate_delivered", client=done.principal, serial=done.serial,
                         number=done.number)
            else:
                log.warning("certificate_refused", client=done.principal, serial=done.serial,
                            status=message.status, reason=refusal_of(message))
        return True

    # Running -------------------------------------------------------------------------

    async def start(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base, verify=self.context,
                                        timeout=self.settings.provisioning_timeout_s,
                                        trust_env=False)
        self._tasks = [asyncio.create_task(self._pull_lines()),
                       asyncio.create_task(self._work())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()

    def status(self) -> dict[str, Any]:
        return {"version": self.table.version, "synced": self.table.synced,
                "lines": len(self.table.lines), "reports_pending": len(self.reports.pending),
                "deliveries": dict(self.deliveries.status())}

    async def _get(self, path: str, **params: Any) -> Any:
        assert self.client is not None
        response = await self.client.get(path, params=params or None)
        if response.status_code != 200:
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}: {response.text[:200]}",
                                        request=response.request, response=response)
        return response.json()

    async def _pull_lines(self) -> None:
        while True:
            try:
                await self.sync()
                if self._sync_failing:
                    log.info("lines_synced", version=self.table.version,
                             lines=len(self.table.lines))
                self._sync_failing = False
            except (httpx.HTTPError, MalformedMessage, ValueError) as exc:
                # Logged when it starts failing, not at every poll.
                if not self._sync_failing:
                    log.warning("lines_sync_failed", error=f"{type(exc).__name__}: {exc}",
                                version=self.table.version)
                self._sync_failing = True
            await asyncio.sleep(self.settings.provisioning_poll_s)

    async def sync(self) -> None:
        """Pull the lines changed since the version we hold, every page of them."""
        while True:
            page = decode_line_page(await self._get(
                "/v1/lines", controller=self.settings.principal, since=self.table.version))
            changes = self.table.apply(page)
            self._act(changes)
            if changes.reset:
                log.warning("lines_reset", reason="the service's feed is behind ours")
                continue
            if not page.more:
                return

    def _act(self, changes: LineChanges) -> None:
        calls, configured = self.controller.calls, self.settings.lines
        for line in changes.removed:
            if line.number not in configured and calls.lines.get(line.number) == \
                    line.principal:
                del calls.lines[line.number]
            if calls.numbers.get(line.principal) == line.number:
                del calls.numbers[line.principal]
            log.info("line_removed", number=line.number, client=line.principal,
                     version=line.version)
        for line in changes.assigned:
            if line.number not in configured:
                calls.lines[line.number] = line.principal
                calls.numbers[line.principal] = line.number
            log.info("line_assigned", number=line.number, client=line.principal,
                     version=line.version)
        now, realm = datetime.now(UTC), self.settings.realm
        for principal in changes.revoked:
            self.deliveries.cancel(principal)
            for sa, rekey in self.controller.core.revoke_client(f"{principal}@{realm}", now):
                self.controller.km.sendto(rekey, sa.peer)
                log.info("sa_revoked", client=principal, peer=f"{sa.peer[0]}:{sa.peer[1]}",
                         spi=f"0x{sa.inbound.spi:08x}", reason="NO_LINE")
        mono = time.monotonic()
        for line in changes.deliver:
            if self.deliveries.want(line, mono) is not None:
                self._wake.set()

    async def _work(self) -> None:
        """Reports and deliveries that are due, whenever woken and every TICK_S."""
        while True:
            self._wake.clear()
            mono = time.monotonic()
            jobs = [self._report(r) for r in self.reports.due(mono)]
            jobs += [self._deliver(d) for d in self.deliveries.due(mono, self._online)]
            if jobs:
                await asyncio.gather(*jobs)
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass

    def _sa(self, principal: str) -> ControllerSa | None:
        sa = self.controller.core.by_client.get(f"{principal}@{self.settings.realm}")
        return sa if sa is not None and sa.expires > time.monotonic() else None

    def _online(self, principal: str) -> bool:
        return self._sa(principal) is not None

    async def _report(self, report: Report) -> None:
        assert self.client is not None
        report.due = float("inf")  # not again while this attempt runs
        body = {"certificates": [base64.b64encode(c).decode() for c in report.certificates],
                "address": report.address, "controller": self.settings.principal}
        try:
            response = await self.client.post("/v1/devices/report", json=body)
        except httpx.HTTPError as exc:
            delay = self.reports.failed(report, time.monotonic())
            log.warning("device_report_failed", client=report.principal,
                        error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            return
        if response.status_code == 200:
            self.reports.done(report)
            answer = response.json()
            log.info("device_reported", client=report.principal, address=report.address,
                     state=answer.get("state"), number=answer.get("number"))
        elif response.status_code in (403, 409, 422):
            # The service refused this device (not under a manufacturer root, a clone):
            # sending the same again would change nothing.
            self.reports.done(report)
            log.warning("device_report_refused", client=report.principal,
                        status=response.status_code, error=response.text[:200])
        else:
            delay = self.reports.failed(report, time.monotonic())
            log.warning("device_report_failed", client=report.principal,
                        error=f"HTTP {response.status_code}", retry_in_s=delay)

    async def _body(self, delivery: Delivery) -> CertificateDelivery | None:
        """What to deliver, fetched once per certificate; None when the service has no such
        certificate now (the feed will say what changed)."""
        body = self._bodies.get(delivery.serial)
        if body is not None:
            return body
        certificate = await self._get(f"/v1/devices/{delivery.mac}/certificate")
        if certificate.get("serial") != delivery.serial:
            return None
        request = await self._get(f"/v1/devices/{delivery.mac}/certificate-request")
        body = CertificateDelivery(base64.b64decode(request["request"], validate=True),
                                   _der(certificate["certificate"]),
                                   tuple(_der(p) for p in certificate.get("chain", [])))
        self._bodies[delivery.serial] = body
        return body

    async def _deliver(self, delivery: Delivery) -> None:
        self.deliveries.sent(delivery, time.monotonic())
        try:
            body = await self._body(delivery)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("certificate_fetch_failed", client=delivery.principal,
                        serial=delivery.serial, error=f"{type(exc).__name__}: {exc}")
            return
        sa = self._sa(delivery.principal)
        if body is None or sa is None or delivery.state != "pending":
            return
        message = build_delivery_message(
            body, principal=delivery.principal, realm=self.settings.realm,
            controller=self.settings.principal, call_id=delivery.call_id,
            branch="z9hG4bK" + delivery.call_id.partition("@")[0][-16:],
            tag=delivery.call_id.partition("@")[0][-8:])
        self.controller.send(sa, esp.udp_datagram(SIP_PORT, SIP_PORT, message))
        log.info("certificate_sent", client=delivery.principal, serial=delivery.serial,
                 number=delivery.number, attempt=delivery.sends,
                 spi=f"0x{sa.inbound.spi:08x}")


def _der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
