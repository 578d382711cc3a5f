"""HTTPS listeners for the daemons that serve HTTPS (the key server, the provisioning service,
the head-end agent): one uvicorn server per listener, on a socket bound here (port 0: any free
port), each with its own TLS context.

Released uvicorn does not hand the application the client's certificate, so who may call a
listener is decided by that listener's TLS context alone: a mutual-TLS listener requires a
client certificate chaining to its own CA files (CERT_REQUIRED), and a client without one, or
with one from another CA, fails the handshake and never reaches the application. Callers of
different kinds (controllers, billing hosts, staff browsers) therefore get different ports.
"""

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from common.log import get_logger
from runtime.key_files import read_secret_bytes

log = get_logger(__name__)
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def server_context(cert_file: Path, key_file: Path, min_version: str,
                   client_ca_files: list[Path] | None) -> ssl.SSLContext:
    """A server context with this certificate; with `client_ca_files`, a client certificate
    chaining to one of them is required (CERT_REQUIRED)."""
    read_secret_bytes(key_file)  # refuse a key file others can read
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[min_version]
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    if client_ca_files is not None:
        if not client_ca_files:
            raise ValueError("a mutual-TLS listener needs at least one client CA file")
        for path in client_ca_files:
            context.load_verify_locations(cafile=path)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_files: list[Path], cert_file: Path | None, key_file: Path | None
                   ) -> ssl.SSLContext:
    """A client context trusting `ca_files` only, presenting this certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    for path in ca_files:
        context.load_verify_locations(cafile=path)
    if cert_file is not None and key_file is not None:
        read_secret_bytes(key_file)
        context.load_cert_chain(cert_file, key_file)
    return context


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class RequestLog:
    """One log line per request (STYLE §6): listener, peer, method, path, status, duration, and
    with `log_query` the query string (only where it holds nothing private: the key server's
    extensions and generators). Bodies (seeds, customer details, passwords) are never
    logged."""

    def __init__(self, app: ASGIApp, listener: str, log_query: bool = False) -> None:
        self.app = app
        self.listener = listener
        self.log_query = log_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            query = scope["query_string"].decode("latin-1")[:200] if self.log_query else None
            log.info("request", listener=self.listener, peer=client[0] if client else None,
                     method=scope["method"], path=scope["path"], query=query, status=status,
                     duration_ms=round(1000 * (time.perf_counter() - started), 3))


@dataclass
class Listener:
    name: str
    sock: socket.socket
    server: uvicorn.Server

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


def listener(name: str, app: Any, context: ssl.SSLContext, sock: socket.socket,
             log_query: bool = False) -> Listener:
    config = uvicorn.Config(RequestLog(app, name, log_query),
                            ssl_context_factory=lambda _c, _d: context,
                            log_config=None, access_log=False, lifespan="off",
                            server_header=False, proxy_headers=False, http="h11",
                            timeout_keep_alive=5, timeout_graceful_shutdown=5)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    return Listener(name, sock, server)


async def start(listeners: list[Listener]) -> list["asyncio.Task[None]"]:
    """Start serving every listener; the tasks end when `stop` is called."""
    for item in listeners:
        await item.server.startup(sockets=[item.sock])
    return [asyncio.create_task(item.server.main_loop()) for item in listeners]


async def stop(listeners: list[Listener], ticks: list["asyncio.Task[None]"]) -> None:
    for item in listeners:
        item.server.should_exit = True
    await asyncio.gather(*ticks, return_exceptions=True)
    for item in listeners:
        await item.server.shutdown(sockets=[item.sock])
