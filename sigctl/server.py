"""The signaling controller daemon: UDP key management (PacketCable framing) and ESP in UDP,
over the sans-I/O core common/km_server.py. One log line per exchange; secrets never logged.

Inner datagrams delivered through ESP go to the controller's services by destination port:
7 = echo (the datagram comes back with the ports swapped)."""

import asyncio
import gc
import signal
import socket
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import start_http_server

from common import esp
from common.ap_exchange import KeytabKeys
from common.keytab import decode_keytab
from common.km_server import ControllerSa, KeyManagementServer
from common.log import get_logger
from sigctl import metrics
from sigctl.settings import SigctlSettings

log = get_logger("sigctl")
ECHO_PORT = 7
SUITES_BY_NAME = {s.name: s for s in esp.SUITES.values()}


class Controller:
    def __init__(self, settings: SigctlSettings) -> None:
        self.settings = settings
        keys = KeytabKeys(decode_keytab(settings.keytab_file.read_bytes()))
        self.core = KeyManagementServer(
            principal=settings.principal, realm=settings.realm, keys=keys,
            suites=tuple(SUITES_BY_NAME[name] for name in settings.suites),
            sa_lifetime_s=settings.sa_lifetime_s, grace_s=settings.grace_s,
            max_skew_s=settings.max_skew_s, ack_required=settings.ack_required)
        self.km: Any = None
        self.esp: Any = None

    def on_km(self, data: bytes, peer: tuple[str, int]) -> None:
        started = time.perf_counter()
        exchange = self.core.receive_km(data, peer, datetime.now(UTC), time.monotonic())
        if exchange.reply is not None:
            self.km.sendto(exchange.reply, peer)
        metrics.exchanges.labels(exchange.kind, exchange.result).inc()
        if exchange.sa is not None and exchange.kind == "ap_request":
            self._keylog(exchange.sa)
            metrics.security_associations.set(len(self.core.sas))
        log.info(exchange.kind, peer=f"{peer[0]}:{peer[1]}", result=exchange.result,
                 client=exchange.client,
                 spi=f"0x{exchange.sa.inbound.spi:08x}" if exchange.sa else None,
                 suite=exchange.sa.inbound.suite.name if exchange.sa else None,
                 restricted=bool(exchange.sa and exchange.sa.restriction),
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))

    def on_esp(self, packet: bytes, peer: tuple[str, int]) -> None:
        result = self.core.receive_esp(packet, peer, time.monotonic())
        metrics.esp_packets.labels(result.dropped or "accepted").inc()
        if result.wake_up is not None:
            metrics.wake_ups.inc()
            self.km.sendto(result.wake_up, peer)
            log.info("wake_up", peer=f"{peer[0]}:{peer[1]}", reason=result.dropped)
        elif result.dropped is not None:
            log.info("esp_dropped", peer=f"{peer[0]}:{peer[1]}", reason=result.dropped)
        if result.payload is not None and result.sa is not None:
            self.deliver(result.sa, result.payload)

    def deliver(self, sa: ControllerSa, datagram: bytes) -> None:
        try:
            source, destination, payload = esp.parse_udp_datagram(datagram)
        except Exception:
            return
        if destination == ECHO_PORT:
            self.send(sa, esp.udp_datagram(destination, source, payload))

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
        with path.open("a") as out:
            out.write("\n".join(lines) + "\n")


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


def _udp_socket(host: str, port: int, buffer_bytes: int) -> socket.socket:
    """A bound UDP socket with a receive buffer for bursts (every device re-keying after a
    restart): SO_RCVBUFFORCE when privileged, else SO_RCVBUF up to the kernel's rmem_max."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, buffer_bytes)
    except (OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def serve(settings: SigctlSettings) -> None:
    controller = Controller(settings)
    loop = asyncio.get_running_loop()
    km, _ = await loop.create_datagram_endpoint(
        lambda: _Datagrams(controller.on_km),
        sock=_udp_socket(settings.listen_host, settings.km_port, settings.udp_buffer_bytes))
    esp_transport, _ = await loop.create_datagram_endpoint(
        lambda: _Datagrams(controller.on_esp),
        sock=_udp_socket(settings.listen_host, settings.esp_port, settings.udp_buffer_bytes))
    controller.km, controller.esp = km, esp_transport
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
             realm=settings.realm, metrics_port=metrics_port)

    async def expire() -> None:
        """Once a second: Rekey for SAs the device let run into their grace period, and
        forget SAs whose lifetime is over."""
        while True:
            await asyncio.sleep(1)
            mono = time.monotonic()
            for sa, rekey in controller.core.rekeys_due(datetime.now(UTC), mono):
                km.sendto(rekey, sa.peer)
                metrics.exchanges.labels("rekey", "SENT").inc()
                log.info("rekey", peer=f"{sa.peer[0]}:{sa.peer[1]}", client=sa.client,
                         spi=f"0x{sa.inbound.spi:08x}")
            if controller.core.expire(mono):
                metrics.security_associations.set(len(controller.core.sas))

    sweeper = asyncio.create_task(expire())
    # Everything allocated so far lives as long as the process: keep it out of the cyclic
    # collector's generations so per-datagram collections stay cheap (as the KDC does).
    gc.collect()
    gc.freeze()
    await stop.wait()
    sweeper.cancel()
    km.close()
    esp_transport.close()
    log.info("stopped", sas=len(controller.core.sas))
