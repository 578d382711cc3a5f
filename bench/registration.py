"""Registrations per second at the controller (seed 002, FIG. 4: GRQ, GCF, RRQ, RCF) with K_g
cached, and the share of the controller's time spent in PER encoding and decoding.

A key server and a controller (`sigctl run` with its RAS port open) run as processes on
loopback. `--phones` simulated phones in this process each have their own extension (its PIN
administered at the controller) and their own key file from the key server. They register
once, which fills the controller's K_g cache, and then `--rounds` times more, `--window`
phones at a time, each on its own UDP socket, retransmitting after 1 s. That part is timed,
from the first GRQ to the last RCF. The GRQs are built before the clock starts (building
them is the phones' CPU, not the controller's). The RRQs are built as the GCFs arrive, and
every RCF is verified afterwards (its ICV checked, the phone's SA derived). The controller's
CPU per registration comes from /proc.

PER: the time spent inside asn1tools' `encode` and `decode` (the two methods of the compiled
RasMessage codec, each wrapped with a clock) while the controller's core
(`common/enterprise/registration.py: Gatekeeper`) handles the same registrations in this
process, with K_g given as the cache would give it and the heap settled as the daemon settles
its own (`runtime/process.py: settle_heap`), best of three passes. That covers 16 calls to
asn1tools per registration. Decoding the GRQ and the RRQ takes three each: `decode_ras`
decodes and encodes again (the bytes must be canonical), and the ICV input is encoded once
more. Encoding the GCF and the RCF takes five each: `encode_message` encodes with a zero ICV
and again with the ICV, then decodes its own output (the token must be there). It is
printed as a share of the core's own time in this process, and as a share of the daemon's CPU
per registration: an estimate, since the two are measured apart and this shared VM's speed
drifts between them.
Last line: `registrations_per_s=R controller_cpu_us=C per_share_of_controller_cpu=S`.

    .venv/bin/python bench/registration.py [--phones 100] [--rounds 3] [--window 32]
"""

import argparse
import http.client
import selectors
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import controller_config, cpu_seconds  # noqa: E402
from common.crypto import Key  # noqa: E402
from common.enterprise.key_file import decode_key_file  # noqa: E402
from common.enterprise.keys import Profile  # noqa: E402
from common.enterprise.per import ras_codec  # noqa: E402
from common.enterprise.registration import (  # noqa: E402
    Gatekeeper,
    GatekeeperPolicy,
    KeyAnswer,
    PhoneKey,
    PhoneRegistration,
)
from keyserver.admin_client import AdminClient  # noqa: E402
from keyserver.pki import make_lab_pki  # noqa: E402
from runtime.process import settle_heap  # noqa: E402
from runtime.settings_file import load_settings  # noqa: E402
from sigctl.extensions import open_extension_store  # noqa: E402
from sigctl.settings import SigctlSettings  # noqa: E402
from telekey.service_process import ServiceProcess, start_service  # noqa: E402

SEED = bytes(range(32))
FIRST_EXT = 3000


def pin_of(ext: str) -> str:
    return f"{int(ext) * 7919 % 1_000_000:06d}"


# --- the processes ------------------------------------------------------------------------

def start_keyserver(base: Path) -> tuple[ServiceProcess, dict[str, int]]:
    make_lab_pki(base)
    config = base / "keyserver.toml"
    config.write_text(
        '[keyserver]\nserver_id = 1\nprofile = "default"\n'
        f'database_url = "sqlite:///{base / "ks.db"}"\n'
        "basic_port = 0\nadvanced_port = 0\nadmin_port = 0\n"
        f'tls_cert_file = "{base / "server.pem"}"\ntls_key_file = "{base / "server.key"}"\n'
        f'advanced_client_ca_files = ["{base / "ca.pem"}"]\n'
        f'admin_client_ca_files = ["{base / "admin-ca.pem"}"]\n'
        "key_file_rate_per_source = 0\n")
    keyserver = start_service(["keyserver", "run", "--config", str(config)],
                              base / "keyserver.log")
    ports: dict[str, int] = keyserver.listening["ports"]
    AdminClient(f"https://127.0.0.1:{ports['admin']}", base / "admin.pem", base / "admin.key",
                base / "ca.pem").request("PUT", "/v1/seed", {"seed": SEED.hex()})
    return keyserver, ports


def key_files(base: Path, port: int, extensions: list[str]) -> list[PhoneKey]:
    """One key file per extension from the basic service, over one kept-alive connection."""
    context = ssl.create_default_context(cafile=base / "ca.pem")
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    keys = []
    for ext in extensions:
        connection.request("GET", f"/kkg.txt?ext={ext}")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"key file for {ext}: {response.status} {body[:80]!r}")
        issued = decode_key_file(body)
        keys.append(PhoneKey(issued.profile, issued.generator, issued.generator_key,
                             issued.check_value))
    connection.close()
    return keys


def controller_settings(base: Path, advanced_port: int) -> str:
    return (f'keyserver_url = "https://127.0.0.1:{advanced_port}"\n'
            f'keyserver_ca_file = "{base / "ca.pem"}"\n'
            f'keyserver_client_cert_file = "{base / "appserver.pem"}"\n'
            f'keyserver_client_key_file = "{base / "appserver.key"}"\n'
            f'ras_port = 0\nextensions_database_url = "sqlite:///{base / "extensions.db"}"\n')


# --- the phones over UDP ------------------------------------------------------------------

def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def register_all(port: int, phones: list[tuple[str, PhoneKey]], window: int
                 ) -> tuple[list[tuple[PhoneRegistration, bytes]], float, int]:
    """Register every phone once, `window` at a time: (each registration with its RCF,
    seconds from the first GRQ to the last RCF, retransmissions)."""
    socks = [_socket() for _ in range(window)]
    selector = selectors.DefaultSelector()
    for slot, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, slot)
    # The GRQs, built first: each names the socket of the slot it will be sent from.
    now = datetime.now(UTC)
    attempts = []
    for index, (ext, key) in enumerate(phones):
        registration = PhoneRegistration(ext=ext, pin=pin_of(ext), key=key)
        attempts.append((registration, registration.grq(now, socks[index % window]
                                                        .getsockname())))
    done: list[tuple[PhoneRegistration, bytes]] = []
    waiting = {slot: list(range(slot, len(attempts), window))[::-1] for slot in range(window)}
    busy: dict[int, tuple[int, bytes, float]] = {}  # slot -> (attempt, last sent, when)
    resent = 0
    started = time.perf_counter()

    def send_next(slot: int) -> None:
        if waiting[slot]:
            index = waiting[slot].pop()
            socks[slot].sendto(attempts[index][1], ("127.0.0.1", port))
            busy[slot] = (index, attempts[index][1], time.perf_counter())

    for slot in range(window):
        send_next(slot)
    while busy:
        for selected, _ in selector.select(timeout=0.05):
            slot = selected.data
            data = socks[slot].recv(4096)
            if slot not in busy:
                continue
            index, _, _ = busy.pop(slot)
            registration = attempts[index][0]
            # RasMessage's CHOICE index is the first octet's bits 2-6 (X.691 §23): 1 is
            # gatekeeperConfirm, answered with the RRQ; 4 registrationConfirm.
            if data[0] >> 2 & 0x1F == 1:
                event = registration.receive(data, datetime.now(UTC), time.monotonic())
                assert event.kind == "rrq" and event.reply is not None, event
                socks[slot].sendto(event.reply, ("127.0.0.1", port))
                busy[slot] = (index, event.reply, time.perf_counter())
            else:  # registrationConfirm: verified afterwards
                done.append((registration, data))
                send_next(slot)
        now_pc = time.perf_counter()
        for slot, (index, last, when) in list(busy.items()):
            if now_pc - when > 1.0:
                socks[slot].sendto(last, ("127.0.0.1", port))
                busy[slot] = (index, last, now_pc)
                resent += 1
    elapsed = time.perf_counter() - started
    for sock in socks:
        sock.close()
    return done, elapsed, resent


def verify(done: list[tuple[PhoneRegistration, bytes]]) -> int:
    registered = 0
    for registration, rcf in done:
        event = registration.receive(rcf, datetime.now(UTC), time.monotonic())
        registered += event.kind == "registered" and event.sa is not None
    return registered


# --- the core in this process, PER timed --------------------------------------------------

class PerClock:
    """Seconds spent in the compiled codec's encode and decode since the last `take`."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        codec = ras_codec()
        codec.encode = self._timed(codec.encode)
        codec.decode = self._timed(codec.decode)

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1
        return timed

    def take(self) -> tuple[float, int]:
        taken = (self.seconds, self.calls)
        self.seconds, self.calls = 0.0, 0
        return taken


def core_in_process(phones: list[tuple[str, PhoneKey]], clock: PerClock
                    ) -> tuple[float, float, int]:
    """The Gatekeeper's side of one registration per phone, K_g as from the cache: (core
    seconds, PER seconds within them, PER calls within them), all phones together."""
    pins = {ext: pin_of(ext) for ext, _ in phones}

    class Pins:
        def pin(self, ext: str) -> str | None:
            return pins.get(ext)

    gatekeeper = Gatekeeper(GatekeeperPolicy(
        gatekeeper_id="sigctl/sc1.bench.test", profile=Profile.DEFAULT,
        ras_address=("127.0.0.1", 1719), esp_address=("127.0.0.1", 4500)), Pins())
    peer = ("127.0.0.1", 40000)
    core = per = 0.0
    calls = 0
    spi = 0x1000
    for ext, key in phones:
        phone = PhoneRegistration(ext=ext, pin=pins[ext], key=key)
        grq = phone.grq(datetime.now(UTC), peer)
        clock.take()
        started = time.perf_counter()
        outcome = gatekeeper.begin(grq, peer, datetime.now(UTC), time.monotonic())
        assert outcome.need_key is not None, outcome
        outcome = gatekeeper.finish_grq(outcome.need_key, KeyAnswer(
            key.generator_key, key.check_value), datetime.now(UTC), time.monotonic())
        core += time.perf_counter() - started
        seconds, count = clock.take()
        per, calls = per + seconds, calls + count
        assert outcome.result == "OK" and outcome.reply is not None, outcome
        rrq = phone.receive(outcome.reply, datetime.now(UTC), time.monotonic()).reply
        assert rrq is not None
        clock.take()
        started = time.perf_counter()
        outcome = gatekeeper.begin(rrq, peer, datetime.now(UTC), time.monotonic())
        assert outcome.need_spi is not None, outcome
        spi += 1
        outcome = gatekeeper.finish_rrq(outcome.need_spi, spi, datetime.now(UTC),
                                        time.monotonic())
        core += time.perf_counter() - started
        seconds, count = clock.take()
        per, calls = per + seconds, calls + count
        assert outcome.result == "OK" and outcome.reply is not None, outcome
        assert phone.receive(outcome.reply, datetime.now(UTC), time.monotonic()).kind \
            == "registered"
    return core, per, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed registrations of every phone after the first")
    parser.add_argument("--window", type=int, default=32, help="phones registering at once")
    args = parser.parse_args()
    extensions = [str(FIRST_EXT + i) for i in range(args.phones)]
    ras_codec()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        keyserver, ports = start_keyserver(base)
        controller = None
        try:
            keys = key_files(base, ports["basic"], extensions)
            phones = list(zip(extensions, keys, strict=True))
            config, _ = controller_config(base, Key.random(18),
                                          controller_settings(base, ports["advanced"]))
            store = open_extension_store(load_settings(SigctlSettings, config),
                                         create_master_key=True)
            for ext in extensions:
                store.put(ext, pin_of(ext))
            store.close()
            controller = start_service(["sigctl", "run", "--config", str(config)],
                                       base / "sigctl.log")
            ras_port = int(controller.listening["ras_port"])
            warm, warm_seconds, _ = register_all(ras_port, phones, args.window)
            if verify(warm) != len(phones):
                raise RuntimeError(f"warm-up: {len(warm)} of {len(phones)} registered")
            pid = controller.process.pid
            cpu_before = cpu_seconds(pid)
            done, seconds, resent = register_all(ras_port, phones * args.rounds, args.window)
            controller_cpu = cpu_seconds(pid) - cpu_before
        finally:
            if controller is not None:
                controller.stop()
            keyserver.stop()
    n = len(phones) * args.rounds
    registered = verify(done)
    clock = PerClock()
    core_in_process(phones[:20], clock)  # warm-up
    settle_heap()
    core, per, calls = min(core_in_process(phones, clock) for _ in range(3))
    core_us, per_us = 1e6 * core / len(phones), 1e6 * per / len(phones)
    cpu_us = 1e6 * controller_cpu / n
    print(f"{len(phones)} phones (default profile, K_g cached after a first registration of "
          f"each, {warm_seconds:.2f} s), window {args.window}: {registered} of {n} "
          f"registrations (GRQ to RCF) in {seconds:.2f} s, {n / seconds:.0f}/s; "
          f"{resent} retransmissions")
    print(f"controller CPU {controller_cpu:.2f} s: {cpu_us:.0f} us per registration, "
          f"{100 * controller_cpu / seconds:.0f}% of one core (the phones share the 2 cores)")
    print(f"core in process: {core_us:.0f} us per registration, of which PER "
          f"{per_us:.0f} us ({calls / len(phones):.0f} asn1tools calls, "
          f"{100 * per / core:.0f}% of the core); PER is {100 * per_us / cpu_us:.0f}% of the "
          f"daemon's CPU per registration")
    if registered != n:
        sys.exit(f"{n - registered} registrations failed")
    print(f"registrations_per_s={n / seconds:.0f} controller_cpu_us={cpu_us:.0f} "
          f"per_share_of_controller_cpu={per_us / cpu_us:.2f}")


if __name__ == "__main__":
    main()
