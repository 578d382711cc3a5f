"""The key server's asyncio glue: one TLS listener per service, each an uvicorn server on a
socket bound here (port 0: any free port), with the client-certificate rule enforced by the
TLS context of its listener, since released uvicorn does not hand the application the client's
certificate:

- basic service: server-authenticated TLS (no client certificate asked for);
- advanced service: CERT_REQUIRED against `advanced_client_ca_files`;
- admin API: CERT_REQUIRED against `admin_client_ca_files`.

A client without a certificate, or with one that does not chain to the listener's CAs, fails
the TLS handshake and never reaches the application. `listening` is logged once every
listener serves, with the ports bound; SIGTERM and SIGINT stop it cleanly.
"""

import asyncio
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from common.log import get_logger
from keyserver.agent import KeyAgent
from keyserver.app import RequestLog, admin_app, advanced_app, basic_app
from keyserver.settings import KeyserverSettings
from runtime.key_files import read_secret_bytes
from runtime.process import settle_heap

log = get_logger(__name__)
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def tls_context(settings: KeyserverSettings, client_ca_files: list[Path] | None
                ) -> ssl.SSLContext:
    """A server context with the key server's certificate; with `client_ca_files`, a client
    certificate chaining to one of them is required (CERT_REQUIRED)."""
    read_secret_bytes(settings.tls_key_file)  # refuse a key file others can read
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[settings.tls_min_version]
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    context.set_alpn_protocols(["http/1.1"])
    if client_ca_files is not None:
        if not client_ca_files:
            raise ValueError("a mutual-TLS listener needs at least one client CA file")
        for path in client_ca_files:
            context.load_verify_locations(cafile=path)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass
class Listener:
    name: str
    sock: socket.socket
    server: uvicorn.Server

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


def _listener(name: str, app: Any, context: ssl.SSLContext, sock: socket.socket) -> Listener:
    config = uvicorn.Config(RequestLog(app, name), ssl_context_factory=lambda _c, _d: context,
                            log_config=None, access_log=False, lifespan="off",
                            server_header=False, proxy_headers=False, http="h11",
                            timeout_keep_alive=5, timeout_graceful_shutdown=5)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    return Listener(name, sock, server)


async def serve(agent: KeyAgent, settings: KeyserverSettings) -> None:
    """Serve the three listeners until SIGTERM/SIGINT."""
    await agent.start()
    listeners = [
        _listener("basic", basic_app(agent, settings.key_file_rate_per_source,
                                     settings.key_file_burst_per_source),
                  tls_context(settings, None), bind(settings.listen_host, settings.basic_port)),
        _listener("advanced", advanced_app(agent),
                  tls_context(settings, settings.advanced_client_ca_files),
                  bind(settings.listen_host, settings.advanced_port)),
        _listener("admin", admin_app(agent), tls_context(settings, settings.admin_client_ca_files),
                  bind(settings.admin_host, settings.admin_port)),
    ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for listener in listeners:
        await listener.server.startup(sockets=[listener.sock])
    ticks = [asyncio.create_task(listener.server.main_loop()) for listener in listeners]
    km = agent.master_key
    log.info("listening", host=settings.listen_host, admin_host=settings.admin_host,
             ports={listener.name: listener.port for listener in listeners},
             port=listeners[0].port, server_id=settings.server_id,
             profile=settings.profile,
             km_store=("token" if settings.km_token_label else "wrapped"),
             kmvno=None if km is None else km.kmvno,
             check_value=None if km is None else km.check_value.hex())
    settle_heap()
    try:
        await stop.wait()
    finally:
        for listener in listeners:
            listener.server.should_exit = True
        await asyncio.gather(*ticks, return_exceptions=True)
        for listener in listeners:
            await listener.server.shutdown(sockets=[listener.sock])
        await agent.close()
        log.info("stopped")
