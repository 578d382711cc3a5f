"""Key-management workers (`km_workers = N`): processes that take AP Requests off the shared
key-management socket and do all the CPU of an exchange — decode, ticket and authenticator,
checksum and HMAC, sub-key, SA keys, AP Reply (common/pktc/km_server.py `prepare_km`) — and hand
the result to the main process over a socket pair. The main process owns everything with
state or output: the replay cache, the SAs, ESP, the replies on the wire, log lines and
metrics (KeyManagementServer.install). A worker never sends on the network.

The workers are forked before the event loop starts and share the key-management socket
with the main process, which only sends on it. A worker exits when its socket pair closes:
the main process stopped or died (even by SIGKILL), so no worker outlives it. A worker that
dies leaves the others serving; once none is left the main process reads the socket itself
(sigctl/server.py `Controller.worker_gone`).
"""

import os
import pickle
import select
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

from common.log import get_logger
from common.pktc.km_server import Exchange, KeyManagementServer, PreparedSa
from runtime.process import settle_heap

log = get_logger("sigctl.worker")
MAX_MESSAGE = 1 << 17  # a forwarded datagram (at most 64 KiB) and its pickle framing


def start_workers(km_sock: socket.socket, count: int,
                  make_core: Callable[[tuple[int, int]], KeyManagementServer]
                  ) -> dict[socket.socket, int]:
    """Fork `count` workers reading `km_sock`; returns the main process's ends of their
    socket pairs (non-blocking), each with its worker's pid. `make_core((index, count))`
    builds a worker's KeyManagementServer: its share of the SPI space is `index` of
    `count`."""
    ends: dict[socket.socket, int] = {}
    for index in range(count):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            for other in ends:
                other.close()
            code = 0
            try:
                _serve(km_sock, theirs, make_core((index, count)), index)
            except BaseException:  # the worker's last act: report and exit non-zero
                log.exception("km_worker_failed", worker=index)
                code = 1
            os._exit(code)
        theirs.close()
        ours.setblocking(False)
        ends[ours] = pid
    return ends


def _serve(sock: socket.socket, pipe: socket.socket, core: KeyManagementServer,
           index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    settle_heap()  # runtime/process.py: start-up objects frozen, collections rarer
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(pipe, select.POLLIN)  # readable only when the main process is gone
    log.info("km_worker_ready", worker=index, pid=os.getpid())
    while True:
        for fd, _ in poller.poll():
            if fd == pipe.fileno():
                return
        while True:  # the socket is shared and non-blocking: another worker may be first
            try:
                data, peer = sock.recvfrom(65536)
            except BlockingIOError:
                break
            started = time.perf_counter()
            try:
                result = core.prepare_km(data, peer, datetime.now(UTC), time.monotonic())
            except Exception:  # our bug: log it, keep serving
                log.exception("internal_error", peer=f"{peer[0]}:{peer[1]}", worker=index)
                continue
            forwarded = data if result is None else None  # needs the SAs: main's to handle
            pipe.send(pickle.dumps((forwarded, peer, result,
                                       time.perf_counter() - started),
                                      pickle.HIGHEST_PROTOCOL))


def reap(pid: int) -> None:
    """Collect the exit status of a worker whose socket has closed (no zombie left behind).
    It is exiting: its files close before its status can be collected, so this waits the
    moment that takes."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # already collected
        pass


Message = tuple[bytes | None, tuple[str, int], PreparedSa | Exchange | None, float]


def receive(pipe: socket.socket) -> list[Message]:
    """Every message waiting on a worker's socket pair; raises EOFError once the worker is
    gone."""
    messages: list[Message] = []
    while True:
        try:
            message = pipe.recv(MAX_MESSAGE)
        except BlockingIOError:
            return messages
        if not message:
            if messages:
                return messages
            raise EOFError
        messages.append(pickle.loads(message))  # from our own child: trusted
