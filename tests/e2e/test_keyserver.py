"""The enterprise key server (seed 002) as a real process on loopback: `python -m keyserver
run` with a throwaway CA, HTTPS from this process (ssl + http.client).

- key files over server-authenticated HTTPS, K_g over mutual TLS equal to the derivation;
- the advanced service refuses a client with no certificate or one from another CA, the admin
  API one of the application servers' CA, the basic service plain HTTP; rate limiting;
- two key servers given one seed serve interchangeable key files; rotation changes CV_m;
- `kill -9` while issuing never repeats a generator.
"""

import hashlib
import hmac
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.enterprise.key_file import KeyFile, decode_key_file
from keyserver.admin_client import AdminClient
from keyserver.pki import make_ca, make_certificate, make_lab_pki
from telekey.service_process import ServiceProcess, start_service

pytestmark = pytest.mark.e2e
SEED = bytes(range(32))
SEED2 = bytes(range(32, 64))
TIMEOUT = 10


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("keyserver-pki")
    make_lab_pki(directory)
    # A client certificate from a CA the key server does not know.
    foreign, foreign_key = make_ca(directory, "foreign-ca", "someone else's CA")
    make_certificate(directory, "foreign", foreign, foreign_key, "intruder", server=False)
    for name, seed in (("seed.hex", SEED), ("seed2.hex", SEED2)):
        (directory / name).write_text(seed.hex() + "\n")
        (directory / name).chmod(0o600)
    return directory


def start_keyserver(directory: Path, pki: Path, name: str = "ks", *, server_id: int = 1,
                    profile: str = "seed", extra: str = "") -> ServiceProcess:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.toml"
    config.write_text(
        f'[keyserver]\nserver_id = {server_id}\nprofile = "{profile}"\n'
        f'database_url = "sqlite:///{directory / name}.db"\n'
        "basic_port = 0\nadvanced_port = 0\nadmin_port = 0\n"
        f'tls_cert_file = "{pki / "server.pem"}"\ntls_key_file = "{pki / "server.key"}"\n'
        f'advanced_client_ca_files = ["{pki / "ca.pem"}"]\n'
        f'admin_client_ca_files = ["{pki / "admin-ca.pem"}"]\n' + extra)
    return start_service(["keyserver", "run", "--config", str(config)],
                         directory / f"{name}.log")


def port(server: ServiceProcess, service: str) -> int:
    return int(server.listening["ports"][service])


def client_context(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki / "ca.pem")
    if cert is not None:
        context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return context


def get(server: ServiceProcess, service: str, path: str, context: ssl.SSLContext
        ) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", port(server, service),
                                             timeout=TIMEOUT, context=context)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def key_file(server: ServiceProcess, pki: Path, ext: str = "2001") -> KeyFile:
    status, headers, body = get(server, "basic", f"/kkg.txt?ext={ext}", client_context(pki))
    assert status == 200, body
    assert headers["content-type"] == "text/plain; charset=us-ascii"
    assert headers["cache-control"] == "no-store"
    return decode_key_file(body)


def kg(server: ServiceProcess, pki: Path, g: bytes, ext: str = "2001") -> dict[str, str]:
    status, _, body = get(server, "advanced", f"/v1/kg?g={g.hex()}&ext={ext}",
                          client_context(pki, "appserver"))
    assert status == 200, body
    reply: dict[str, str] = json.loads(body)
    return reply


def admin(server: ServiceProcess, pki: Path) -> AdminClient:
    return AdminClient(f"https://127.0.0.1:{port(server, 'admin')}", pki / "admin.pem",
                       pki / "admin.key", pki / "ca.pem")


def keyserver_cli(server: ServiceProcess, pki: Path, *args: str
                  ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyserver", *args, "--url",
         f"https://127.0.0.1:{port(server, 'admin')}", "--cert", str(pki / "admin.pem"),
         "--key", str(pki / "admin.key"), "--ca", str(pki / "ca.pem")],
        capture_output=True, text=True, timeout=60, check=False)


def refused(server: ServiceProcess, service: str, context: ssl.SSLContext) -> bool:
    """True when the TLS handshake or the first read fails: no HTTP answer at all."""
    try:
        get(server, service, "/openapi.json", context)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
        return True
    return False


def seed_profile_kg(seed: bytes, g: bytes) -> bytes:
    return hmac.new(g, hashlib.sha1(seed).digest(), hashlib.sha1).digest()[:16]


def test_services_end_to_end(tmp_path, pki):
    server = start_keyserver(tmp_path, pki, extra="key_file_rate_per_source = 1.0\n"
                                                   "key_file_burst_per_source = 8\n")
    try:
        assert set(server.listening["ports"]) == {"basic", "advanced", "admin"}
        status, _, body = get(server, "basic", "/kkg.txt?ext=2001", client_context(pki))
        assert status == 503 and json.loads(body)["error"] == "NO_MASTER_KEY"
        result = keyserver_cli(server, pki, "seed", "set", "--seed-file",
                               str(pki / "seed.hex"))
        assert result.returncode == 0, result.stderr
        cv = hashlib.sha1(hashlib.sha1(SEED).digest()).digest()[-3:]
        assert f"CV_m {cv.hex()}" in result.stdout

        issued = key_file(server, pki)
        assert issued.generator_key == seed_profile_kg(SEED, issued.generator)
        assert issued.check_value == cv
        reply = kg(server, pki, issued.generator)
        assert bytes.fromhex(reply["kg"]) == issued.generator_key
        assert reply["cvm"] == cv.hex()
        assert key_file(server, pki).generator != issued.generator

        # Each service publishes its OpenAPI schema.
        for service, cert, path in (("basic", None, "/kkg.txt"), ("advanced", "appserver",
                                    "/v1/kg"), ("admin", "admin", "/v1/seed")):
            status, _, body = get(server, service, "/openapi.json", client_context(pki, cert))
            assert status == 200 and path in json.loads(body)["paths"]

        # Client certificates are enforced at the TLS layer.
        assert refused(server, "advanced", client_context(pki))
        assert refused(server, "advanced", client_context(pki, "foreign"))
        assert refused(server, "advanced", client_context(pki, "admin"))
        assert refused(server, "admin", client_context(pki, "appserver"))
        assert not refused(server, "advanced", client_context(pki, "appserver"))
        plain = http.client.HTTPConnection("127.0.0.1", port(server, "basic"), timeout=TIMEOUT)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            plain.request("GET", "/kkg.txt?ext=2001")
            plain.getresponse().read()
        plain.close()

        # A generator for another extension, or never issued, gets no K_g.
        status, _, body = get(server, "advanced", f"/v1/kg?g={issued.generator.hex()}"
                              "&ext=2002", client_context(pki, "appserver"))
        assert status == 404 and json.loads(body)["error"] == "EXTENSION_MISMATCH"

        # Revocation through the command line.
        result = keyserver_cli(server, pki, "extension", "revoke", "2001")
        assert result.returncode == 0 and "revoked" in result.stdout, result.stderr
        status, _, body = get(server, "basic", "/kkg.txt?ext=2001", client_context(pki))
        assert status == 403 and json.loads(body)["error"] == "EXTENSION_REVOKED"
        status, _, _ = get(server, "advanced", f"/v1/kg?g={issued.generator.hex()}&ext=2001",
                           client_context(pki, "appserver"))
        assert status == 403
        listing = keyserver_cli(server, pki, "extension", "list")
        assert listing.stdout.startswith("2001\trevoked\tseen\tissued 2"), listing.stdout

        # Rate limiting per source: the burst (8) is spent by now.
        statuses = [get(server, "basic", "/kkg.txt?ext=2002", client_context(pki))
                    for _ in range(8)]
        limited = [s for s in statuses if s[0] == 429]
        assert limited and limited[0][1]["retry-after"] == "1"
    finally:
        server.stop()
    events = [e for e in server.log_events() if e.get("event") == "request"]
    assert {e["listener"] for e in events} == {"basic", "advanced", "admin"}
    log_text = server.log_path.read_text()
    assert issued.generator_key.hex() not in log_text and SEED.hex() not in log_text


def test_two_servers_with_one_seed_are_interchangeable(tmp_path, pki):
    a = start_keyserver(tmp_path, pki, "a", server_id=1, profile="default")
    b = start_keyserver(tmp_path, pki, "b", server_id=2, profile="default")
    try:
        for server in (a, b):
            admin(server, pki).request("PUT", "/v1/seed", {"seed": SEED.hex()})
        from_a, from_b = key_file(a, pki), key_file(b, pki)
        assert from_a.generator[:2] == b"\x00\x01" and from_b.generator[:2] == b"\x00\x02"
        assert from_a.check_value == from_b.check_value
        km = hashlib.sha256(SEED).digest()
        for issued in (from_a, from_b):
            assert issued.generator_key == hmac.new(km, issued.generator, "sha256").digest()
            for server in (a, b):
                reply = kg(server, pki, issued.generator)
                assert bytes.fromhex(reply["kg"]) == issued.generator_key

        # Rotating K_m (the same new seed on both) changes CV_m; old generators then give
        # K_g under the new K_m, which the phone's stale key file does not hold.
        for server in (a, b):
            reply = admin(server, pki).request("POST", "/v1/rotate", {"seed": SEED2.hex()})
            assert reply["kmvno"] == 2 and reply["check_value"] != from_a.check_value.hex()
        rotated = key_file(a, pki)
        assert rotated.check_value != from_a.check_value
        assert rotated.check_value == key_file(b, pki).check_value
        stale = kg(b, pki, from_a.generator)
        assert stale["cvm"] == rotated.check_value.hex()
        assert bytes.fromhex(stale["kg"]) != from_a.generator_key
    finally:
        a.stop()
        b.stop()
    status = subprocess.run([sys.executable, "-m", "keyserver", "status", "--config",
                             str(tmp_path / "a.toml")], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert f"K_m version 2, CV_m {rotated.check_value.hex()}" in status


def test_kill_9_while_issuing_never_repeats_a_generator(tmp_path, pki):
    extra = "generator_block = 5\nkey_file_rate_per_source = 0\n"
    seen: list[bytes] = []
    lock = threading.Lock()

    def fetch_until_dead(server: ServiceProcess) -> None:
        while True:
            try:
                issued = key_file(server, pki, "3001")
            except (OSError, http.client.HTTPException, AssertionError):
                return
            with lock:
                seen.append(issued.generator)

    rounds = []
    for round_ in range(3):
        server = start_keyserver(tmp_path, pki, extra=extra)
        if round_ == 0:
            admin(server, pki).request("PUT", "/v1/seed", {"seed": SEED.hex()})
        before = len(seen)
        threads = [threading.Thread(target=fetch_until_dead, args=(server,))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + TIMEOUT
        while len(seen) < before + 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(server.process.pid, signal.SIGKILL)  # mid-stream: requests in flight
        server.process.wait(timeout=TIMEOUT)
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        rounds.append(len(seen) - before)
    assert all(count >= 40 for count in rounds), rounds
    assert len(set(seen)) == len(seen)
