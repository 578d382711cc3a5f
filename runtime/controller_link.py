"""A link to a signaling controller, as its client: key management over UDP and signaling over
ESP in UDP, one socket for both (the controller answers key management from its km port and
ESP from its ESP port, which is how the two are told apart). Devices (`cta run`), network
servers and other controllers (the controller-to-controller link) all hold one.

Inner datagrams the controller sends to our SIP port (5060) go to `on_signal`.

- An AP exchange with the controller ticket held in the ccache sets up the SA, at start and
  whenever needed. AP Requests are retransmitted up to 5 times: every 1 s when the device
  started the exchange (pktcMtaDevCmsSolicitedKeyTimeout), from 0.5 s doubling when a Wake Up
  or Rekey did (…UnsolicitedKeyNomTimeout) — RFC 4682 defaults.
- The SA is renewed by a new AP exchange `grace` seconds before its lifetime ends.
- A Wake Up (the controller lost our SA, e.g. it restarted) or a verified Rekey starts a new
  AP exchange echoing the server nonce, with the same ticket: no PKINIT.
- An Error Reply KRB_AP_ERR_SKEW (its clock or ours was stepped) teaches the link the
  controller's time (the error's stime); the AP Request goes again at once, dated by that
  clock, and later ones too, until another skew error corrects it (`clock_offsets`).
- `echo` sends a datagram to the controller's echo service through ESP and waits for it;
  three unanswered tries also mean the SA is gone, and the link re-establishes it.
- With backup controllers, a controller that does not answer the AP exchange is given up for
  the next one (its ticket from the ccache, obtained by TGS).
- An Error Reply KDC_ERR_CLIENT_REVOKED (the controller no longer admits our ticket: the
  number was removed, seed 001 FIG. 8) ends the exchange; the link asks for new tickets
  (`refused`, else `renew`) and starts again with them.
- `observer`, when set, hears "sa_established", "sa_lost" and "refused" (the device's
  lifecycle, cta/lifecycle.py).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from common.codes import ErrorCode
from common.crypto import Key
from common.errors import KerberosError
from common.kerberos.ccache import Credential
from common.kerberos.renewal import clock_offset
from common.log import get_logger
from common.messages.krb_error import KrbError
from common.messages.ticket import decode_ticket
from common.messages.types import PrincipalName
from common.pktc import esp
from common.pktc.km_client import ClientSa, KeyManagementClient

log = get_logger("km_link")
ECHO_PORT = 7
LOCAL_PORT = 5060  # our inner SIP port, also the source of echo requests
SIP_PORT = 5060
# The keepalive probe, padded so that its ESP packet (at least 108 bytes with 64 bytes of
# payload) is never shorter than a Wake Up for a controller name of up to 100 characters.
KEEPALIVE = b"keepalive".ljust(64, b".")
# New AP Requests an exchange sends because of skew errors, at most: the Error Reply is not
# authenticated, so a forged one must not start an endless exchange of requests.
MAX_SKEW_RETRIES = 3
EARLY_SIGNALS = 8  # SIP datagrams held until on_signal is attached


@dataclass(frozen=True)
class ControllerAddress:
    principal: str  # e.g. sigctl/sc1.lab.test
    host: str
    km_port: int
    esp_port: int


class ControllerLink(asyncio.DatagramProtocol):
    def __init__(self, controllers: list[ControllerAddress],
                 ticket_for: Callable[[str], Credential | None],
                 renew: Callable[[], Awaitable[None]], *, keepalive_s: float = 20.0,
                 on_signal: Callable[[bytes], None] | None = None,
                 local_host: str = "127.0.0.1",
                 refused: Callable[[], Awaitable[None]] | None = None) -> None:
        self.controllers = controllers
        # SIP that arrives over the SA before a handler is attached (the broker's first
        # Broker-Pool offer can come with the first SA) waits here, a few datagrams at most.
        self._early_signals: list[bytes] = []
        self._on_signal = on_signal
        self.local_host = local_host
        self.current = 0
        self.ticket_for = ticket_for
        self.renew = renew
        self.refused = refused  # new tickets after KDC_ERR_CLIENT_REVOKED; default: renew
        self.observer: Callable[[str], None] | None = None
        self._relogin: asyncio.Task[None] | None = None
        self.keepalive_s = keepalive_s
        self.transport: Any = None
        self.client: KeyManagementClient | None = None
        self.sa: ClientSa | None = None
        self.sa_ready = asyncio.Event()
        self._reply: asyncio.Future[bytes] | None = None
        self._echo_payload = b""
        self._establishing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.exchanges = 0
        # Each controller's time minus ours, learned from its KRB_AP_ERR_SKEW; the AP
        # Requests of the running exchange (the one retransmitted) and what dated it.
        self.clock_offsets: dict[str, timedelta] = {}
        self._request = b""
        self._request_args = (0, False)
        self._request_offset = timedelta()
        self._skew_retries = 0

    @property
    def on_signal(self) -> Callable[[bytes], None] | None:
        return self._on_signal

    @on_signal.setter
    def on_signal(self, handler: Callable[[bytes], None] | None) -> None:
        self._on_signal = handler
        if handler is None:
            return
        early, self._early_signals = self._early_signals, []
        for payload in early:
            handler(payload)

    @property
    def controller(self) -> ControllerAddress:
        return self.controllers[self.current]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.local_host, 0))
        self.establish()
        self._spawn(self._keepalive())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    # The AP exchange -----------------------------------------------------------------

    def establish(self, server_nonce: int = 0, reestablish: bool = False,
                  solicited: bool = True) -> None:
        """Start an AP exchange unless one is running."""
        if self._establishing is not None and not self._establishing.done():
            return
        self.sa_ready.clear()
        self._establishing = asyncio.ensure_future(
            self._exchange(server_nonce, reestablish, solicited))

    async def _exchange(self, server_nonce: int, reestablish: bool, solicited: bool) -> None:
        while True:
            controller = self.controller
            credential = self.ticket_for(controller.principal)
            if credential is None or credential.endtime <= time.time():
                await self.renew()
                credential = self.ticket_for(controller.principal)
                if credential is None:
                    log.warning("no_controller_ticket", controller=controller.principal)
                    await asyncio.sleep(5)
                    continue
            client = KeyManagementClient(
                ticket=decode_ticket(credential.ticket),
                session_key=Key(credential.enctype, credential.key),
                cname=PrincipalName(credential.client.name_type, credential.client.components),
                crealm=credential.client.realm)
            self.client = client
            started = time.perf_counter()
            self._request_args = (server_nonce, reestablish)
            self._skew_retries = 0
            self._new_request()
            wait = 1.0 if solicited else 0.5
            for _ in range(6):  # the first try and 5 retransmissions
                self.transport.sendto(self._request, (controller.host, controller.km_port))
                try:
                    await asyncio.wait_for(self.sa_ready.wait(), wait)
                    self.exchanges += 1
                    assert self.sa is not None
                    log.info("sa_established", controller=controller.principal,
                             spi_in=f"0x{self.sa.inbound.spi:08x}",
                             spi_out=f"0x{self.sa.outbound.spi:08x}",
                             suite=self.sa.suite.name, lifetime_s=self.sa.lifetime_s,
                             reestablish=reestablish,
                             ms=round((time.perf_counter() - started) * 1000, 1))
                    self._spawn(self._rekey_timer(self.sa))
                    self._notify("sa_established")
                    return
                except TimeoutError:
                    if not solicited:
                        wait *= 2
            log.warning("controller_unanswered", controller=controller.principal)
            if len(self.controllers) > 1:
                self.current = (self.current + 1) % len(self.controllers)
                server_nonce, reestablish, solicited = 0, True, True
                log.info("failover", controller=self.controller.principal)

    def _new_request(self) -> None:
        """The running exchange's AP Request, dated by what we know of the controller's
        clock (ours until a skew error teaches us otherwise)."""
        assert self.client is not None
        offset = self.clock_offsets.get(self.controller.principal, timedelta())
        server_nonce, reestablish = self._request_args
        self._request = self.client.ap_request(datetime.now(UTC) + offset,
                                               server_nonce=server_nonce,
                                               reestablish=reestablish)
        self._request_offset = offset

    def _skew(self, error: KrbError) -> None:
        """KRB_AP_ERR_SKEW: the controller's clock and ours differ by more than it accepts
        (one of them was stepped). Its stime/susec are its current time (RFC 4120 §5.9.1):
        send the pending AP Request again at once, dated by that clock, as `Agent.login` does
        with the KDC's. The answer to a request already dated by that clock (a retransmission
        of the one that failed) changes nothing."""
        if self.client is None or self.client.pending is None:
            return
        offset = clock_offset(error, datetime.now(UTC))
        if abs(offset - self._request_offset) < timedelta(seconds=1):
            return
        if self._skew_retries >= MAX_SKEW_RETRIES:
            log.warning("controller_clock_skew", controller=self.controller.principal,
                        offset_s=round(offset.total_seconds(), 3), action="ignored",
                        reason="too many skew errors in this exchange")
            return
        self._skew_retries += 1
        self.clock_offsets[self.controller.principal] = offset
        log.warning("controller_clock_skew", controller=self.controller.principal,
                    offset_s=round(offset.total_seconds(), 3), action="resent")
        self._new_request()
        self.transport.sendto(self._request, (self.controller.host, self.controller.km_port))

    async def _rekey_timer(self, sa: ClientSa) -> None:
        await asyncio.sleep(max(0.0, sa.rekey_at() - time.monotonic()))
        if self.sa is sa:
            self.establish()

    # Datagrams -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        controller = self.controller
        try:
            if addr[1] == controller.esp_port:
                self._esp(data)
            elif addr[1] == controller.km_port:
                self._km(data)
        except (KerberosError, esp.EspDropped) as exc:
            log.info("dropped", peer=f"{addr[0]}:{addr[1]}", reason=exc.status)
        except Exception:  # our bug: log it, keep the agent running
            log.exception("internal_error", peer=f"{addr[0]}:{addr[1]}")

    def _km(self, data: bytes) -> None:
        if self.client is None:
            return
        event = self.client.receive(data, time.monotonic())
        if event.kind == "sa" and event.sa is not None:
            self.sa = event.sa
            if event.ack is not None:
                self.transport.sendto(event.ack, (self.controller.host,
                                                  self.controller.km_port))
            self.sa_ready.set()
            if self._reply is not None and not self._reply.done():
                # An echo was lost with the old SA: send it again on the new one at once.
                self.send(LOCAL_PORT, ECHO_PORT, self._echo_payload)
        elif event.kind in ("wake_up", "rekey"):
            log.info(event.kind, controller=self.controller.principal)
            if self.sa is not None:
                self._notify("sa_lost")
            self.sa = None
            self.establish(event.server_nonce, reestablish=event.kind == "wake_up",
                           solicited=False)
        elif event.kind == "error" and event.error is not None:
            log.warning("error_reply", code=event.error.error_code, e_text=event.error.e_text)
            if event.error.error_code in (32, 33):  # ticket expired / not yet valid
                self._spawn(self.renew())
            elif event.error.error_code == ErrorCode.KRB_AP_ERR_SKEW:
                self._skew(event.error)
            elif event.error.error_code == ErrorCode.KDC_ERR_CLIENT_REVOKED:
                if self._relogin is None or self._relogin.done():
                    self._relogin = asyncio.ensure_future(self._log_in_again())

    async def _log_in_again(self) -> None:
        """The controller refused our ticket although it is valid: stop the exchange (its
        retransmissions would only be refused again), get new tickets, start over."""
        if self._establishing is not None and not self._establishing.done():
            self._establishing.cancel()
        if self.sa is not None:
            self._notify("sa_lost")
        self.sa = None
        self.sa_ready.clear()
        self._notify("refused")
        await (self.refused or self.renew)()
        self.establish()

    def _notify(self, what: str) -> None:
        if self.observer is not None:
            self.observer(what)

    def _esp(self, packet: bytes) -> None:
        sa = self.sa
        if sa is None:
            return
        _, datagram = sa.inbound.open(packet)
        source, destination, payload = esp.parse_udp_datagram(datagram)
        if source == ECHO_PORT and self._reply is not None and not self._reply.done():
            self._reply.set_result(payload)
        elif destination == SIP_PORT and self._on_signal is not None:
            self._on_signal(payload)
        elif destination == SIP_PORT and len(self._early_signals) < EARLY_SIGNALS:
            self._early_signals.append(payload)

    async def send_signal(self, payload: bytes, timeout: float = 10.0) -> None:
        """Send SIP to the controller, waiting for an SA if there is none yet."""
        if self.sa is None:
            await asyncio.wait_for(self.sa_ready.wait(), timeout)
        self.send(SIP_PORT, SIP_PORT, payload)

    def send(self, source_port: int, destination_port: int, payload: bytes) -> None:
        if self.sa is None:
            raise ConnectionError("no SA with the controller")
        packet = self.sa.outbound.seal(esp.udp_datagram(source_port, destination_port, payload))
        self.transport.sendto(packet, (self.controller.host, self.controller.esp_port))

    # Echo and liveness ---------------------------------------------------------------

    async def echo(self, payload: bytes, tries: int = 3, timeout: float = 1.0) -> bytes:
        """Send `payload` to the controller's echo service through ESP; re-establish the SA
        after `tries` unanswered sends and try once more on the new one."""
        for round_ in range(2):
            await asyncio.wait_for(self.sa_ready.wait(), 30)
            for _ in range(tries):
                self._reply = asyncio.get_running_loop().create_future()
                self._echo_payload = payload
                self.send(LOCAL_PORT, ECHO_PORT, payload)
                try:
                    return await asyncio.wait_for(self._reply, timeout)
                except TimeoutError:
                    continue
            if round_ == 0:
                log.info("controller_silent", controller=self.controller.principal)
                if self.sa is not None:
                    self._notify("sa_lost")
                self.sa = None
                self.establish(reestablish=True)
        raise TimeoutError("the controller does not answer")

    async def _keepalive(self) -> None:
        """Probe the SA every keepalive_s seconds. A restarted controller answers the probe
        with a Wake Up only if the probe is at least as long as the Wake Up (which carries
        the controller's name): KEEPALIVE's padding covers names up to 100 characters."""
        while True:
            await asyncio.sleep(self.keepalive_s)
            if self.sa_ready.is_set():
                try:
                    await self.echo(KEEPALIVE)
                except (TimeoutError, ConnectionError):
                    pass

    def status(self) -> dict[str, Any]:
        sa = self.sa
        offset = self.clock_offsets.get(self.controller.principal, timedelta())
        return {"controller": self.controller.principal, "exchanges": self.exchanges,
                "clock_offset_s": round(offset.total_seconds(), 3),
                "sa": None if sa is None else {
                    "spi_in": f"0x{sa.inbound.spi:08x}", "spi_out": f"0x{sa.outbound.spi:08x}",
                    "suite": sa.suite.name, "lifetime_s": sa.lifetime_s,
                    "age_s": round(time.monotonic() - sa.established, 1),
                    "rekey_in_s": round(sa.rekey_at() - time.monotonic(), 1)}}
