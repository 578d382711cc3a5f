"""An enterprise phone's link to its controller (seed 002, FIG. 3 and 4): the key file from the
key server's basic service, H.225.0 RAS registration (common/enterprise/registration.py) on
the controller's RAS port, then ESP in UDP with the SA the registration made, one socket for
all of it. Everything after registration is runtime/controller_link.py's: ESP, the echo
probe that finds a controller that lost the SA, SIP to and from call control.

The phone's rules (docs/protocol.md §12):
- With no key information (or none for this extension) it fetches a key file first; with
  some it registers first (FIG. 4).
- A GRQ unanswered is sent again (a new GRQ, new Re) after 1 s, doubling to 8 s, `tries`
  times in all. A bad ICV gets silence, so silence may be a wrong PIN, a stale key or a lost
  packet: after the tries, one new key file and the tries again; if that too goes unanswered,
  "registration failed: check the PIN", and the phone stops (it never loops).
- GRJ stale-key-information (CV_m not current, g unknown): a new key file at once. GRJ
  not-homed-here: it is unauthenticated, so the phone keeps waiting `grj_wait_s` for a GCF
  (a forged GRJ must not send it away) and only then tries the alternates in order.
- The SA is renewed by registering again `grace` before its lifetime ends; a Wake Up (the
  controller lost the SA) or a verified Rekey starts a registration at once.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from common.enterprise.key_file import decode_key_file
from common.enterprise.ras import NOT_HOMED, STALE_KEY
from common.enterprise.registration import PhoneEvent, PhoneKey, PhoneRegistration
from common.errors import KerberosError
from common.log import get_logger
from common.pktc import esp, km_framing
from runtime.controller_link import ControllerAddress, ControllerLink
from runtime.https_client import HttpsClient, HttpsError

log = get_logger("phone")


@dataclass(frozen=True)
class RegistrationPolicy:
    tries: int = 4  # GRQs per round (a round before and one after a new key file)
    first_timeout_s: float = 1.0
    max_timeout_s: float = 8.0
    grj_wait_s: float = 3.0  # how long a GRJ not-homed-here waits for a GCF
    fetch_retry_s: float = 5.0  # first delay after a failed key-file fetch (doubling to 60)


class RasLink(ControllerLink):
    def __init__(self, *, host: str, ras_port: int, esp_port: int | None, ext: str, pin: str,
                 keyserver: HttpsClient,
                 load_key: Callable[[], Awaitable[PhoneKey | None]],
                 save_key: Callable[[Any], Awaitable[PhoneKey]],
                 on_failed: Callable[[str], None],
                 policy: RegistrationPolicy = RegistrationPolicy(),
                 keepalive_s: float = 20.0, local_host: str = "127.0.0.1") -> None:
        async def no_renew() -> None:
            return None

        super().__init__([ControllerAddress("gatekeeper", host, ras_port, esp_port or 0)],
                         lambda _: None, no_renew, keepalive_s=keepalive_s,
                         local_host=local_host)
        self.ext = ext
        self.pin = pin
        self.keyserver = keyserver
        self.load_key = load_key
        self.save_key = save_key
        self.on_failed = on_failed
        self.policy = policy
        self.esp_override = esp_port
        self.ras = (host, ras_port)
        self.registration: PhoneRegistration | None = None
        self.events: asyncio.Queue[PhoneEvent] = asyncio.Queue()
        self.key: PhoneKey | None = None
        self.session_id: str | None = None
        self.key_files = 0
        self.failed: str | None = None

    # Key files -------------------------------------------------------------------------

    async def fetch_key_file(self) -> PhoneKey:
        """A new key file (FIG. 3), stored wrapped; retried with a growing delay while the
        key server cannot be reached (that failure is not the PIN's)."""
        delay = self.policy.fetch_retry_s
        while True:
            try:
                response = await self.keyserver.get_async(f"/kkg.txt?ext={quote(self.ext)}")
                if response.status != 200:
                    raise HttpsError(f"status {response.status}: {response.body[:200]!r}")
                key_file = decode_key_file(response.body)
                if key_file.ext != self.ext:
                    raise HttpsError(f"a key file for {key_file.ext}, not {self.ext}")
            except (HttpsError, KerberosError) as exc:
                log.warning("key_file_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)
                continue
            self.key = await self.save_key(key_file)
            self.key_files += 1
            log.info("key_file", ext=self.ext, g=key_file.generator.hex(),
                     cvm=key_file.check_value.hex(), profile=key_file.profile.value)
            return self.key

    # Registration ----------------------------------------------------------------------

    async def _exchange(self, server_nonce: int, reestablish: bool, solicited: bool) -> None:
        """Register (seed 002, FIG. 4), by the rules in the module docstring."""
        if self.failed:
            return
        started = time.perf_counter()
        if self.key is None:
            self.key = await self.load_key()
        if self.key is None:
            await self.fetch_key_file()
        refetched = stale = 0
        while True:
            assert self.key is not None
            result = await self._attempt(self.key)
            if isinstance(result, PhoneEvent) and result.kind == "registered":
                self._registered(result, started, reestablish)
                return
            if result == STALE_KEY:
                stale += 1
                if stale > 2:
                    self._fail("registration failed: the controller refuses the key server's "
                               "key information")
                    return
                log.info("registration_stale_key", ext=self.ext)
                await self.fetch_key_file()
                continue
            if isinstance(result, PhoneEvent):  # not homed here: the alternates
                if result.alternates:
                    self.ras = result.alternates[0]
                    address = self.controllers[0]
                    self.controllers[0] = ControllerAddress(address.principal, self.ras[0],
                                                            self.ras[1], address.esp_port)
                    log.info("registration_redirected", ext=self.ext,
                             to=f"{self.ras[0]}:{self.ras[1]}")
                    continue
                self._fail(f"registration failed: extension {self.ext} is not served here")
                return
            if refetched:
                self._fail("registration failed: check the PIN")
                return
            refetched += 1
            log.info("registration_unanswered", ext=self.ext, action="new key file")
            await self.fetch_key_file()

    async def _attempt(self, key: PhoneKey) -> PhoneEvent | str:
        """One round of `tries` GRQs: the RCF's event, STALE_KEY, the GRJ (not homed here,
        after waiting for a GCF in vain), or "silence"."""
        self.registration = PhoneRegistration(ext=self.ext, pin=self.pin, key=key)
        loop = asyncio.get_running_loop()
        while not self.events.empty():
            self.events.get_nowait()
        timeout = self.policy.first_timeout_s
        redirect: PhoneEvent | None = None
        for _ in range(self.policy.tries):
            local = self.transport.get_extra_info("sockname")
            self._send_ras(self.registration.grq(datetime.now(UTC), (local[0], local[1])))
            deadline = loop.time() + timeout
            while (remaining := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(self.events.get(), remaining)
                except TimeoutError:
                    break
                if event.kind == "rrq" and event.reply is not None:
                    self._send_ras(event.reply)
                    deadline = loop.time() + timeout
                elif event.kind == "registered":
                    return event
                elif event.kind == "rejected" and event.reason == STALE_KEY:
                    return STALE_KEY
                elif event.kind == "rejected" and event.reason == NOT_HOMED:
                    # Unauthenticated: a GCF may still come (seed 002, FIG. 4).
                    log.info("grj", ext=self.ext, reason=event.reason,
                             alternates=len(event.alternates), wait_s=self.policy.grj_wait_s)
                    redirect = event
                    deadline = max(deadline, loop.time() + self.policy.grj_wait_s)
            if redirect is not None:
                return redirect
            timeout = min(timeout * 2, self.policy.max_timeout_s)
        return "silence"

    def _registered(self, event: PhoneEvent, started: float, reestablish: bool) -> None:
        assert event.sa is not None and event.esp_address is not None
        address = self.controllers[0]
        self.controllers[0] = ControllerAddress(address.principal, self.ras[0], self.ras[1],
                                                self.esp_override or event.esp_address[1])
        self.sa = event.sa
        self.session_id = event.session_id
        self.exchanges += 1
        self.sa_ready.set()
        log.info("registered", ext=self.ext, session=event.session_id,
                 spi_in=f"0x{event.sa.inbound.spi:08x}",
                 spi_out=f"0x{event.sa.outbound.spi:08x}", suite=event.sa.suite.name,
                 lifetime_s=event.sa.lifetime_s, reestablish=reestablish,
                 ms=round((time.perf_counter() - started) * 1000, 1))
        self._spawn(self._rekey_timer(event.sa))
        if self._reply is not None and not self._reply.done():
            self.send(7, 7, self._echo_payload)  # an echo lost with the old SA

    def _fail(self, message: str) -> None:
        self.failed = message
        log.error("registration_failed", ext=self.ext, reason=message)
        self.on_failed(message)

    def _send_ras(self, data: bytes) -> None:
        self.transport.sendto(data, self.ras)

    # Datagrams -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            if (addr[0], addr[1]) == self.ras:
                self._ras(data)
            elif addr[0] == self.ras[0] and addr[1] == self.controller.esp_port:
                self._esp(data)
            elif addr[0] == self.ras[0]:
                self._km(data)  # Wake Up and Rekey come from the key-management port
        except (KerberosError, esp.EspDropped) as exc:
            log.info("dropped", peer=f"{addr[0]}:{addr[1]}", reason=exc.status)
        except Exception:  # our bug: log it, keep the phone running
            log.exception("internal_error", peer=f"{addr[0]}:{addr[1]}")

    def _ras(self, data: bytes) -> None:
        if self.registration is None:
            return
        event = self.registration.receive(data, datetime.now(UTC), time.monotonic())
        self.events.put_nowait(event)

    def _km(self, data: bytes) -> None:
        framed = km_framing.decode(data)
        message = framed.message
        if isinstance(message, km_framing.WakeUp):
            log.info("wake_up", ext=self.ext)
        elif isinstance(message, km_framing.Rekey) and self.sa is not None:
            km_framing.verify_hmac(framed, self.sa.hmac_key)
            log.info("rekey", ext=self.ext)
        else:
            return
        self.sa = None
        self.establish(reestablish=True)

    def status(self) -> dict[str, Any]:
        status = super().status()
        status.update({"ext": self.ext, "session": self.session_id,
                       "key_files": self.key_files, "failed": self.failed,
                       "g": self.key.generator.hex() if self.key else None,
                       "cvm": self.key.check_value.hex() if self.key else None})
        return status
