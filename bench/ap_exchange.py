"""Controller CPU per AP exchange: telekey's `sigctl` vs a UDP responder on MIT's libkrb5
(`krb5_rd_req` + `krb5_mk_rep` with an acceptor sub-key, replay cache on), same keytab, same
tickets, same run. Each exchange is a fresh AP-REQ (new authenticator) for a ticket made with
the controller's key; ours arrives in its PacketCable AP Request (checksum, HMAC, SA set-up
included), MIT's bare. CPU comes from /proc/PID/task/*/schedstat around each batch; the
batches alternate between the two servers in `--rounds` rounds (a drift in this shared
machine's speed reaches both alike), and the figures are each server's median round.
`--tickets K` spreads the requests over K devices' tickets (default 1: one device re-keying
again and again, whose ticket the controller's ticket cache opens once); `--tickets` equal to
`--exchanges` makes every request bring a ticket not seen before, as in a restart storm.
Last line: `ap_us_per_exchange=X mit_us=Y ratio=Z`.

    .venv/bin/python bench/ap_exchange.py [--exchanges 3000] [--window 8] [--rounds 5]
                                          [--tickets 1]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    REALM,
    SERVICE,
    controller_config,
    cpu_seconds,
    device_client,
    device_ticket,
)
from common.crypto import Key  # noqa: E402
from common.kerberos.ap_exchange import build_ap_req  # noqa: E402
from common.pktc.km_server import KeyManagementServer  # noqa: E402
from telekey.service_process import start_service  # noqa: E402


def drive(port: int, requests: list[bytes], window: int) -> float:
    """Send with up to `window` outstanding; return seconds of wall time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        started = time.perf_counter()
        sent = received = 0
        while received < len(requests):
            while sent < len(requests) and sent - received < window:
                sock.sendto(requests[sent], ("127.0.0.1", port))
                sent += 1
            sock.recv(65536)
            received += 1
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=3000)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating batches per server; the figures are the medians")
    parser.add_argument("--tickets", type=int, default=1,
                        help="devices (tickets) the requests come from, in turn")
    args = parser.parse_args()
    n = args.exchanges
    service_key = Key.random(18)
    now = datetime.now(UTC)
    devices = [device_ticket(service_key, f"{0x001a2b3c4d5e + i:012x}", now)
               for i in range(max(1, args.tickets))]
    issued = [devices[i % len(devices)] for i in range(n)]
    ours_requests = [device_client(t).ap_request(now) for t in issued]
    mit_requests = [build_ap_req(ticket=t.ticket, session_key=t.session_key,
                                 cname=t.part.cname, crealm=REALM, now=now).data for t in issued]
    # The controller core alone, in this process (no sockets, no log line): fresh requests.
    core_requests = [device_client(t).ap_request(now) for t in issued]
    core = KeyManagementServer(principal="/".join(SERVICE), realm=REALM,
                               keys=lambda *_: service_key, ack_required=False)
    started = time.process_time()
    for index, request in enumerate(core_requests):
        core.receive_km(request, ("127.0.0.1", index), now, 0.0)
    core_us = (time.process_time() - started) * 1e6 / n
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        config, km_port = controller_config(base, service_key, "ack_required = false\n")
        keytab = base / "sc1.keytab"
        (base / "krb5.conf").write_text(f"[libdefaults]\n default_realm = {REALM}\n")
        (base / "rcache").mkdir()
        env = {**os.environ, "KRB5_CONFIG": str(base / "krb5.conf"),
               "KRB5RCACHEDIR": str(base / "rcache")}
        mit = subprocess.Popen([sys.executable, str(ROOT / "bench" / "mit_ap_responder.py"),
                                str(keytab)], stdout=subprocess.PIPE, text=True, env=env)
        assert mit.stdout is not None
        mit_port = int(mit.stdout.readline().split()[1])
        ours = start_service(["sigctl", "run", "--config", str(config)], base / "sigctl.log")
        try:
            drive(km_port, ours_requests[:50], 1)  # warm-up, not counted
            drive(mit_port, mit_requests[:50], 1)
            spy = None
            if os.environ.get("PYSPY"):
                spy = subprocess.Popen([os.environ["PYSPY"], "record", "--nonblocking", "-r",
                                        "1000", "-f", "raw", "-o", "/tmp/spy_ap.txt", "-p",
                                        str(ours.process.pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            # Alternating batches: a drift in this shared machine's speed reaches both alike.
            per_round = (n - 50) // args.rounds
            rounds, wall = [], [0.0, 0.0]
            for index in range(args.rounds):
                batch = slice(50 + index * per_round, 50 + (index + 1) * per_round)
                figures = []
                for side, (pid, port, requests) in enumerate(
                        ((ours.process.pid, km_port, ours_requests),
                         (mit.pid, mit_port, mit_requests))):
                    before = cpu_seconds(pid)
                    wall[side] += drive(port, requests[batch], args.window)
                    figures.append((cpu_seconds(pid) - before) * 1e6 / per_round)
                rounds.append(figures)
            if spy is not None:
                spy.send_signal(2)
                spy.wait()
            done = [e for e in ours.log_events() if e.get("result") == "OK"]
            ok = len(done)
            handle_us = sorted(e["duration_ms"] for e in done)[ok // 2] * 1000
        finally:
            ours.stop()
            mit.kill()
            mit.wait()
    ours_us = statistics.median(r[0] for r in rounds)
    mit_us = statistics.median(r[1] for r in rounds)
    counted = per_round * args.rounds
    print(f"AP exchanges: {counted} per server after 50 warm-up, window {args.window}, "
          f"{len(devices)} device ticket(s), {args.rounds} alternating rounds (median "
          f"shown); telekey accepted {ok}")
    print("  rounds, telekey/MIT us: " + "  ".join(f"{a:.0f}/{b:.0f}" for a, b in rounds))
    print(f"  telekey sigctl : {ours_us:8.1f} us CPU/exchange, {1e6 / ours_us:8.0f}/s/core "
          f"(wall {counted / wall[0]:.0f}/s; median {handle_us:.0f} us in the handler)")
    print(f"  MIT libkrb5    : {mit_us:8.1f} us CPU/exchange, {1e6 / mit_us:8.0f}/s/core "
          f"(wall {counted / wall[1]:.0f}/s; Python UDP loop calling krb5_rd_req+mk_rep)")
    print(f"  core in process: {core_us:8.1f} us CPU/exchange (common/pktc/km_server.py, hot loop)")
    print(f"ap_us_per_exchange={ours_us:.1f} mit_us={mit_us:.1f} ratio={ours_us / mit_us:.2f}")


if __name__ == "__main__":
    main()
