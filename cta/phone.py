"""Calls at an endpoint (a device agent or the network echo server): the user agent core
(common/calls/user_agent.py) on the controller link, one UDP socket for device-to-device ESP, and a
media session (cta/media.py) per call.

- Outgoing: `call(number)` opens the media socket, sends the INVITE through the controller and
  waits for the final response; on 200 the call's secrets are derived, the ACK goes back and
  media starts.
- Incoming: answered at once (180, 200) when `answer` is "record" or "echo", refused 486 when
  "reject". "record" plays `play` (if any) and records; "echo" sends back what it receives.
- Hanging up: BYE to the peer over the call's own ESP SA, and the BYE closing our leg with
  the controller. A call's recording is written to `record_dir/<Call-ID>.wav` when it ends.
"""

import asyncio
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.calls import sip
from common.calls.sdp import MediaDescription
from common.calls.sip import SipError
from common.calls.user_agent import UaCall, UaEvent, UserAgent
from common.errors import KerberosError
from common.log import get_logger
from common.pktc import esp
from cta.media import MediaSession, write_wav
from runtime.controller_link import SIP_PORT, ControllerLink
from runtime.key_files import append_secret_line

log = get_logger("phone")


@dataclass
class Active:
    call: UaCall
    media: MediaSession
    started: float  # monotonic, INVITE sent or received
    done: asyncio.Future[UaEvent]
    keyed_ms: float | None = None


class Phone(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent, link: ControllerLink, *, host: str = "127.0.0.1",
                 answer: str = "record", play: array | None = None,  # type: ignore[type-arg]
                 record_dir: Path | None = None, esp_keylog: Path | None = None,
                 srtp_profile: str = "AES_CM_128_HMAC_SHA1_80", broker: Any = None) -> None:
        self.ua = ua
        self.broker = broker  # cta/broker_keys.py, for the broker's MESSAGEs
        self.link = link
        self.host = host
        self.answer_mode = answer
        self.play = play
        self.record_dir = record_dir
        self.esp_keylog = esp_keylog
        self.srtp_profile = srtp_profile
        self.transport: Any = None
        self.esp_port = 0
        self.active: dict[str, Active] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self.esp_port = self.transport.get_extra_info("sockname")[1]
        self.link.on_signal = self.on_controller

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _to_controller(self, messages: list[bytes]) -> None:
        for data in messages:
            self._spawn(self.link.send_signal(data))

    def _to_peer(self, call: UaCall, messages: list[bytes]) -> None:
        if call.secrets is None or call.remote_media is None:
            return
        for data in messages:
            packet = call.secrets.esp_out.seal(esp.udp_datagram(SIP_PORT, SIP_PORT, data))
            self.transport.sendto(packet, (call.remote_media.host, call.remote_media.esp_port))

    # Outgoing ------------------------------------------------------------------------

    async def call(self, number: str, play: array | None = None,  # type: ignore[type-arg]
                   timeout: float = 15.0, conference: str | None = None) -> dict[str, Any]:
        media = MediaSession(play if play is not None else self.play)
        rtp_port = await media.open(self.host)
        call, invite = self.ua.invite(number, MediaDescription(
            self.host, rtp_port, self.esp_port, self.srtp_profile), conference=conference)
        active = Active(call, media, time.monotonic(),
                        asyncio.get_running_loop().create_future())
        self.active[call.call_id] = active
        log.info("call_invite", call_id=call.call_id, number=number)
        await self.link.send_signal(invite)
        self._spawn(self._repeat(active, lambda: call.state == "calling", call.sent))
        try:
            event = await asyncio.wait_for(asyncio.shield(active.done), timeout)
        except TimeoutError:
            self._finish(active, "timeout")
            return {"ok": False, "call_id": call.call_id, "error": "no final response"}
        if event.kind != "answered":
            return {"ok": False, "call_id": call.call_id, "status": call.status,
                    "error": call.why}
        return {"ok": True, "call_id": call.call_id, "setup_ms": active.keyed_ms,
                "rtp_port": rtp_port, "peer": call.remote_media.__dict__
                if call.remote_media else None}

    async def _repeat(self, active: Active, pending: Any, data: bytes) -> None:
        """RFC 3261 timers A (INVITE until a response) and G (200 until the ACK): resend
        after 0.5 s, doubling to 4 s, while `pending()` holds, for at most 8 s."""
        interval, waited = 0.5, 0.0
        while waited < 8.0:
            await asyncio.sleep(interval)
            waited += interval
            if not pending() or active.call.call_id not in self.active:
                return
            log.info("sip_retransmission", call_id=active.call.call_id,
                     message=data.split(b" ", 1)[0].decode(errors="replace"))
            await self.link.send_signal(data)
            interval = min(interval * 2, 4.0)

    async def hangup(self, call_id: str) -> dict[str, Any]:
        active = self.active.get(call_id)
        if active is None:
            return {"ok": False, "error": f"no call {call_id}"}
        await active.media.sending_done.wait()
        await asyncio.sleep(0.1)  # let the last packets in flight arrive
        event = self.ua.hangup(active.call)
        self._to_peer(active.call, event.to_peer)
        self._to_controller(event.to_controller)
        return {"ok": True, **self._finish(active, "hung up")}

    # From the controller -------------------------------------------------------------

    def on_controller(self, data: bytes) -> None:
        if self.broker is not None and data.startswith(b"MESSAGE "):
            try:
                reply = self.broker.handle(sip.parse(data))
            except SipError:
                reply = None
            if reply is not None:
                self._to_controller([reply])
                return
        event = self.ua.receive_from_controller(data)
        call = event.call
        if event.kind == "malformed":
            log.info("sip_malformed", to_controller=len(event.to_controller))
        self._to_controller(event.to_controller)
        if call is None:
            return
        active = self.active.get(call.call_id)
        if event.kind == "incoming":
            self._spawn(self._incoming(call))
        elif event.kind == "answered" and active is not None:
            active.keyed_ms = round((time.monotonic() - active.started) * 1000, 2)
            self._keylog(call)
            assert call.secrets is not None and call.remote_media is not None
            active.media.set_keys(call.secrets.srtp_send, call.secrets.srtp_receive,
                                  call.secrets.profile)
            active.media.start(call.remote_media)
            log.info("call_answered", call_id=call.call_id, setup_ms=active.keyed_ms,
                     spi_in=f"0x{call.secrets.esp_in.spi:08x}")
            if not active.done.done():
                active.done.set_result(event)
        elif event.kind == "refused" and active is not None:
            log.info("call_refused", call_id=call.call_id, status=call.status, why=call.why)
            if not active.done.done():
                active.done.set_result(event)
            self._finish(active, call.why)
        elif event.kind in ("ended", "cancelled") and active is not None:
            log.info("call_ended", call_id=call.call_id, why=call.why)
            if not active.done.done():
                active.done.set_result(event)
            self._finish(active, call.why)
        elif event.kind == "confirmed" and active is not None:
            assert call.remote_media is not None
            active.media.start(call.remote_media)
            log.info("call_confirmed", call_id=call.call_id)

    async def _incoming(self, call: UaCall) -> None:
        if self.answer_mode == "reject":
            self._to_controller([self.ua.reject(call)])
            return
        assert call.secrets is not None and call.remote_media is not None
        source = "echo" if self.answer_mode == "echo" else self.play
        media = MediaSession(source)
        media.set_keys(call.secrets.srtp_send, call.secrets.srtp_receive, call.secrets.profile)
        rtp_port = await media.open(self.host)
        active = Active(call, media, time.monotonic(),
                        asyncio.get_running_loop().create_future())
        self.active[call.call_id] = active
        replies = self.ua.answer(call, MediaDescription(self.host, rtp_port, self.esp_port,
                                                        call.secrets.profile))
        self._keylog(call)
        # Echoes may go at once; our own audio waits for the ACK, when the caller holds keys.
        media.start(call.remote_media, play=False)
        log.info("call_incoming", call_id=call.call_id, rtp_port=rtp_port,
                 spi_in=f"0x{call.secrets.esp_in.spi:08x}")
        self._to_controller(replies)
        self._spawn(self._repeat(active, lambda: call.state == "answered", replies[-1]))

    # Device to device ----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            call = self.ua.by_spi.get(esp.spi_of(data))
            if call is None or call.secrets is None:
                return
            _, inner = call.secrets.esp_in.open(data)
            _, destination, payload = esp.parse_udp_datagram(inner)
        except KerberosError as exc:
            log.info("esp_dropped", peer=f"{addr[0]}:{addr[1]}", reason=exc.status)
            return
        if destination != SIP_PORT:
            return
        event = self.ua.receive_from_peer(call, payload)
        self._to_peer(call, event.to_peer)
        self._to_controller(event.to_controller)
        active = self.active.get(call.call_id)
        if event.kind == "ended" and active is not None:
            log.info("call_ended", call_id=call.call_id, why=call.why)
            self._finish(active, call.why)

    def _finish(self, active: Active, why: str) -> dict[str, Any]:
        self.active.pop(active.call.call_id, None)
        active.media.close()
        summary: dict[str, Any] = {"call_id": active.call.call_id, "why": why,
                                   "duration_s": round(time.monotonic() - active.started, 3),
                                   "setup_ms": active.keyed_ms,
                                   # INVITE sent (or received) → first media from the peer.
                                   "media_ms": None if active.media.first_received is None
                                   else round((active.media.first_received - active.started)
                                              * 1000, 2),
                                   **active.media.stats()}
        if self.record_dir is not None:
            path = self.record_dir / f"{active.call.call_id}.wav"
            write_wav(path, active.media.recording())
            summary["recording"] = str(path)
        self.finished[active.call.call_id] = summary
        if len(self.finished) > 1000:
            del self.finished[next(iter(self.finished))]
        return summary

    def _keylog(self, call: UaCall) -> None:
        """Labs only: our inbound device-to-device SA as a Wireshark esp_sa record (the peer
        writes the other direction)."""
        if self.esp_keylog is None or call.secrets is None or call.remote_media is None:
            return
        sa = call.secrets.esp_in
        append_secret_line(self.esp_keylog, esp.wireshark_esp_sa(
            call.remote_media.host, self.host, sa.spi, sa.suite, sa.keys))

    def status(self) -> dict[str, Any]:
        return {"esp_port": self.esp_port, "answer": self.answer_mode,
                **({"broker": self.broker.status()} if self.broker is not None else {}),
                "active": [{"call_id": a.call.call_id, "state": a.call.state,
                            **a.media.stats()} for a in self.active.values()],
                "finished": list(self.finished.values())[-20:]}
