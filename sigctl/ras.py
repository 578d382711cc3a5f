"""The controller's H.225.0 RAS port (seed 002, FIG. 4): enterprise phones register here, over
the sans-I/O core common/enterprise/registration.py. This module moves datagrams, fetches K_g
from the key server's advanced service over mutual TLS (cached per generator g), hands the
registered phone's SA to the key-management core, and logs one line per message.

After RCF the phone is a device like any other: its SA lives in the KeyManagementServer
(client `phone/<EXT>@<REALM>`), its ESP reaches the controller's ESP port, its SIP the call
control, and its extension is a line of this controller (`phone/<EXT>`).
"""

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from common.enterprise.keys import SIZES, Profile
from common.enterprise.registration import (
    Gatekeeper,
    GatekeeperPolicy,
    KeyAnswer,
    KeyRequest,
    Outcome,
    Registration,
)
from common.log import get_logger
from common.pktc import esp
from common.pktc.km_server import ControllerSa, KeyManagementServer, PreparedSa
from runtime.https_client import HttpsClient, HttpsError, tls_context
from runtime.prometheus import child
from sigctl import metrics
from sigctl.extensions import PinCache
from sigctl.settings import SigctlSettings

log = get_logger("sigctl.ras")
# Key-server refusals that mean the phone's key information is of no use (g unknown here,
# issued for another extension, the extension revoked): the phone must fetch a key file.
REFUSED = {403, 404}


def phone_principal(ext: str) -> str:
    return f"phone/{ext}"


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


class KgCache:
    """K_g per generator, from the advanced service (`GET /v1/kg?g=&ext=`), kept
    `kg_cache_s`. A reply with a CV_m other than the one the cache holds means K_m was
    rotated: every entry of the old CV_m goes."""

    def __init__(self, client: HttpsClient, profile: Profile, ttl_s: float,
                 max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.profile = profile
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.entries: OrderedDict[tuple[bytes, str], tuple[float, KeyAnswer]] = OrderedDict()
        self.current_cvm: bytes | None = None
        self.hits = 0
        self.fetches = 0

    async def get(self, generator: bytes, ext: str) -> KeyAnswer:
        """K_g and CV_m for (g, EXT); KeyAnswer(None, None) when the key server refused;
        HttpsError when it could not be asked."""
        now = self.clock()
        entry = self.entries.get((generator, ext))
        if entry is not None and entry[0] > now and entry[1].check_value == self.current_cvm:
            self.hits += 1
            return entry[1]
        self.fetches += 1
        response = await self.client.get_async(
            f"/v1/kg?g={generator.hex()}&ext={quote(ext, safe='')}")
        if response.status in REFUSED:
            answer = KeyAnswer(None, None)
            self._put(generator, ext, answer, now)
            return answer
        if response.status != 200:
            raise HttpsError(f"key server answered {response.status}")
        try:
            reply = json.loads(response.body)
            kg, cvm = bytes.fromhex(reply["kg"]), bytes.fromhex(reply["cvm"])
            if reply["profile"] != self.profile.value or \
                    len(kg) != SIZES[self.profile].generator_key:
                raise ValueError(f"profile {reply['profile']}, not {self.profile.value}")
        except (ValueError, KeyError, TypeError) as exc:
            raise HttpsError(f"key server reply: {exc}") from exc
        if cvm != self.current_cvm:
            if self.current_cvm is not None:
                log.info("km_rotation_seen", old_cvm=self.current_cvm.hex(), cvm=cvm.hex())
            self.current_cvm = cvm
            self.entries = OrderedDict((k, v) for k, v in self.entries.items()
                                       if v[1].check_value == cvm)
        answer = KeyAnswer(kg, cvm)
        self._put(generator, ext, answer, now)
        return answer

    def _put(self, generator: bytes, ext: str, answer: KeyAnswer, now: float) -> None:
        # A refusal is remembered briefly: a flood of made-up generators costs one fetch each
        # at most every few seconds, and the lockout stops the address before long.
        ttl = self.ttl_s if answer.generator_key is not None else min(self.ttl_s, 5.0)
        self.entries[(generator, ext)] = (now + ttl, answer)
        self.entries.move_to_end((generator, ext))
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class RasService:
    """The RAS port's protocol object and what it needs of the controller."""

    def __init__(self, settings: SigctlSettings, core: KeyManagementServer,
                 pins: PinCache, installed: Callable[[ControllerSa], None],
                 suites: tuple[esp.Suite, ...]) -> None:
        assert settings.keyserver_url and settings.keyserver_ca_file  # the settings insist
        self.settings = settings
        self.core = core
        self.pins = pins
        self.installed = installed
        self.suites = suites
        self.profile = Profile(settings.enterprise_profile)
        self.gatekeeper: Gatekeeper | None = None
        self.kg = KgCache(HttpsClient(settings.keyserver_url, tls_context(
            settings.keyserver_ca_file, settings.keyserver_client_cert_file,
            settings.keyserver_client_key_file), timeout_s=settings.keyserver_timeout_s),
            self.profile, settings.kg_cache_s, settings.kg_cache_entries)
        self.transport: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, transport: Any, ras_address: tuple[str, int],
              esp_address: tuple[str, int]) -> None:
        settings = self.settings
        self.transport = transport
        self.gatekeeper = Gatekeeper(GatekeeperPolicy(
            gatekeeper_id=settings.gatekeeper_id or settings.principal, profile=self.profile,
            ras_address=ras_address, esp_address=esp_address, suites=self.suites,
            sa_lifetime_s=settings.sa_lifetime_s, grace_s=settings.grace_s,
            max_skew_s=settings.ras_max_skew_s,
            challenge_lifetime_s=settings.ras_challenge_lifetime_s,
            lockout_failures=settings.ras_lockout_failures, lockout_s=settings.ras_lockout_s,
            alternates=tuple(_address(a) for a in settings.ras_alternates)), self.pins)

    def on_datagram(self, data: bytes, peer: tuple[str, int]) -> None:
        assert self.gatekeeper is not None
        started = time.perf_counter()
        outcome = self.gatekeeper.begin(data, peer, datetime.now(UTC), time.monotonic())
        if outcome.need_key is not None:
            task = asyncio.ensure_future(self._grq(outcome.need_key, started))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if outcome.need_spi is not None:
            mono = time.monotonic()
            spi = self.core.allocate_spi(mono, self.settings.sa_lifetime_s)
            outcome = self.gatekeeper.finish_rrq(outcome.need_spi, spi, datetime.now(UTC), mono)
            assert outcome.registration is not None
            self._install(outcome.registration)
        self.finish(outcome, peer, started)

    async def _grq(self, request: KeyRequest, started: float) -> None:
        assert self.gatekeeper is not None
        try:
            answer = await self.kg.get(request.generator, request.grq.ext)
        except HttpsError as exc:
            # No K_g, no answer: the phone retries. The GRQ may come again.
            self.gatekeeper.in_flight.discard(
                f"{request.peer[0]}:{request.peer[1]}|".encode() + request.data)
            log.warning("key_server_unreachable", error=str(exc))
            self.finish(Outcome("grq", "KEY_SERVER_UNREACHABLE", ext=request.grq.ext),
                        request.peer, started)
            return
        outcome = self.gatekeeper.finish_grq(request, answer, datetime.now(UTC),
                                             time.monotonic())
        self.finish(outcome, request.peer, started)

    def _install(self, registration: Registration) -> None:
        """The phone's SA in the key-management core, as an AP exchange would leave it."""
        now, mono = datetime.now(UTC), time.monotonic()
        prepared = PreparedSa(
            lookaside_key=b"ras|" + registration.fingerprint,
            fingerprint=b"ras|" + registration.fingerprint,
            client=f"{phone_principal(registration.ext)}@{self.settings.realm}",
            peer=registration.peer, spi=registration.controller_spi,
            device_spi=registration.phone_spi, suite=registration.suite.pktc,
            to_us=registration.to_us, to_device=registration.to_phone,
            hmac_key=registration.hmac_key, lifetime=registration.lifetime_s,
            grace=registration.grace_s, restriction=None, reply=b"")
        exchange = self.core.install(prepared, now, mono)
        if exchange.sa is not None:
            self.installed(exchange.sa)

    def finish(self, outcome: Outcome, peer: tuple[str, int], started: float) -> None:
        if outcome.reply is not None:
            self.transport.sendto(outcome.reply, peer)
        child(metrics.ras_messages, outcome.kind, outcome.result).inc()
        registration = outcome.registration
        if outcome.locked_out:
            metrics.ras_lockouts.inc()
            log.warning("ras_lockout", peer=peer[0], ext=outcome.ext,
                        seconds=self.settings.ras_lockout_s)
        if outcome.result == "LOCKED_OUT":
            return  # counted, not logged: a locked-out flood must not flood the log
        log.info("ras", peer=f"{peer[0]}:{peer[1]}", kind=outcome.kind, result=outcome.result,
                 ext=outcome.ext,
                 session=registration.session_id if registration else None,
                 spi=f"0x{registration.controller_spi:08x}" if registration else None,
                 suite=registration.suite.name if registration else None,
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))
