"""`telekey cta run`: the long-running device agent.

It keeps the device's tickets fresh and answers its management port.

- **Tickets.** With no backup controllers the device asks PKINIT for its controller's ticket
  directly (seed 000); with backups it gets a TGT by PKINIT and every controller ticket by TGS.
  A ticket obtained by PKINIT is replaced `pkinit_grace` before it ends, one obtained by TGS
  `tgs_grace` before (RFC 4682 defaults 15 and 10 minutes). The login certificate is the
  operator-issued one (seed 001) or the self-issued one (seed 004) when the token holds a valid
  one, else the factory certificate. A failed renewal is retried with a growing delay (5 s
  doubling to 5 min); the agent never exits on it. A token that has gone away (or whose PIN
  file has) fails the renewal with a `token_unavailable` line naming the cause; the provider
  reopens it at the next attempt. Renewal times are counted in monotonic time from the moment
  they are set (the ticket's end by the KDC's clock, as far as we know it): a step of the wall
  clock moves none of them.
- **Management port** (TCP, loopback only by default): one JSON object per line in, one per
  line out. `{"op": "status"}`, `{"op": "renew"}` (renew everything now), `{"op": "selfcert",
  "request": "<base64 DER of the signed request>"}` (seed 004; on success the agent logs in
  again with the new certificate). Replies are `{"ok": true, ...}` or `{"ok": false, "error":
  "..."}`; lines over 64 KiB or not JSON are answered with an error, never crash the agent.
  The port grants nothing a signed request would not: self-issuance is authorised by the
  operator's signature, not by the connection.
- **Calls** (with a controller, cta/phone.py): `{"op": "call", "number": "2002", "play":
  "tone.wav"}` returns when the call is keyed and media flows (`setup_ms`), `{"op": "hangup",
  "call_id": ...}` ends it (media counts, recording path). Incoming calls are answered per
  `--answer`; `"conference": "<call id>"` adds the number to a call under way. Under the
  chained call-key policy the device keeps the broker's one-time keys (cta/broker_keys.py),
  wrapped at rest under a KEK its token derives.
- **Lifecycle** (cta/lifecycle.py): the FIG. 5A/5B states (`{"op": "state"}`), operator
  certificates delivered by the controller, and the fall-back to the factory certificate when
  the KDC refuses the operator one.
"""

import asyncio
import base64
import binascii
import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common.calls.user_agent import UserAgent
from common.errors import KerberosError
from common.kerberos.ccache import Credential
from common.log import get_logger
from cta.agent import Agent, AgentError
from cta.broker_keys import KEK_LABEL as BROKER_KEK_LABEL
from cta.broker_keys import KEK_OBJECT as BROKER_KEK_OBJECT
from cta.broker_keys import DeviceBrokerKeys
from cta.lifecycle import DeviceLifecycle
from cta.media import load_source
from cta.phone import Phone
from cta.provider import TokenUnavailable
from runtime.controller_link import ControllerAddress, ControllerLink

log = get_logger("cta")
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class CallConfig:
    number: str | None = None
    answer: str = "record"  # record, echo, reject
    play: str | None = None  # a WAV file or tone[:FREQUENCY[:SECONDS]]
    record_dir: Path | None = None
    esp_keylog: Path | None = None
    srtp_profile: str = "AES_CM_128_HMAC_SHA1_80"


@dataclass(frozen=True)
class AgentConfig:
    service: str | None = None  # the controller; None: just a TGT
    backups: tuple[str, ...] = ()
    mode: str = "dh"
    management_host: str = "127.0.0.1"
    management_port: int = 0
    pkinit_grace: timedelta = timedelta(minutes=15)
    tgs_grace: timedelta = timedelta(minutes=10)
    controllers: tuple[ControllerAddress, ...] = ()  # primary first, then backups
    keepalive_s: float = 20.0
    calls: CallConfig = field(default_factory=CallConfig)


@dataclass
class Wanted:
    """A ticket the agent keeps: for `service` (None = the TGT), by PKINIT or by TGS."""
    service: str | None
    by_tgs: bool
    due: float | None = None  # when to renew, in monotonic seconds (time.monotonic)
    failures: int = 0
    last_error: str | None = field(default=None)


def _endtime(credential: Credential) -> datetime:
    return datetime.fromtimestamp(credential.endtime, UTC)


class AgentDaemon:
    def __init__(self, agent: Agent, config: AgentConfig) -> None:
        self.agent = agent
        self.config = config
        self.wake = asyncio.Event()
        self.first_round = asyncio.Event()
        self.link: ControllerLink | None = None
        self.phone: Phone | None = None
        self.lifecycle = DeviceLifecycle(self)  # FIG. 5A/5B, certificate deliveries
        self.lock = asyncio.Lock()  # one token/KDC operation at a time
        if config.backups:
            self.wanted = [Wanted(None, False)]
            self.wanted += [Wanted(s, True) for s in (config.service, *config.backups) if s]
        else:
            self.wanted = [Wanted(config.service, False)]

    def certificate(self) -> str:
        """The certificate to log in with: the operator-issued one (seed 001 flow 4), else the
        self-issued one (seed 004), while valid; else the factory certificate."""
        now = datetime.now(UTC)
        for label in ("operator", "self-issued"):
            try:
                cert = self.agent.provider.certificate(label)
            except KeyError:
                continue
            if cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return label
        return "factory"

    def _held(self, wanted: Wanted) -> Credential | None:
        for credential in self.agent.credentials():
            components = credential.server.components
            if (wanted.service is None and components[:1] == ("krbtgt",)) or (
                    wanted.service is not None and "/".join(components) == wanted.service):
                return credential
        return None

    def _schedule(self, wanted: Wanted) -> None:
        """Renew `grace` before the held ticket ends by the KDC's clock (ours plus the offset
        learned from it), counted from now in monotonic time: a later step of our wall clock
        (forward or back) must not make the renewal early or late."""
        held = self._held(wanted)
        if held is None:
            wanted.due = time.monotonic()
            return
        grace = self.config.tgs_grace if wanted.by_tgs else self.config.pkinit_grace
        left = _endtime(held) - grace - self.agent.now()
        wanted.due = time.monotonic() + left.total_seconds()

    @staticmethod
    def renew_at(wanted: Wanted) -> str | None:
        """When `wanted` is due, on our wall clock as it reads now (logs and status)."""
        if wanted.due is None:
            return None
        return (datetime.now(UTC) + timedelta(seconds=wanted.due - time.monotonic())).isoformat()

    async def _in_token(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self.lock:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: fn(*args, **kwargs))

    async def obtain(self, wanted: Wanted) -> None:
        started = asyncio.get_running_loop().time()
        certificate = None
        try:
            if wanted.by_tgs:
                tgt = self._held(self.wanted[0])
                if tgt is None or _endtime(tgt) <= datetime.now(UTC) + self.agent.offset:
                    await self.obtain(self.wanted[0])
                got = await self._in_token(self.agent.tgs, wanted.service or "")
            else:
                certificate = self.certificate()
                got = await self._in_token(self.agent.login, wanted.service,
                                           mode=self.config.mode, certificate=certificate)
        except (AgentError, KerberosError, OSError, KeyError, TokenUnavailable) as exc:
            wanted.failures += 1
            delay = min(300.0, 5.0 * 2 ** (wanted.failures - 1))
            wanted.due = time.monotonic() + delay
            if isinstance(exc, TokenUnavailable):
                wanted.last_error = f"token unavailable: {exc}"
                log.warning("token_unavailable", reason=exc.status, detail=exc.detail,
                            token=self.agent.provider.token_label,
                            service=wanted.service or "krbtgt", retry_in_s=delay)
            else:
                wanted.last_error = str(exc)
                log.warning("ticket_failed", service=wanted.service or "krbtgt",
                            error=str(exc), retry_in_s=delay)
            if certificate is not None and await self.lifecycle.login_failed(certificate, exc):
                wanted.failures = 0
                await self.obtain(wanted)  # the operator certificate is gone: factory now
            return
        if certificate is not None:
            self.lifecycle.logged_in(certificate)
        wanted.failures = 0
        wanted.last_error = None
        self._schedule(wanted)
        log.info("ticket", service=str(got.credential.server), method=got.method,
                 certificate=certificate,
                 endtime=_endtime(got.credential).isoformat(),
                 renew_at=self.renew_at(wanted),
                 ms=round((asyncio.get_running_loop().time() - started) * 1000, 1))

    async def keep_tickets(self) -> None:
        for wanted in self.wanted:
            self._schedule(wanted)
        while True:
            now = time.monotonic()
            for wanted in self.wanted:
                if wanted.due is None or wanted.due <= now:
                    await self.obtain(wanted)
            self.first_round.set()
            next_due = min(now if w.due is None else w.due for w in self.wanted)
            delay = max(0.0, next_due - time.monotonic())
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=min(delay, 3600.0))
            except TimeoutError:
                pass

    async def refresh(self) -> None:
        """Renew every ticket now (the controller said ours expired, or we hold none)."""
        for wanted in self.wanted:
            await self.obtain(wanted)

    def ticket_for(self, principal: str) -> Credential | None:
        for credential in self.agent.credentials():
            if "/".join(credential.server.components) == principal:
                return credential
        return None

    def renew_all(self) -> None:
        for wanted in self.wanted:
            wanted.due = time.monotonic()
        self.wake.set()

    # Management port -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        tickets = []
        for wanted in self.wanted:
            held = self._held(wanted)
            tickets.append({
                "service": wanted.service or "krbtgt",
                "by": "TGS" if wanted.by_tgs else "PKINIT",
                "endtime": _endtime(held).isoformat() if held else None,
                "renew_at": self.renew_at(wanted),
                "last_error": wanted.last_error})
        try:
            certificate: str | None = self.certificate()
        except TokenUnavailable:
            certificate = None  # the tickets' last_error says why
        return {"principal": f"{self.agent.device.principal}@{self.agent.realm}",
                "certificate": certificate,
                "clock_offset_s": self.agent.offset.total_seconds(), "tickets": tickets,
                "link": self.link.status() if self.link else None,
                "calls": self.phone.status() if self.phone else None}

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "state":
            return {"ok": True, **self.lifecycle.status()}
        if op == "renew":
            self.renew_all()
            return {"ok": True}
        if op == "selfcert":
            try:
                request = base64.b64decode(str(message.get("request", "")), validate=True)
            except binascii.Error:
                return {"ok": False, "error": "request is not base64"}
            try:
                profile = await self._in_token(self.agent.selfcert, request)
            except AgentError as exc:
                log.warning("selfcert_refused", error=str(exc))
                return {"ok": False, "error": str(exc)}
            except TokenUnavailable as exc:
                log.warning("token_unavailable", reason=exc.status, detail=exc.detail,
                            token=self.agent.provider.token_label, op="selfcert")
                return {"ok": False, "error": f"token unavailable: {exc}"}
            log.info("selfcert", device_id=profile.device_id, network_id=profile.network_id,
                     not_before=profile.not_before.isoformat())
            self.renew_all()  # log in again with the new certificate
            return {"ok": True, "device_id": profile.device_id,
                    "network_id": profile.network_id,
                    "not_before": profile.not_before.isoformat(),
                    "not_after": profile.not_after.isoformat()}
        if op == "echo":
            if self.link is None:
                return {"ok": False, "error": "no controller configured"}
            started = time.perf_counter()
            try:
                reply = await self.link.echo(str(message.get("data", "")).encode())
            except (TimeoutError, ConnectionError) as exc:
                return {"ok": False, "error": f"echo failed: {exc}"}
            return {"ok": True, "reply": reply.decode(errors="replace"),
                    "rtt_ms": round((time.perf_counter() - started) * 1000, 2)}
        if op in ("call", "hangup"):
            if self.phone is None:
                return {"ok": False, "error": "no controller configured"}
            if op == "hangup":
                return await self.phone.hangup(str(message.get("call_id", "")))
            play = message.get("play")
            try:
                samples = load_source(str(play)) if play else None
            except (OSError, ValueError, EOFError) as exc:
                return {"ok": False, "error": f"play: {exc}"}
            conference = message.get("conference")
            return await self.phone.call(str(message.get("number", "")), samples,
                                         conference=str(conference) if conference else None)
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def management(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        await serve_management(self.handle, reader, writer)


async def serve_management(handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                           reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The management port's protocol: one JSON object per line in, `handle`'s reply per
    line out; a line too long or not a JSON object is answered with an error."""
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                break
            except asyncio.LimitOverrunError:
                writer.write(b'{"ok": false, "error": "line too long"}\n')
                break
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except ValueError:
                reply: dict[str, Any] = {"ok": False, "error": "malformed: one JSON object "
                                         "per line"}
            else:
                reply = await handle(message)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def run(agent: Agent, config: AgentConfig) -> None:
    daemon = AgentDaemon(agent, config)
    server = await asyncio.start_server(daemon.management, config.management_host,
                                        config.management_port, limit=MAX_LINE)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening", management_port=port, principal=agent.device.principal,
             realm=agent.realm, kdc=agent.kdc)
    tickets = asyncio.create_task(daemon.keep_tickets())
    if config.controllers:
        await daemon.first_round.wait()
        daemon.link = ControllerLink(list(config.controllers), daemon.ticket_for,
                                     daemon.refresh, keepalive_s=config.keepalive_s)
        daemon.lifecycle.attach(daemon.link)
        await daemon.link.start()
        calls = config.calls
        identity = calls.number or agent.device.principal.replace("/", "-")
        kek = await daemon._in_token(agent.provider.secret_hmac, BROKER_KEK_OBJECT,
                                     BROKER_KEK_LABEL)
        broker = DeviceBrokerKeys(agent.device.principal, kek,
                                  agent.device.directory / "broker.json", daemon.link)
        daemon.phone = Phone(UserAgent(realm=agent.realm, identity=identity,
                                       broker=broker.call_key), daemon.link,
                             answer=calls.answer,
                             play=load_source(calls.play) if calls.play else None,
                             record_dir=calls.record_dir, esp_keylog=calls.esp_keylog,
                             srtp_profile=calls.srtp_profile, broker=broker)
        await daemon.phone.start()
        daemon.lifecycle.intercept(daemon.link)
    await stop.wait()
    tickets.cancel()
    server.close()
    log.info("stopped")
