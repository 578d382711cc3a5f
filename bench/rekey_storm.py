"""A controller restart with N devices: how long until every device is back on an SA.

N simulated devices each hold their own valid ticket for the controller (made with the
controller's key, as the KDC would) — the seed 000 claim is that a restart costs each of them
one AP exchange, not a PKINIT. The controller is started, killed with SIGKILL and started again;
then every device sends its AP Request (the one a Wake Up would trigger: re-establish flag set),
up to --window outstanding, retransmitting after 1 s as RFC 4682 says. Timed from the restart
until the last AP Reply; afterwards every reply is checked with its device's session key (AP-REP
decrypts, HMAC verifies with the sub-key, SA keys derive). The requests are built before the
restart (building them is the devices' CPU, not the controller's).
Last line: `recovered=N lost=L seconds=X`.

    .venv/bin/python bench/rekey_storm.py [--devices 10000] [--window 256]
"""

import argparse
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    controller_config,
    cpu_seconds,
    cpu_seconds_tree,
    device_client,
    device_ticket,
)
from common.crypto import Key  # noqa: E402
from telekey.service_process import start_service  # noqa: E402


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def storm(port: int, requests: list[bytes], window: int) -> tuple[dict[int, bytes], float]:
    """Send every request, `window` outstanding, retransmitting after 1 s; replies by index
    (each device has its own source port range: index = order of the first send)."""
    socks = [_socket() for _ in range(window)]

    selector = selectors.DefaultSelector()
    for slot, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, slot)
    replies: dict[int, bytes] = {}
    pending = list(range(len(requests)))[::-1]
    busy: dict[int, tuple[int, float, int]] = {}  # slot -> (device, sent at, tries)
    started = time.perf_counter()
    free = list(range(window))
    while pending or busy:
        while free and pending:
            slot, device = free.pop(), pending.pop()
            socks[slot].sendto(requests[device], ("127.0.0.1", port))
            busy[slot] = (device, time.perf_counter(), 1)
        for key, _ in selector.select(timeout=0.05):
            slot = key.data
            try:
                data = socks[slot].recv(65536)
            except BlockingIOError:
                continue
            if slot in busy:
                device, _, tries = busy.pop(slot)
                replies[device] = data
                if tries > 1:
                    # A late answer to the retransmission must not reach the next device
                    # that uses this slot: give the slot a fresh socket.
                    selector.unregister(socks[slot])
                    socks[slot].close()
                    socks[slot] = _socket()
                    selector.register(socks[slot], selectors.EVENT_READ, slot)
                free.append(slot)
        now = time.perf_counter()
        for slot, (device, sent, tries) in list(busy.items()):
            if now - sent > 1.0:
                if tries >= 6:  # given up, as a device would after 5 retransmissions
                    del busy[slot]
                    selector.unregister(socks[slot])
                    socks[slot].close()
                    socks[slot] = _socket()
                    selector.register(socks[slot], selectors.EVENT_READ, slot)
                    free.append(slot)
                else:
                    socks[slot].sendto(requests[device], ("127.0.0.1", port))
                    busy[slot] = (device, now, tries + 1)
    elapsed = time.perf_counter() - started
    for sock in socks:
        sock.close()
    return replies, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--km-workers", type=int, default=0,
                        help="the controller's key-management worker processes (0: none)")
    args = parser.parse_args()
    n = args.devices
    service_key = Key.random(18)
    now = datetime.now(UTC)
    print(f"making {n} device tickets and AP Requests ...", flush=True)
    clients = [device_client(device_ticket(service_key, f"{i:012x}", now)) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config, km_port = controller_config(base, service_key,
                                            f"km_workers = {args.km_workers}\n")
        first = start_service(["sigctl", "run", "--config", str(config)], base / "first.log")
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
        requests = [c.ap_request(datetime.now(UTC), reestablish=True) for c in clients]
        controller = start_service(["sigctl", "run", "--config", str(config)],
                                   base / "second.log")
        try:
            pid = controller.process.pid
            cpu_before, main_before = cpu_seconds_tree(pid), cpu_seconds(pid)
            driver_before = time.process_time()
            replies, seconds = storm(km_port, requests, args.window)
            driver_cpu = time.process_time() - driver_before
            controller_cpu = cpu_seconds_tree(pid) - cpu_before
            main_cpu = cpu_seconds(pid) - main_before
        finally:
            controller.stop()
    recovered = 0
    why: dict[str, int] = {"no reply": n - len(replies)}
    for index, data in replies.items():
        try:
            event = clients[index].receive(data, 0.0)
        except Exception as exc:  # a reply that does not verify: that device is lost
            reason = getattr(exc, "status", type(exc).__name__)
        else:
            if event.kind == "sa":
                recovered += 1
                continue
            reason = f"error {event.error.error_code if event.error else event.kind}"
        why[reason] = why.get(reason, 0) + 1
    if n - recovered:
        print("lost:", ", ".join(f"{k}: {v}" for k, v in why.items() if v))
    print(f"{n} devices, window {args.window}, {args.km_workers} key-management workers: "
          f"{recovered} SAs re-established in "
          f"{seconds:.2f} s ({recovered / seconds:.0f}/s) after kill -9 and restart")
    print(f"controller CPU {controller_cpu:.2f} s ({controller_cpu * 1e6 / n:.0f} us per device, "
          f"{100 * controller_cpu / seconds:.0f}% of one core, workers included)")
    if args.km_workers:
        print(f"  main process {main_cpu:.2f} s ({100 * main_cpu / seconds:.0f}% of a core), "
              f"workers {controller_cpu - main_cpu:.2f} s")
    print(f"simulated devices (this process) CPU {driver_cpu:.2f} s, on the same cores")
    print(f"recovered={recovered} lost={n - recovered} seconds={seconds:.2f}")


if __name__ == "__main__":
    main()
