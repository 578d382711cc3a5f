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
import ssl
from pathlib import Path

from common.log import get_logger
from keyserver.agent import KeyAgent
from keyserver.app import admin_app, advanced_app, basic_app
from keyserver.settings import KeyserverSettings
from runtime.https_server import bind, listener, server_context, start, stop
from runtime.process import settle_heap

log = get_logger(__name__)


def tls_context(settings: KeyserverSettings, client_ca_files: list[Path] | None
                ) -> ssl.SSLContext:
    """A server context with the key server's certificate; with `client_ca_files`, a client
    certificate chaining to one of them is required (CERT_REQUIRED)."""
    return server_context(settings.tls_cert_file, settings.tls_key_file,
                          settings.tls_min_version, client_ca_files)


async def serve(agent: KeyAgent, settings: KeyserverSettings) -> None:
    """Serve the three listeners until SIGTERM/SIGINT."""
    await agent.start()
    listeners = [
        listener("basic", basic_app(agent, settings.key_file_rate_per_source,
                                    settings.key_file_burst_per_source),
                 tls_context(settings, None), bind(settings.listen_host, settings.basic_port),
                 log_query=True),
        listener("advanced", advanced_app(agent),
                 tls_context(settings, settings.advanced_client_ca_files),
                 bind(settings.listen_host, settings.advanced_port), log_query=True),
        listener("admin", admin_app(agent), tls_context(settings, settings.admin_client_ca_files),
                 bind(settings.admin_host, settings.admin_port), log_query=True),
    ]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    ticks = await start(listeners)
    km = agent.master_key
    log.info("listening", host=settings.listen_host, admin_host=settings.admin_host,
             ports={item.name: item.port for item in listeners},
             port=listeners[0].port, server_id=settings.server_id,
             profile=settings.profile,
             km_store=("token" if settings.km_token_label else "wrapped"),
             kmvno=None if km is None else km.kmvno,
             check_value=None if km is None else km.check_value.hex())
    settle_heap()
    try:
        await stopping.wait()
    finally:
        await stop(listeners, ticks)
        await agent.close()
        log.info("stopped")
