"""Key files per second at the enterprise key server (seed 002) over new TLS connections,
against `openssl s_server -WWW` serving a static key file with the same certificate (ECDSA
P-256) and the same TLS (1.3, X25519, the client's default suites) in the same run: a full
handshake per request is the ceiling, and s_server shows where it is.

Each request is a new TCP connection, a full TLS handshake (no resumption), `GET
/kkg.txt?ext=...`, the whole body, close. `--clients` threads drive one server at a time for
`--seconds`; the two servers take turns `--rounds` times so that both see the same machine
speed. The key server runs with its rate limit off, the default profile (K_m wrapped in
software; `--token` puts it in a SoftHSM2 token, `--profile seed` uses the seed formulas) and
generator blocks of 256. Prints, per server, key files per second (median of rounds) and
server CPU per request (from /proc), and the ratio. The clients run on the same machine and
pay for their half of each handshake, so on 2 cores the rates are bounded by the clients as
much as by the servers: the server CPU per request (and the one-core ceiling it implies) is
the figure to compare.

    .venv/bin/python bench/keyserver.py [--seconds 3] [--rounds 3] [--clients 4] [--token]
"""

import argparse
import http.client
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds  # noqa: E402
from common.enterprise.key_file import decode_key_file  # noqa: E402
from keyserver.admin_client import AdminClient  # noqa: E402
from keyserver.pki import make_lab_pki  # noqa: E402
from telekey.mit_realm import free_port  # noqa: E402
from telekey.service_process import start_service  # noqa: E402

SEED = bytes(range(32))


def drive(port: int, context: ssl.SSLContext, seconds: float, clients: int) -> int:
    """Requests completed by `clients` threads in `seconds`, each on a new connection."""
    done = [0] * clients
    failures: list[BaseException] = []
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        try:
            run(index)
        except BaseException as exc:  # reported by drive() in the main thread
            failures.append(exc)

    def run(index: int) -> None:
        ext = 2000 + index
        while time.monotonic() < stop:
            connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                                     context=context)
            connection.request("GET", f"/kkg.txt?ext={ext}")
            response = connection.getresponse()
            body = response.read()
            connection.close()
            if response.status != 200 or not body.startswith(b"KKG_FORMAT=1\n"):
                raise RuntimeError(f"{response.status} {body[:80]!r}")
            done[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(done)


def softhsm_token(base: Path) -> str:
    tokens = base / "tokens"
    tokens.mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # the key server inherits it
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                    "--pin", "1234", "--so-pin", "5678"], check=True, capture_output=True)
    pin = base / "pin"
    pin.write_text("1234\n")
    pin.chmod(0o600)
    return f'km_token_label = "bench"\npkcs11_pin_file = "{pin}"\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--profile", choices=["default", "seed"], default="default")
    parser.add_argument("--token", action="store_true", help="K_m in a SoftHSM2 token")
    args = parser.parse_args()
    openssl = shutil.which("openssl")
    if openssl is None:
        sys.exit("openssl is needed")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        make_lab_pki(base)
        extra = softhsm_token(base) if args.token else ""
        config = base / "keyserver.toml"
        config.write_text(
            f'[keyserver]\nserver_id = 1\nprofile = "{args.profile}"\n'
            f'database_url = "sqlite:///{base / "ks.db"}"\n'
            "basic_port = 0\nadvanced_port = 0\nadmin_port = 0\n"
            f'tls_cert_file = "{base / "server.pem"}"\ntls_key_file = "{base / "server.key"}"\n'
            f'advanced_client_ca_files = ["{base / "ca.pem"}"]\n'
            f'admin_client_ca_files = ["{base / "admin-ca.pem"}"]\n'
            "key_file_rate_per_source = 0\n" + extra)
        keyserver = start_service(["keyserver", "run", "--config", str(config)],
                                  base / "keyserver.log")
        static = base / "www"
        static.mkdir()
        s_server = None
        try:
            ports = keyserver.listening["ports"]
            AdminClient(f"https://127.0.0.1:{ports['admin']}", base / "admin.pem",
                        base / "admin.key", base / "ca.pem").request(
                "PUT", "/v1/seed", {"seed": SEED.hex()})
            context = ssl.create_default_context(cafile=base / "ca.pem")
            sample = http.client.HTTPSConnection("127.0.0.1", ports["basic"], context=context)
            sample.request("GET", "/kkg.txt?ext=2001")
            body = sample.getresponse().read()
            sample.close()
            decode_key_file(body)
            for index in range(args.clients):  # s_server -WWW opens the path, query and all
                (static / f"kkg.txt?ext={2000 + index}").write_bytes(body)
            static_port = free_port()
            s_server = subprocess.Popen(
                [openssl, "s_server", "-accept", f"127.0.0.1:{static_port}",
                 "-cert", str(base / "server.pem"), "-key", str(base / "server.key"), "-WWW"],
                cwd=static, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=(base / "s_server.log").open("wb"))
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", static_port)).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            with socket.create_connection(("127.0.0.1", static_port)) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                static_tls = (tls.version(), tls.cipher()[0] if tls.cipher() else "")
            with socket.create_connection(("127.0.0.1", ports["basic"])) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                keyserver_tls = (tls.version(), tls.cipher()[0] if tls.cipher() else "")
            targets = {"keyserver": (ports["basic"], keyserver.process.pid),
                       "openssl s_server": (static_port, s_server.pid)}
            drive(ports["basic"], context, 0.5, args.clients)  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in targets}
            cpu: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (port, pid) in targets.items():
                    cpu_before, started = cpu_seconds(pid), time.monotonic()
                    count = drive(port, context, args.seconds, args.clients)
                    elapsed = time.monotonic() - started
                    rates[name].append(count / elapsed)
                    cpu[name].append(1000 * (cpu_seconds(pid) - cpu_before) / count)
        finally:
            keyserver.stop()
            if s_server is not None:
                s_server.terminate()
                s_server.wait(timeout=10)
    print(f"TLS: keyserver {keyserver_tls[0]} {keyserver_tls[1]}; "
          f"s_server {static_tls[0]} {static_tls[1]}; certificate ECDSA P-256; "
          f"{args.clients} clients, new connection per request, {args.rounds} rounds of "
          f"{args.seconds:g} s; profile {args.profile}{', K_m in SoftHSM2' if args.token else ''}")
    for name in targets:
        print(f"{name:17s} {statistics.median(rates[name]):8.0f} key files/s  "
              f"(rounds {', '.join(f'{r:.0f}' for r in rates[name])}); server CPU "
              f"{statistics.median(cpu[name]):.2f} ms per request, so at most "
              f"{1000 / statistics.median(cpu[name]):.0f}/s on one core")
    ratio = statistics.median(rates["keyserver"]) / statistics.median(rates["openssl s_server"])
    print(f"ratio_key_files_per_s_keyserver_over_s_server={ratio:.2f}")


if __name__ == "__main__":
    main()
