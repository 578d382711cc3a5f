"""The device's provisioning lifecycle (seed 001, FIG. 5A/5B, 7, 8): the HFC-access and
telephony-access state machines of common/provisioning/device_states.py, fed by what the agent
does, every transition logged (`state_changed`), and the two actions that change the token.

- **Certificate delivery** (FIG. 7, 9). The controller sends the operator certificate and the
  provisioning server's signed request in a SIP MESSAGE over the device's ESP SA
  (common/provisioning/delivery.py). The agent verifies both before it touches the token,
  self-issues on the request (seed 004), installs the certificate as `operator`, answers 200
  (403 with the reason when it refuses), then logs in again with it and sets up a new SA with
  the new ticket ("can't gain access until it reboots": the new login is the reboot).
- **Operator certificate refused** (FIG. 8, 10). A PKINIT with the operator certificate that
  the KDC refuses by policy (`policy_refusal`: the customer is gone, the certificate revoked,
  another operator) makes the agent delete that certificate, the certificate it issued itself
  for that service and the tickets obtained with them, and log in at once with its factory
  certificate: the device is unprovisioned again, and its controller reports it.
- **Refused by the controller.** KDC_ERR_CLIENT_REVOKED to an AP exchange (its number was
  removed) makes the link ask for new tickets (`refused`); repeated refusals wait 1, 2, 4 ...
  seconds (at most a minute) before the next login, so a KDC that has not yet heard of the
  removal is not asked in a loop.
"""

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509

from common.calls import sip
from common.errors import KerberosError, MalformedMessage
from common.log import get_logger
from common.pki.device_policy import phone_id_of
from common.provisioning.delivery import answer, decode_delivery, is_delivery
from common.provisioning.device_states import DeviceEvent, DeviceStates, policy_refusal
from cta.agent import AgentError
from cta.provider import TokenUnavailable
from runtime.controller_link import ControllerLink

if TYPE_CHECKING:
    from cta.daemon import AgentDaemon

log = get_logger("cta.lifecycle")
MAX_REFUSAL_WAIT_S = 60.0


class DeviceLifecycle:
    def __init__(self, daemon: "AgentDaemon") -> None:
        self.daemon = daemon
        self.states = DeviceStates()
        self.refusals = 0  # AP exchanges refused in a row
        self.deliveries: dict[str, int] = {}
        self.last_delivery: dict[str, Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def event(self, event: DeviceEvent, **detail: Any) -> None:
        for change in self.states.feed(event, datetime.now(UTC)):
            log.info("state_changed", machine=change.machine, before=change.before,
                     after=change.after, cause=str(change.event), **detail)

    # Logins (AgentDaemon.obtain) -----------------------------------------------------

    def logged_in(self, certificate: str) -> None:
        self.event(DeviceEvent.LOGIN_OPERATOR if certificate == "operator"
                   else DeviceEvent.LOGIN_FACTORY, certificate=certificate)

    async def login_failed(self, certificate: str, error: BaseException) -> bool:
        """A PKINIT login failed. True when the operator certificate was dropped (the caller
        logs in again at once, with the factory certificate)."""
        code = getattr(error, "code", None)
        if certificate == "operator" and policy_refusal(code):
            dropped = await self.daemon._in_token(self.daemon.agent.drop_operator_certificates)
            log.warning("operator_certificate_dropped", code=code, error=str(error),
                        deleted=dropped)
            self.event(DeviceEvent.OPERATOR_REFUSED, code=code)
            return True
        self.event(DeviceEvent.LOGIN_FAILED)
        if not any(c.endtime > time.time() for c in self.daemon.agent.credentials()):
            self.event(DeviceEvent.TICKET_EXPIRED)
        return False

    # The controller link -------------------------------------------------------------

    def attach(self, link: ControllerLink) -> None:
        link.observer = self.on_link
        link.refused = self.refused

    def intercept(self, link: ControllerLink) -> None:
        """Take certificate deliveries out of the SIP the controller sends us; the rest goes
        where it went (the phone)."""
        passed = link.on_signal

        def on_signal(data: bytes) -> None:
            if not self.on_signal(data) and passed is not None:
                passed(data)

        link.on_signal = on_signal

    def on_link(self, what: str) -> None:
        if what == "sa_established":
            self.refusals = 0
            self.event(DeviceEvent.SA_ESTABLISHED)
        elif what == "sa_lost":
            self.event(DeviceEvent.SA_LOST)
        elif what == "refused":
            self.refusals += 1
            self.event(DeviceEvent.AP_REFUSED)

    async def refused(self) -> None:
        """The controller refused a valid ticket: log in again (after a wait when it keeps
        refusing)."""
        wait = 0.0 if self.refusals <= 1 else min(MAX_REFUSAL_WAIT_S,
                                                   2.0 ** (self.refusals - 2))
        log.warning("controller_refused_ticket", refusals=self.refusals, login_in_s=wait)
        await asyncio.sleep(wait)
        await self.daemon.refresh()

    # Certificate deliveries ----------------------------------------------------------

    def on_signal(self, data: bytes) -> bool:
        """True when `data` was a certificate delivery (handled here)."""
        if not data.startswith(b"MESSAGE "):
            return False
        try:
            message = sip.parse(data)
        except sip.SipError:
            return False
        if not is_delivery(message):
            return False
        task = asyncio.ensure_future(self._delivery(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _reply(self, message: sip.SipMessage, status: int, refusal: str | None = None
                     ) -> None:
        link = self.daemon.link
        if link is None:
            return
        try:
            await link.send_signal(answer(message, status, refusal,
                                          self.daemon.agent.device.principal.replace("/", "-")))
        except (TimeoutError, ConnectionError) as exc:
            log.info("delivery_answer_lost", error=str(exc))

    async def _delivery(self, message: sip.SipMessage) -> None:
        try:
            delivery = decode_delivery(message.body)
            outcome, cert = await self.daemon._in_token(self.daemon.agent.install_delivery,
                                                        delivery)
        except KerberosError as exc:  # SelfCertRefused, MalformedMessage
            self._count("refused")
            log.warning("delivery_refused", reason=exc.status, detail=exc.detail)
            await self._reply(message, 400 if isinstance(exc, MalformedMessage) else 403,
                              exc.status)
            return
        except (AgentError, TokenUnavailable, KeyError, OSError) as exc:
            self._count("failed")
            log.warning("delivery_failed", error=f"{type(exc).__name__}: {exc}")
            await self._reply(message, 500, "TOKEN_ERROR")
            return
        await self._reply(message, 200)
        if outcome != "installed":
            return
        self._count("installed")
        self.last_delivery = {**_describe(cert), "at": datetime.now(UTC).isoformat()}
        log.info("operator_certificate_installed", serial=self.last_delivery["serial"],
                 not_before=self.last_delivery["not_before"])
        self.event(DeviceEvent.CERTIFICATE_RECEIVED)
        # FIG. 5B: the certificate takes effect at the next login ("after a reboot"): log in
        # now, and set up an SA with the new ticket.
        await self.daemon.refresh()
        if self.daemon.link is not None:
            self.daemon.link.establish()

    def _count(self, what: str) -> None:
        self.deliveries[what] = self.deliveries.get(what, 0) + 1

    # The management op {"op": "state"} ------------------------------------------------

    def status(self) -> dict[str, Any]:
        states = self.states
        operator = None
        try:
            certificate: str | None = self.daemon.certificate()
            operator = _describe(self.daemon.agent.provider.certificate("operator"))
        except TokenUnavailable:
            certificate = None
        except KeyError:
            pass  # no operator certificate
        return {
            "hfc": {"state": str(states.hfc), "since": _iso(states.since.get("hfc"))},
            "telephony": {"state": str(states.telephony),
                          "since": _iso(states.since.get("telephony"))},
            "certificate": certificate,
            "operator_certificate": operator,
            "last_delivery": self.last_delivery,
            "deliveries": dict(self.deliveries),
            "refusals": self.refusals,
            "history": [{"machine": t.machine, "before": t.before, "after": t.after,
                         "event": str(t.event), "at": t.at.isoformat()}
                        for t in states.history]}


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    pid = phone_id_of(cert)
    return {"serial": format(cert.serial_number, "x"),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "phone_id": pid.hex() if pid else None}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
