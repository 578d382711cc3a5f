"""The KDC's asyncio glue (STYLE §2): bind TCP and UDP on one port, frame TCP records
(RFC 4120 §7.2.2), cap sizes, hand bytes to common.kerberos.as_exchange, turn errors into
KRB-ERRORs, log one line per request, stop on SIGTERM. Protocol decisions live in common/."""

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy.exc
import structlog
from prometheus_client import start_http_server

from common.codes import ErrorCode
from common.errors import (
    FieldTooLong,
    KerberosError,
    MalformedMessage,
    MasterKeyError,
    ResponseTooBig,
)
from common.kerberos.as_exchange import AsPolicy, PkinitState, handle_as_req, krbtgt_name
from common.kerberos.lookaside import Lookaside
from common.kerberos.rate_limit import RateLimiter
from common.kerberos.replay import ReplayCache
from common.kerberos.tcp_fairness import ConnectionTable, TcpLimits
from common.kerberos.tcp_framing import RecordBuffer, encode_record
from common.kerberos.tgs_exchange import handle_tgs_req
from common.kerberos.ticket_cache import TicketCache
from common.log import get_logger
from common.messages.base import compile_codecs
from common.messages.krb_error import ErrorReplies
from kdc import metrics
from kdc.cache import CachedPrincipals
from kdc.db import Database
from kdc.settings import KdcSettings
from kdc.token import TokenUnavailable
from runtime.process import settle_heap

log = get_logger("kdc")
AS_REQ_TAG, TGS_REQ_TAG = 0x6A, 0x6C
KINDS = {AS_REQ_TAG: "as_req", TGS_REQ_TAG: "tgs_req"}


class KdcBusy(KerberosError):
    """A source over its AS request rate (TCP only; over UDP it is not answered)."""

    code = ErrorCode.KDC_ERR_SVC_UNAVAILABLE


class ServiceUnavailable(KerberosError):
    """What the request needs cannot be had right now (the database is unreachable, a key is
    wrapped under a master key version this host does not hold, the signing token is gone):
    the client may try again or another KDC."""

    code = ErrorCode.KDC_ERR_SVC_UNAVAILABLE


# Failures of what the KDC depends on, as opposed to bad requests or our bugs.
_UNAVAILABLE_STATUS = ((sqlalchemy.exc.SQLAlchemyError, "DATABASE_UNAVAILABLE"),
                       (MasterKeyError, "MASTER_KEY_UNAVAILABLE"),
                       (TokenUnavailable, "TOKEN_UNAVAILABLE"))
_DEPENDENCY_ERRORS = tuple(kind for kind, _ in _UNAVAILABLE_STATUS)


def _cause(exc: BaseException) -> str:
    """A one-line cause for the log: the driver's message, never SQL or its parameters."""
    inner = getattr(exc, "orig", None) or exc
    first = (str(inner).splitlines() or [""])[0]
    return f"{type(inner).__name__}: {first}"[:200]


@dataclass
class Kdc:
    settings: KdcSettings
    policy: AsPolicy
    db: Database
    replay: ReplayCache = field(default_factory=lambda: ReplayCache(timedelta(minutes=10)))
    state: PkinitState = field(default_factory=PkinitState)
    principals: CachedPrincipals = field(init=False)

    limiter: RateLimiter | None = None
    lookaside: Lookaside = field(default_factory=Lookaside)
    tickets: TicketCache = field(default_factory=TicketCache)  # opened TGTs
    log: Any = None  # the request log: structlog's logger, resolved once
    errors: ErrorReplies = field(init=False)
    connections: ConnectionTable = field(init=False)  # this process's TCP connections
    unavailable: str | None = None  # the cause while a dependency fails (logged once)

    def __post_init__(self) -> None:
        self.errors = ErrorReplies(self.policy.realm, krbtgt_name(self.policy.realm),
                                   self.settings.vague_errors)
        if self.log is None:
            # structlog's module-level logger is a lazy proxy, resolved again at every call
            self.log = log.bind()
        self.principals = CachedPrincipals(self.db, self.settings.principal_cache_ttl_s)
        self.connections = ConnectionTable(TcpLimits(
            self.settings.max_tcp_connections, self.settings.max_tcp_per_address,
            self.settings.max_tcp_per_network, self.settings.tcp_ipv4_prefix,
            self.settings.tcp_ipv6_prefix))
        if self.limiter is None and self.settings.as_rate_per_source > 0:
            self.limiter = RateLimiter(self.settings.as_rate_per_source,
                                       self.settings.as_burst_per_source)

    def handle(self, data: bytes, peer: str, transport: str) -> bytes | None:
        """One request in, one reply out (None: drop a datagram too garbled to answer)."""
        started = time.perf_counter()
        now = datetime.now(UTC)
        kind = KINDS.get(data[0] if data else -1)
        if kind is None and transport == "udp":
            # Counted, not logged: a flood of garbage must not become a flood of log lines.
            metrics.dropped.inc(transport, "not_a_kdc_request")
            return None
        if kind == "as_req" and self.limiter is not None and \
                not self.limiter.allow(peer.rsplit(":", 1)[0], started):
            metrics.rate_limited.inc(transport)
            if transport == "udp":  # never amplify a flood: no answer on UDP
                return None
            return self._error(KdcBusy("RATE_LIMITED"), now)
        key = Lookaside.key(data)
        if (cached := self.lookaside.get(key, started)) is not None:
            # A retransmission (UDP timeout, or TCP after RESPONSE_TOO_BIG): the same reply.
            metrics.requests.inc(kind or "unknown", "retransmit")
            if transport == "udp" and len(cached) > self.settings.udp_max_reply_bytes:
                return self._error(ResponseTooBig("RESPONSE_TOO_BIG"), now)
            self.log.info(kind or "unknown", peer=peer, transport=transport,
                          status="RETRANSMIT", code=0,
                          duration_ms=round((time.perf_counter() - started) * 1000, 3))
            return cached
        status, code = "OK", 0
        notes: dict[str, str] = {}
        try:
            if kind == "as_req":
                reply = handle_as_req(data, policy=self.policy, principals=self.principals,
                                      now=now, replay=self.replay, state=self.state,
                                      customers=self.principals, notes=notes, mono=started)
            elif kind == "tgs_req":
                reply = handle_tgs_req(
                    data, realm=self.policy.realm, principals=self.principals, now=now,
                    enctypes=self.policy.enctypes, max_skew=self.policy.max_skew,
                    default_lifetime=self.policy.default_lifetime, replay=self.replay,
                    notes=notes, tickets=self.tickets, mono=started)
            else:
                raise MalformedMessage("NOT_A_KDC_REQUEST", f"first byte {data[:1].hex()}")
        except KerberosError as exc:
            status, code = exc.status, int(exc.code)
            reply = self._error(exc, now)
            if transport == "udp" and isinstance(exc, MalformedMessage) and \
                    len(reply) > len(data):
                # A garbled datagram, perhaps from a spoofed source: an answer longer than
                # it would amplify, so it is counted and dropped.
                metrics.dropped.inc(transport, "malformed")
                return None
        except _DEPENDENCY_ERRORS as exc:
            unavailable = ServiceUnavailable(next(
                status for kind, status in _UNAVAILABLE_STATUS if isinstance(exc, kind)))
            self._dependency_failed(unavailable.status, exc)
            status, code = unavailable.status, int(unavailable.code)
            reply = self._error(unavailable, now)
        except Exception as exc:  # our bug: log it, answer KRB_ERR_GENERIC "INTERNAL"
            log.exception("internal_error", peer=peer)
            status, code = "INTERNAL", int(ErrorCode.KRB_ERR_GENERIC)
            reply = self._error(exc, now)
        # An unavailable answer is not remembered: a retransmission after recovery gets a
        # real one.
        if code != ErrorCode.KDC_ERR_SVC_UNAVAILABLE:
            self.lookaside.put(key, reply, started)
            if self.unavailable is not None:
                log.info("service_restored", after=self.unavailable)
                self.unavailable = None
        if transport == "udp" and len(reply) > self.settings.udp_max_reply_bytes:
            status, code = "RESPONSE_TOO_BIG", int(ErrorCode.KRB_ERR_RESPONSE_TOO_BIG)
            reply = self._error(ResponseTooBig("RESPONSE_TOO_BIG"), now)
        elapsed = time.perf_counter() - started
        metrics.requests.inc(kind or "unknown", str(code))
        metrics.processing.observe(elapsed, kind or "unknown")
        self.log.info(kind or "unknown", peer=peer, transport=transport, status=status,
                      code=code, duration_ms=round(elapsed * 1000, 3), **notes)
        return reply

    def _error(self, exc: BaseException, now: datetime) -> bytes:
        return self.errors.reply(exc, now)

    def _dependency_failed(self, status: str, exc: BaseException) -> None:
        """Log the cause once when a dependency starts failing (not once per request: an
        outage under load would flood the log), and again when the cause changes."""
        cause = _cause(exc)
        if self.unavailable != cause:
            log.warning("service_unavailable", status=status, cause=cause)
            self.unavailable = cause


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, kdc: Kdc) -> None:
        self.kdc = kdc
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.kdc.handle(data, f"{addr[0]}:{addr[1]}", "udp")
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class _Tcp(asyncio.Protocol):
    """One TCP connection: RFC 4120 §7.2.2 records in, replies out, an idle timer, and its
    place in the KDC's connection table (common/kerberos/tcp_fairness.py). A Protocol rather
    than streams: no task or buffers per connection beyond what the records need (each MIT
    kinit request is a new connection)."""

    def __init__(self, kdc: Kdc) -> None:
        self.kdc = kdc
        self.buffer = RecordBuffer(kdc.settings.max_record_bytes)
        self.transport: Any = None
        self.peer = "?"
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        address = transport.get_extra_info("peername")
        self.peer = f"{address[0]}:{address[1]}" if address else "?"
        admission = self.kdc.connections.admit(self, address[0] if address else "?")
        if not admission.accepted:
            metrics.connections_refused.inc(admission.reason)
            log.info("connection_refused", peer=self.peer, reason=admission.reason)
            transport.close()
            return
        if isinstance(admission.evict, _Tcp):
            # All slots taken: the busiest network's least recently active connection goes.
            metrics.connections_refused.inc("evicted")
            log.info("connection_evicted", peer=admission.evict.peer, for_peer=self.peer)
            admission.evict.close()
        self._arm()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.kdc.connections.remove(self)
        self.transport.close()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(
            self.kdc.settings.tcp_idle_timeout_s, self.transport.close)

    def data_received(self, data: bytes) -> None:
        # Records pipelined before a bad length word are answered, then the KRB-ERROR.
        try:
            self.buffer.feed(data)
            while (record := self.buffer.next_record()) is not None:
                reply = self.kdc.handle(record, self.peer, "tcp")
                if reply is not None:
                    self.transport.write(encode_record(reply))
        except FieldTooLong as exc:
            self.transport.write(encode_record(self.kdc._error(exc, datetime.now(UTC))))
            log.info("tcp_record", peer=self.peer, status=exc.status, code=int(exc.code))
            self.close()
            return
        self.kdc.connections.touch(self)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.kdc.connections.remove(self)


def _bind_pair(host: str, port: int, reuse_port: bool = False
               ) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on the same port (with port 0: a free port both can have).
    With `reuse_port`, several worker processes bind the same port (SO_REUSEPORT) and the
    kernel spreads connections and datagrams across them."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for sock in (udp, tcp):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        udp.bind((host, port))
        chosen = udp.getsockname()[1]
        try:
            tcp.bind((host, chosen))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(128)
        return udp, tcp
    raise OSError("no free port for both TCP and UDP")


async def serve(kdc: Kdc, port: int | None = None, worker: int | None = None,
                ready: Callable[[], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT (as worker `worker` on `port` when the KDC has several);
    `ready` is called once the sockets are served and `worker_ready` is logged."""
    compile_codecs()  # before listening: no request pays for generating a codec
    settings = kdc.settings
    if worker is not None:
        structlog.contextvars.bind_contextvars(worker=worker)
    udp_sock, tcp_sock = _bind_pair(settings.listen_host,
                                    settings.listen_port if port is None else port,
                                    reuse_port=worker is not None)
    loop = asyncio.get_running_loop()
    udp_transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(kdc), sock=udp_sock)
    server = await loop.create_server(lambda: _Tcp(kdc), sock=tcp_sock)
    port = tcp_sock.getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_port = None
    if settings.metrics_port is not None:
        # Each worker serves its own counters: on metrics_port + worker (or any free port).
        wanted = settings.metrics_port + (worker or 0) if settings.metrics_port else 0
        metrics_server, _ = start_http_server(wanted, settings.listen_host,
                                              registry=metrics.registry)
        metrics_port = metrics_server.server_port
    if worker is None:
        log.info("listening", host=settings.listen_host, port=port, realm=settings.realm,
                 transports=["udp", "tcp"], metrics_port=metrics_port)
    else:
        log.info("worker_ready", worker=worker, pid=os.getpid(), port=port,
                 metrics_port=metrics_port)
    if ready is not None:
        ready()
    settle_heap()  # runtime/process.py: start-up objects frozen, collections rarer
    try:
        await stop.wait()
    finally:
        server.close()
        udp_transport.close()
        await server.wait_closed()
        log.info("stopped")


def run_workers(settings: KdcSettings, make_kdc: Callable[[], Kdc],
                run_loop: Callable[[Any], Any]) -> None:
    """`workers` processes sharing one port (SO_REUSEPORT). The parent reserves the port,
    forks the workers (each builds its own Kdc: database engines must not cross a fork), logs
    `listening` once all are ready, and passes SIGTERM/SIGINT on to them."""
    udp, tcp = _bind_pair(settings.listen_host, settings.listen_port, reuse_port=True)
    port = tcp.getsockname()[1]
    ready_read, ready_write = os.pipe()
    children = []
    for worker in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            os.close(ready_read)
            udp.close()
            tcp.close()

            def report_ready() -> None:
                os.write(ready_write, b"r")

            # Ready once serving and logged: the parent's `listening` follows every worker's
            # `worker_ready`, and the parent never closes its sockets before a worker serves.
            code = 0
            try:
                run_loop(serve(make_kdc(), port, worker, ready=report_ready))
            except BaseException:  # the worker's last act: report and exit non-zero
                log.exception("worker_failed", worker=worker)
                code = 1
            os._exit(code)
        children.append(pid)
    os.close(ready_write)
    started = 0
    while started < settings.workers:
        if not os.read(ready_read, 1):
            break
        started += 1
    # The workers hold the port now; the parent's sockets would only steal traffic.
    udp.close()
    tcp.close()
    log.info("listening", host=settings.listen_host, port=port, realm=settings.realm,
             transports=["udp", "tcp"], workers=settings.workers, pids=children)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        os.waitpid(pid, 0)
    log.info("stopped", workers=settings.workers)
