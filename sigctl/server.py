"""The signaling controller daemon: UDP key management (PacketCable framing) and ESP in UDP,
over the sans-I/O core common/pktc/km_server.py. One log line per exchange; secrets never logged.

Inner datagrams delivered through ESP go to the controller's services by destination port:
7 = echo (the datagram comes back with the ports swapped), 5060 = call control
(common/calls/control.py). Peer controllers are reached through a link of our own to each
(runtime/controller_link.py: an AP exchange with a ticket for the peer that our keytab gets from the
KDC, then ESP); SIP from a peer arrives on the SA it opened to us, and is told from a
device's by its client principal."""

import asyncio
import functools
import signal
import socket
import time
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from prometheus_client import start_http_server

from common.calls.control import CallControl, Leg, Outcome
from common.calls.escrow import seal
from common.kerberos.ap_exchange import KeytabKeys
from common.kerberos.ccache import Credential
from common.kerberos.keytab import decode_keytab
from common.log import get_logger
from common.messages.base import compile_codecs
from common.pktc import esp
from common.pktc.km_server import ControllerSa, Exchange, KeyManagementServer
from runtime.controller_link import SIP_PORT, ControllerAddress, ControllerLink
from runtime.kdc_client import keytab_login
from runtime.key_files import append_secret_line
from runtime.process import settle_heap
from runtime.prometheus import child
from sigctl import metrics, workers
from sigctl.broker import KeyBroker
from sigctl.escrow_store import EscrowStore
from sigctl.extensions import PinCache, open_extension_store
from sigctl.provisioning_link import ProvisioningLink
from sigctl.ras import RasService, phone_principal
from sigctl.settings import SigctlSettings

log = get_logger("sigctl")
ECHO_PORT = 7
SUITES_BY_NAME = {s.name: s for s in esp.SUITES.values()}


def build_core(settings: SigctlSettings, spi_share: tuple[int, int] = (0, 1)
               ) -> KeyManagementServer:
    """The key-management core of the settings (of the main process, or of a worker)."""
    return KeyManagementServer(
        principal=settings.principal, realm=settings.realm,
        keys=KeytabKeys(decode_keytab(settings.keytab_file.read_bytes())),
        suites=tuple(SUITES_BY_NAME[name] for name in settings.suites),
        sa_lifetime_s=settings.sa_lifetime_s, grace_s=settings.grace_s,
        max_skew_s=settings.max_skew_s, ack_required=settings.ack_required,
        spi_share=spi_share, ticket_cache=settings.ticket_cache,
        wake_up_rate=settings.wake_up_rate_per_s,
        broker=settings.call_key_policy == "chained")


class Controller:
    def __init__(self, settings: SigctlSettings) -> None:
        self.settings = settings
        self.core = build_core(settings)
        self.km: Any = None
        self.esp: Any = None
        self.keytab = decode_keytab(settings.keytab_file.read_bytes())
        escrow_key = None
        self.escrow: EscrowStore | None = None
        if settings.escrow_public_key_file is not None:
            loaded = load_pem_public_key(settings.escrow_public_key_file.read_bytes())
            if not isinstance(loaded, X25519PublicKey):
                raise ValueError("escrow_public_key_file: not an X25519 public key")
            escrow_key = loaded
            self.escrow = EscrowStore(settings.escrow_database_url)
        self.broker: KeyBroker | None = None
        if settings.call_key_policy == "chained":
            self.broker = KeyBroker(settings, sa_of=self._sa_of, link_secret=self._link_secret,
                                    send=lambda sa, data: self.send(
                                        sa, esp.udp_datagram(SIP_PORT, SIP_PORT, data)),
                                    rekey=self._rekey)
        self.calls = CallControl(
            principal=settings.principal, realm=settings.realm, lines=dict(settings.lines),
            routes=dict(settings.routes), online=self._online,
            seal=(lambda data, call_id: seal(data, escrow_key, call_id)) if escrow_key
            else None, srtp_profile=settings.srtp_profile, chained=self.broker)
        self.provisioning = (ProvisioningLink(settings, self) if settings.provisioning_url
                             else None)
        self.ras: RasService | None = None
        if settings.keyserver_url:
            pins = PinCache(open_extension_store(settings), on_change=self._extension_lines)
            self.ras = RasService(settings, self.core, pins, self._keylog,
                                  tuple(SUITES_BY_NAME[name] for name in settings.suites))
        self.links: dict[str, ControllerLink] = {}
        self.peer_tickets: dict[str, Credential] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # With km_workers: the shared key-management socket and our ends of the workers'
        # socket pairs with their pids, while they live.
        self.km_socket: socket.socket | None = None
        self.worker_pipes: dict[socket.socket, int] = {}

    def _extension_lines(self, pins: dict[str, str]) -> None:
        """Every administered extension is a line of this controller (`phone/<EXT>`), as
        those in the settings are; an extension deleted stops being one."""
        for number, principal in list(self.calls.lines.items()):
            if principal.startswith("phone/") and number not in pins \
                    and number not in self.settings.lines:
                del self.calls.lines[number]
                self.calls.numbers.pop(principal, None)
        for ext in pins:
            if ext not in self.settings.lines:
                self.calls.lines[ext] = phone_principal(ext)
                self.calls.numbers[phone_principal(ext)] = ext

    def _principal(self, client: str) -> str:
        return client.removesuffix("@" + self.settings.realm)

    def _online(self, principal: str) -> bool:
        sa = self.core.by_client.get(f"{principal}@{self.settings.realm}")
        return sa is not None and sa.expires > time.monotonic()

    def _sa_of(self, principal: str) -> ControllerSa | None:
        sa = self.core.by_client.get(f"{principal}@{self.settings.realm}")
        return sa if sa is not None and sa.expires > time.monotonic() else None

    def _link_secret(self, peer: str) -> bytes | None:
        link = self.links.get(peer)
        return link.sa.channel_secret if link is not None and link.sa is not None else None

    def _rekey(self, sa: ControllerSa) -> None:
        self.km.sendto(self.core.rekey(sa, datetime.now(UTC)), sa.peer)
        child(metrics.exchanges, "rekey", "SENT").inc()
        log.info("rekey", peer=f"{sa.peer[0]}:{sa.peer[1]}", client=sa.client,
                 spi=f"0x{sa.inbound.spi:08x}", reason="broker")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_km(self, data: bytes, peer: tuple[str, int]) -> None:
        started = time.perf_counter()
        self.finish(self.core.receive_km(data, peer, datetime.now(UTC), time.monotonic()),
                    peer, started)

    def on_km_readable(self) -> None:
        """The key-management socket, read here once every worker is gone: a burst at a time,
        so ESP and timers still get their turn."""
        assert self.km_socket is not None
        for _ in range(64):
            try:
                data, peer = self.km_socket.recvfrom(65536)
            except BlockingIOError:
                return
            try:
                self.on_km(data, peer)
            except Exception:  # our bug: log it, go on with the next
                log.exception("internal_error", peer=f"{peer[0]}:{peer[1]}")

    def worker_gone(self, pipe: socket.socket) -> None:
        """A worker died (killed, or out of memory): the others go on; after the last one
        this process serves key management itself, with the SPI space and SAs it has."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(pipe.fileno())
        pipe.close()
        workers.reap(self.worker_pipes.pop(pipe))
        log.error("km_worker_gone", workers_left=len(self.worker_pipes))
        if not self.worker_pipes and self.km_socket is not None:
            loop.add_reader(self.km_socket.fileno(), self.on_km_readable)
            log.error("km_in_process", reason="every key-management worker is gone")

    def on_worker(self, pipe: socket.socket) -> None:
        """What a key-management worker prepared: install it, answer, log."""
        try:
            messages = workers.receive(pipe)
        except EOFError:
            self.worker_gone(pipe)
            return
        for forwarded, peer, result, worker_s in messages:
            started = time.perf_counter() - worker_s
            try:
                self.finish(self.core.complete(result, forwarded or b"", peer,
                                               datetime.now(UTC), time.monotonic()),
                            peer, started)
            except Exception:  # our bug: log it, go on with the next
                log.exception("internal_error", peer=f"{peer[0]}:{peer[1]}")

    def finish(self, exchange: Exchange, peer: tuple[str, int], started: float) -> None:
        if exchange.reply is not None:
            self.km.sendto(exchange.reply, peer)
        child(metrics.exchanges, exchange.kind, exchange.result).inc()
        if exchange.sa is not None and exchange.kind == "ap_request":
            self._keylog(exchange.sa)
            if self.broker is not None:
                self.broker.sa_installed(exchange.sa)
            if self.provisioning is not None:
                self.provisioning.sa_installed(exchange.sa)
        log.info(exchange.kind, peer=f"{peer[0]}:{peer[1]}", result=exchange.result,
                 client=exchange.client,
                 spi=f"0x{exchange.sa.inbound.spi:08x}" if exchange.sa else None,
                 suite=exchange.sa.inbound.suite.name if exchange.sa else None,
                 restricted=bool(exchange.sa and exchange.sa.restriction),
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))

    def on_esp(self, packet: bytes, peer: tuple[str, int]) -> None:
        result = self.core.receive_esp(packet, peer, time.monotonic())
        child(metrics.esp_packets, result.dropped or "accepted").inc()
        if result.wake_up is not None:
            metrics.wake_ups.inc()
            self.km.sendto(result.wake_up, peer)
            log.info("wake_up", peer=f"{peer[0]}:{peer[1]}", reason=result.dropped)
        elif result.suppressed is not None:
            child(metrics.wake_ups_suppressed, result.suppressed).inc()
        # Dropped packets are counted (esp_packets), not logged one by one: a flood of them
        # must not become a flood of log lines.
        if result.payload is not None and result.sa is not None:
            self.deliver(result.sa, result.payload)

    def deliver(self, sa: ControllerSa, datagram: bytes) -> None:
        try:
            source, destination, payload = esp.parse_udp_datagram(datagram)
        except Exception:
            return
        if destination == ECHO_PORT:
            self.send(sa, esp.udp_datagram(destination, source, payload))
        elif destination == SIP_PORT:
            if self.provisioning is not None and self.provisioning.claims(sa, payload):
                return  # a device's answer to a certificate delivery
            principal = self._principal(sa.client)
            leg: Leg = ("peer" if principal in self.settings.peers else "device", principal)
            self.signal(leg, payload, sa)

    def signal(self, leg: Leg, payload: bytes, sa: ControllerSa | None = None) -> None:
        if self.broker is not None and self.broker.claims(leg, payload):
            return
        outcome = self.calls.receive(leg, payload, sa.restriction if sa else None,
                                     time.monotonic())
        self.act(outcome)

    def act(self, outcome: Outcome) -> None:
        for event in outcome.events:
            name = str(event.pop("event"))
            child(metrics.calls, name).inc()
            log.info(name, **event)
        if self.escrow is not None and outcome.escrow is not None:
            self.escrow.add(outcome.escrow.call_id, outcome.escrow.sealed,
                            self.settings.principal, self.settings.max_call_s)
        if self.escrow is not None and outcome.ended is not None:
            self.escrow.ended(outcome.ended, self.settings.escrow_retention_s)
        if self.broker is not None and outcome.ended is not None:
            self.broker.session_ended(outcome.ended)
        for send in outcome.sends:
            if send.leg[0] == "device":
                sa = self.core.by_client.get(f"{send.leg[1]}@{self.settings.realm}")
                if sa is None:
                    log.info("sip_undeliverable", leg=send.leg[1])
                    continue
                self.send(sa, esp.udp_datagram(SIP_PORT, SIP_PORT, send.data))
            else:
                self._spawn(self._to_peer(send.leg[1], send.data))

    async def _to_peer(self, peer: str, data: bytes) -> None:
        link = self.links.get(peer)
        if link is None:
            log.info("sip_undeliverable", leg=peer, reason="no link configured")
            return
        try:
            await link.send_signal(data)
        except (TimeoutError, ConnectionError) as exc:
            log.warning("peer_unreachable", peer=peer, error=str(exc))

    # Links to peer controllers -------------------------------------------------------

    def _peer_ticket(self, principal: str) -> Credential | None:
        return self.peer_tickets.get(principal)

    async def _renew_peer_tickets(self) -> None:
        if self.settings.kdc is None:
            log.warning("no_kdc_for_peer_tickets")
            await asyncio.sleep(5)
            return
        loop = asyncio.get_running_loop()
        for peer in self.settings.peers:
            try:
                self.peer_tickets[peer] = await loop.run_in_executor(None, functools.partial(
                    keytab_login, str(self.settings.kdc), self.keytab,
                    client=self.settings.principal, service=peer, realm=self.settings.realm))
                log.info("peer_ticket", peer=peer)
            except (OSError, KeyError, ValueError) as exc:
                log.warning("peer_ticket_failed", peer=peer, error=str(exc))
                await asyncio.sleep(2)

    async def start_links(self) -> None:
        for principal, address in self.settings.peers.items():
            host, km_port, *esp_port = address.split(":")
            link = ControllerLink(
                [ControllerAddress(principal, host, int(km_port),
                                   int(esp_port[0]) if esp_port else 4500)],
                self._peer_ticket, self._renew_peer_tickets,
                on_signal=functools.partial(self.signal, ("peer", principal)),
                local_host=self.settings.listen_host,
                keepalive_s=self.settings.peer_keepalive_s)
            self.links[principal] = link
            await link.start()

    def send(self, sa: ControllerSa, datagram: bytes) -> None:
        self.esp.sendto(self.core.seal(sa, datagram), sa.peer)

    def _keylog(self, sa: ControllerSa) -> None:
        path = self.settings.esp_keylog_file
        if path is None:
            return
        ours = self.settings.listen_host
        lines = [esp.wireshark_esp_sa(sa.peer[0], ours, sa.inbound.spi, sa.inbound.suite,
                                      sa.inbound.keys),
                 esp.wireshark_esp_sa(ours, sa.peer[0], sa.outbound.spi, sa.outbound.suite,
                                      sa.outbound.keys)]
        append_secret_line(path, "\n".join(lines))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.handler(data, addr)
        except Exception:  # our bug: log it, keep serving
            log.exception("internal_error", peer=f"{addr[0]}:{addr[1]}")

    def error_received(self, exc: Exception) -> None:
        log.info("udp_error", error=str(exc))


# <asm-generic/socket.h>; Python's socket module names it only from 3.12 on.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _udp_socket(host: str, port: int, buffer_bytes: int) -> socket.socket:
    """A bound UDP socket with a receive buffer for bursts (every device re-keying after a
    restart): SO_RCVBUFFORCE when privileged, else SO_RCVBUF up to the kernel's rmem_max."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class _Sender:
    """The key-management socket when workers read it: the main process only sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendto(self, data: bytes, peer: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, peer)
        except OSError as exc:  # a full buffer: the device retransmits, as after a loss
            log.info("udp_error", error=str(exc), peer=f"{peer[0]}:{peer[1]}")

    def get_extra_info(self, name: str) -> Any:
        return self.sock.getsockname() if name == "sockname" else None

    def close(self) -> None:
        self.sock.close()


def km_socket(settings: SigctlSettings) -> socket.socket:
    return _udp_socket(settings.listen_host, settings.km_port, settings.udp_buffer_bytes)


def start_km_workers(settings: SigctlSettings) -> tuple[socket.socket, dict[socket.socket, int]]:
    """Before the event loop: the key-management socket and `km_workers` workers on it."""
    compile_codecs()  # inherited by the workers
    sock = km_socket(settings)
    return sock, workers.start_workers(sock, settings.km_workers,
                                       lambda share: build_core(settings, share))


async def serve(settings: SigctlSettings,
                km_workers: tuple[socket.socket, dict[socket.socket, int]] | None = None) -> None:
    compile_codecs()  # before listening: no request pays for generating a codec
    controller = Controller(settings)
    metrics.security_associations.set_function(lambda: len(controller.core.sas))  # at scrape
    loop = asyncio.get_running_loop()
    km: Any
    if km_workers is None:
        km, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(controller.on_km), sock=km_socket(settings))
    else:
        km = _Sender(km_workers[0])
        controller.km_socket = km_workers[0]
        for pipe, pid in km_workers[1].items():
            controller.worker_pipes[pipe] = pid
            loop.add_reader(pipe.fileno(), controller.on_worker, pipe)
    esp_transport, _ = await loop.create_datagram_endpoint(
        lambda: _Datagrams(controller.on_esp),
        sock=_udp_socket(settings.listen_host, settings.esp_port, settings.udp_buffer_bytes))
    controller.km, controller.esp = km, esp_transport
    ras_port = None
    if controller.ras is not None:
        from common.enterprise.per import ras_codec

        ras_codec()  # compiled before listening (about 0.7 s)
        on_ras = controller.ras.on_datagram
        ras_transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(on_ras),
            sock=_udp_socket(settings.listen_host, settings.ras_port,
                             settings.udp_buffer_bytes))
        ras_port = ras_transport.get_extra_info("sockname")[1]
        controller.ras.start(ras_transport, (settings.listen_host, ras_port),
                             (settings.listen_host, esp_transport.get_extra_info("sockname")[1]))
    await controller.start_links()
    if controller.provisioning is not None:
        await controller.provisioning.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_port = None
    if settings.metrics_port is not None:
        server, _ = start_http_server(settings.metrics_port, settings.listen_host,
                                      registry=metrics.registry)
        metrics_port = server.server_port
    log.info("listening", host=settings.listen_host, km_port=km.get_extra_info("sockname")[1],
             esp_port=esp_transport.get_extra_info("sockname")[1], principal=settings.principal,
             realm=settings.realm, metrics_port=metrics_port, ras_port=ras_port,
             km_workers=len(km_workers[1]) if km_workers else 0)

    async def expire() -> None:
        """Once a second: Rekey for SAs the device let run into their grace period, and
        forget SAs whose lifetime is over."""
        while True:
            await asyncio.sleep(1)
            mono = time.monotonic()
            for sa, rekey in controller.core.rekeys_due(datetime.now(UTC), mono):
                km.sendto(rekey, sa.peer)
                child(metrics.exchanges, "rekey", "SENT").inc()
                log.info("rekey", peer=f"{sa.peer[0]}:{sa.peer[1]}", client=sa.client,
                         spi=f"0x{sa.inbound.spi:08x}")
            controller.core.expire(mono)
            for outcome in controller.calls.expire(mono, settings.max_call_s):
                controller.act(outcome)
            if controller.broker is not None:
                controller.broker.tick()
            if controller.escrow is not None and int(mono) % 60 == 0:
                purged = controller.escrow.purge()
                if purged:
                    log.info("escrow_purged", records=purged)

    sweeper = asyncio.create_task(expire())
    settle_heap()  # runtime/process.py: start-up objects frozen, collections rarer
    await stop.wait()
    sweeper.cancel()
    if controller.km_socket is not None and not controller.worker_pipes:
        loop.remove_reader(controller.km_socket.fileno())
    km.close()
    for pipe in controller.worker_pipes:
        loop.remove_reader(pipe.fileno())
        pipe.close()  # the workers see it and exit
    esp_transport.close()
    if controller.ras is not None and controller.ras.transport is not None:
        controller.ras.transport.close()
    if controller.provisioning is not None:
        await controller.provisioning.close()
    log.info("stopped", sas=len(controller.core.sas))
