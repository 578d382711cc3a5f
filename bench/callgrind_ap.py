"""Instructions per AP exchange under callgrind: deterministic where CPU time on this shared VM
moves by +-25% between runs, so a change to the AP path can be judged by one run of each.

Two figures, each the difference between a run of N2 and a run of N1 exchanges divided by
N2 - N1 (start-up, codec generation and exit drop out):
  daemon  `sigctl run` under valgrind, fed fresh PacketCable AP Requests over UDP one at a
          time (the whole path: uvloop, the core, log line, metrics, sendto);
  core    `KeyManagementServer.receive_km` in a process of its own (common/pktc/km_server.py).
`--tickets K` spreads the requests over K devices' tickets (1: one device re-keying, whose
ticket the ticket cache opens once; K = N2: no ticket seen twice). Needs valgrind:
`make bench-callgrind` installs it and runs this.

    .venv/bin/python bench/callgrind_ap.py [--tickets 1] [--n1 20] [--n2 220]
"""

import argparse
import pickle
import socket
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
    device_client,
    device_ticket,
)
from common.crypto import Key  # noqa: E402
from telekey.mit_realm import require_tool  # noqa: E402

WARM_UP = 20  # exchanges before the counted ones, in both runs


def _requests(service_key: Key, n: int, tickets: int) -> list[bytes]:
    now = datetime.now(UTC)
    devices = [device_ticket(service_key, f"{0x001a2b3c4d5e + i:012x}", now)
               for i in range(max(1, tickets))]
    return [device_client(devices[i % len(devices)]).ap_request(now) for i in range(n)]


def _instructions(out: Path) -> int:
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def _valgrind(out: Path) -> list[str]:
    return [require_tool("valgrind"), "--tool=callgrind", f"--callgrind-out-file={out}"]


def daemon_run(n: int, tickets: int, base: Path) -> int:
    """Instructions of a sigctl daemon that served WARM_UP + n exchanges."""
    key = Key.random(18)
    requests = _requests(key, WARM_UP + n, tickets)
    config, port = controller_config(base, key, "ack_required = false\n")
    out, log = base / f"daemon.{n}.out", base / f"daemon.{n}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            _valgrind(out) + [sys.executable, "-m", "sigctl", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    while '"listening"' not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"sigctl under valgrind did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(60)
        for request in requests:
            sock.sendto(request, ("127.0.0.1", port))
            sock.recv(65536)
    process.terminate()
    process.wait(timeout=300)
    return _instructions(out)


def core_run(n: int, tickets: int, base: Path) -> int:
    """Instructions of a process that ran WARM_UP + n exchanges through the core."""
    requests = base / f"core.{n}.pickle"
    key = Key.random(18)
    requests.write_bytes(pickle.dumps((key.data, _requests(key, WARM_UP + n, tickets))))
    out = base / f"core.{n}.out"
    subprocess.run(_valgrind(out) + [sys.executable, __file__, "--core-child", str(requests)],
                   check=True, capture_output=True, timeout=1800)
    return _instructions(out)


def core_child(path: Path) -> None:
    """Under valgrind: the core alone over the pickled requests (made outside, so that the
    client side is not counted)."""
    from common.messages.base import compile_codecs
    from common.pktc.km_server import KeyManagementServer
    from runtime.process import settle_heap

    compile_codecs()
    data, requests = pickle.loads(path.read_bytes())
    key = Key(18, data)
    core = KeyManagementServer(principal="/".join(SERVICE), realm=REALM, keys=lambda *_: key,
                               ack_required=False)
    now = datetime.now(UTC)
    for index, request in enumerate(requests[:WARM_UP]):
        core.receive_km(request, ("127.0.0.1", index), now, 0.0)
    settle_heap()
    for index, request in enumerate(requests[WARM_UP:]):
        core.receive_km(request, ("127.0.0.1", WARM_UP + index), now, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tickets", type=int, default=1)
    parser.add_argument("--n1", type=int, default=20)
    parser.add_argument("--n2", type=int, default=220)
    parser.add_argument("--core-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.core_child is not None:
        core_child(args.core_child)
        return
    span = args.n2 - args.n1
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        figures = {}
        for name, run in (("daemon", daemon_run), ("core", core_run)):
            low = run(args.n1, args.tickets, base)
            high = run(args.n2, args.tickets, base)
            figures[name] = (high - low) / span / 1e6
    print(f"instructions per AP exchange under callgrind ({args.n2} - {args.n1} exchanges, "
          f"{args.tickets} device ticket(s))")
    print(f"  sigctl daemon : {figures['daemon']:.4f} M")
    print(f"  core alone    : {figures['core']:.4f} M")
    print(f"daemon_minstr_per_exchange={figures['daemon']:.4f} "
          f"core_minstr_per_exchange={figures['core']:.4f}")


if __name__ == "__main__":
    main()
