"""One source floods the KDC's port with garbage datagrams; another source's AS-REQ latency
over UDP, p99 loaded against p99 unloaded, for telekey's KDC and MIT's krb5kdc in the same run.
Target: telekey's loaded p99 within 2x of its unloaded p99. Dropped datagrams are counted in
telekey_kdc_dropped_total, never logged one by one (the log's size is printed).

    .venv/bin/python bench/kdc_flood.py [--rate 5000] [--seconds 5] [--requests 400]

The flood comes from a separate process on 127.0.0.1, the requests from 127.0.0.2; each
request is a new AS-REQ without pre-authentication (answered PREAUTH_REQUIRED), sent one
after another. The KDC's AS rate limit is off for the measuring source's sake.
"""

import argparse
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.codes import NameType  # noqa: E402
from common.messages.kdc_req import KdcReq, KdcReqBody, encode_as_req  # noqa: E402
from common.messages.types import PrincipalName  # noqa: E402

REALM = "FLOOD.TEST"
FLOODER = """
import os, socket, sys, time
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
batch, sent, start = 50, 0, time.monotonic()
print("flooding", flush=True)
while time.monotonic() - start < seconds:
    for _ in range(batch):
        sock.sendto(b"\\x00" + os.urandom(40), ("127.0.0.1", port))
    sent += batch
    delay = start + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(sent, flush=True)
"""


def bare_as_req(realm: str = REALM) -> bytes:
    body = KdcReqBody(0x50000000, PrincipalName(NameType.NT_PRINCIPAL, ("phone1",)), realm,
                      PrincipalName(NameType.NT_SRV_INST, ("krbtgt", realm)), None,
                      datetime.now(UTC).replace(microsecond=0) + timedelta(hours=8), None,
                      secrets.randbits(31), (18, 17), None, None, None)
    return encode_as_req(KdcReq(5, 10, None, body))


def latencies(port: int, count: int, realm: str, interval: float = 0.0,
              source: str = "127.0.0.2") -> list[float]:
    """Seconds per UDP AS-REQ round trip from `source`, one every `interval` seconds."""
    out = []
    begin = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(2.0)
        for number in range(count):
            delay = begin + number * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            request = bare_as_req(realm)
            started = time.perf_counter()
            sock.sendto(request, ("127.0.0.1", port))
            sock.recvfrom(65536)
            out.append(time.perf_counter() - started)
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def flood_p99(port: int, *, realm: str, rate: float, seconds: float, requests: int
              ) -> tuple[float, float, int]:
    """(unloaded p99, loaded p99, datagrams flooded) against the KDC on `port`."""
    interval = (seconds - 0.5) / requests  # the requests spread over the flood
    latencies(port, 20, realm)  # warm-up
    quiet = p99(latencies(port, requests, realm, interval))
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, str(port), str(rate),
                                str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert flooder.stdout is not None
        flooder.stdout.readline()
        time.sleep(0.2)
        loaded = p99(latencies(port, requests, realm, interval))
        sent = int(flooder.stdout.readline() or 0)
    finally:
        flooder.wait(timeout=seconds + 30)
    return quiet, loaded, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
    from telekey.mit_realm import REALM as MIT_REALM
    from telekey.mit_realm import start_mit_realm

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        db = f"sqlite:///{base}/kdc.db"
        telekey_cmd("realm", "init", "--realm", REALM, "--db", db, "--pki-dir", str(base / "pki"))
        telekey_cmd("principal", "add", "phone1", "--db", db)
        config = write_kdc_config(base, realm=REALM, db_url=db, cert=base / "pki" / "kdc.pem",
                                  key=base / "pki" / "kdc.key", anchors=[base / "pki" / "ca.pem"],
                                  as_rate_per_source=0, metrics_port=0)
        kdc = start_kdc(config, base / "kdc.log")
        try:
            quiet, loaded, sent = flood_p99(kdc.port, realm=REALM, rate=args.rate,
                                            seconds=args.seconds, requests=args.requests)
            log_bytes = (base / "kdc.log").stat().st_size
        finally:
            kdc.stop()
        (base / "mit").mkdir()
        mit = start_mit_realm(base / "mit")
        try:
            mit_quiet, mit_loaded, mit_sent = flood_p99(
                mit.port, realm=MIT_REALM, rate=args.rate, seconds=args.seconds,
                requests=args.requests)
        finally:
            mit.stop()
    print(f"flood: {args.rate:.0f} garbage datagrams/s from 127.0.0.1 for {args.seconds} s; "
          f"{args.requests} AS-REQs from 127.0.0.2 each time")
    print(f"  telekey KDC: p99 {quiet * 1e3:.2f} ms unloaded, {loaded * 1e3:.2f} ms loaded "
          f"({loaded / quiet:.2f}x; target <= 2x), {sent} datagrams sent, "
          f"log {log_bytes} bytes")
    print(f"  MIT krb5kdc: p99 {mit_quiet * 1e3:.2f} ms unloaded, {mit_loaded * 1e3:.2f} ms "
          f"loaded ({mit_loaded / mit_quiet:.2f}x), {mit_sent} datagrams sent")


if __name__ == "__main__":
    main()
