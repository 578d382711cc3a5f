"""The KDC when what it runs on fails, with real processes: `kill -9` while 50 devices log in,
its PostgreSQL server stopped for 10 s, a full disk under its SQLite database. Each asserts
clear errors (a KRB-ERROR or a one-line message, never a traceback), no lost committed state,
and recovery without help. Devices are simulated in this process (factory certificates with
P-256 keys, PKINIT DH as `telekey cta login` does it)."""

import concurrent.futures
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy.exc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from bench.kdc_flood import bare_as_req
from common.crypto.cms import file_signer
from common.errors import KerberosError
from common.kerberos.pkinit_client import (
    PkinitOptions,
    build_pkinit_as_req,
    krbtgt,
    process_pkinit_as_rep,
)
from common.kerberos.tcp_framing import RecordBuffer, encode_record
from common.messages.krb_error import decode_krb_error
from common.messages.types import PrincipalName
from common.pki.certs import build_ca, issue_device_certificate
from kdc.db import Database
from runtime.kdc_client import kdc_exchange
from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from tests.postgres import running_postgres

pytestmark = pytest.mark.e2e
REALM = "FAULT.TEST"
DEVICES = 50


@pytest.fixture(scope="module")
def maker():
    key = rsa.generate_private_key(65537, 2048)
    return build_ca(key, "Manufacturer Root", "Manufacturer", datetime.now(UTC)), key


@pytest.fixture(scope="module")
def devices(maker):
    ca, ca_key = maker
    now = datetime.now(UTC)
    out = []
    for number in range(DEVICES):
        mac = f"02:00:00:00:{number // 256:02x}:{number % 256:02x}"
        key = ec.generate_private_key(ec.SECP256R1())
        out.append((mac, file_signer(key, issue_device_certificate(ca, ca_key, key.public_key(),
                                                                   mac, now))))
    return out


def realm(base, maker, db_url=None, **settings):
    """A realm in `base` whose KDC trusts the manufacturer: (config path, db url)."""
    db = db_url or f"sqlite:///{base}/kdc.db"
    extra = ["--stash", str(base / "kdc.stash")] if db_url else []
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db, "--pki-dir", str(base / "pki"),
                *extra)
    (base / "maker.pem").write_bytes(maker[0].public_bytes(Encoding.PEM))
    if db_url:
        settings["master_key_stash_file"] = str(base / "kdc.stash")
    config = write_kdc_config(base, realm=REALM, db_url=db, cert=base / "pki" / "kdc.pem",
                              key=base / "pki" / "kdc.key", anchors=[base / "pki" / "ca.pem"],
                              manufacturer_anchor_files=[str(base / "maker.pem")],
                              as_rate_per_source=0, **settings)
    return config, db


def login(port, device, anchors) -> str:
    """One PKINIT login of a factory device; its principal name on success."""
    mac, signer = device
    now = datetime.now(UTC)
    cname = PrincipalName(1, ("cta", mac.replace(":", "")))
    request = build_pkinit_as_req(cname=cname, realm=REALM, sname=krbtgt(REALM), signer=signer,
                                  now=now, till=now + timedelta(hours=10),
                                  options=PkinitOptions())
    reply = kdc_exchange(f"127.0.0.1:{port}", request.data, timeout=10)
    result = process_pkinit_as_rep(reply, request, realm=REALM, anchors=anchors, now=now)
    return "/".join(result.enc_part.sname.name_string)


def tcp_error_code(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_record(bare_as_req(REALM)))
        buffer = RecordBuffer(1 << 20)
        while (record := buffer.next_record()) is None:
            chunk = sock.recv(65536)
            assert chunk, "closed without an answer"
            buffer.feed(chunk)
    return decode_krb_error(record).error_code


def no_tracebacks(kdc) -> None:
    events = kdc.log_events()
    assert not [e for e in events if e.get("event") == "internal_error"]
    assert "Traceback" not in kdc.log_path.read_text()


def test_kill_9_while_50_devices_log_in(tmp_path, maker, devices):
    config, db = realm(tmp_path, maker)
    anchors = [x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.pem").read_bytes())]
    kdc = start_kdc(config, tmp_path / "kdc.log")
    database = Database(db)
    committed: list[str] = []
    outcomes: list[str] = []

    def attempt(device):
        try:
            return login(kdc.port, device, anchors)
        except (OSError, KerberosError) as exc:  # the KDC died under it: a clean failure
            return f"failed: {type(exc).__name__}"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(attempt, device) for device in devices]
        number = 0
        while sum(f.done() for f in futures) < DEVICES // 2:
            number += 1
            database.add_customer(f"555{number:04d}", f"02:00:00:01:00:{number % 256:02x}")
            committed.append(f"555{number:04d}")
            time.sleep(0.01)
        kdc.process.send_signal(signal.SIGKILL)
        kdc.process.wait(timeout=10)
        for extra in range(number + 1, number + 6):  # the database does not need the KDC
            database.add_customer(f"555{extra:04d}", "02:00:00:02:00:00")
            committed.append(f"555{extra:04d}")
        outcomes = [f.result(timeout=60) for f in futures]
    assert len(outcomes) == DEVICES  # every login ended, by a ticket or a clean failure
    restarted = start_kdc(config, tmp_path / "kdc-2.log")
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            names = list(pool.map(lambda d: login(restarted.port, d, anchors), devices))
        assert names == ["krbtgt/" + REALM] * DEVICES
        no_tracebacks(restarted)
    finally:
        restarted.stop()
    assert {c.phone_number for c in database.list_customers()} == set(committed)
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_postgres_outage_answers_unavailable_and_recovers(tmp_path, maker):
    with running_postgres() as server:
        config, db = realm(tmp_path, maker, db_url=server.url, principal_cache_ttl_s=0)
        telekey_cmd("principal", "add", "phone1", "--db", db)
        kdc = start_kdc(config, tmp_path / "kdc.log")
        try:
            assert tcp_error_code(kdc.port) == 25  # PREAUTH_REQUIRED: phone1 was read
            server.stop()
            deadline, answers, udp_answers = time.monotonic() + 10, set(), set()
            while time.monotonic() < deadline:
                answers.add(tcp_error_code(kdc.port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(2)
                    sock.sendto(bare_as_req(REALM), ("127.0.0.1", kdc.port))
                    try:
                        udp_answers.add(decode_krb_error(sock.recvfrom(65536)[0]).error_code)
                    except TimeoutError:
                        udp_answers.add(None)
                time.sleep(0.5)
            assert answers == {29}, answers  # KDC_ERR_SVC_UNAVAILABLE, every time
            assert udp_answers <= {29, None}
            assert kdc.process.poll() is None
            server.start()
            deadline = time.monotonic() + 15
            while tcp_error_code(kdc.port) != 25:  # back, without a restart
                assert time.monotonic() < deadline, "the KDC did not recover"
                time.sleep(0.3)
            events = kdc.log_events()
            down = [e for e in events if e.get("event") == "service_unavailable"]
            assert down and down[0]["status"] == "DATABASE_UNAVAILABLE" and down[0]["cause"]
            assert len(down) <= 3  # when it starts (and if the cause changes), not per request
            assert [e for e in events if e.get("event") == "service_restored"]
            no_tracebacks(kdc)
        finally:
            kdc.stop()


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_refuses_the_write_and_damages_nothing(tmp_path, maker, small_disk):
    config, db = realm(small_disk, maker)
    telekey_cmd("principal", "add", "phone1", "--db", db)
    kdc = start_kdc(config, tmp_path / "kdc.log")
    try:
        database = Database(db)
        committed = []
        filler = small_disk / "filler"
        reserve = os.open(small_disk / "reserve", os.O_WRONLY | os.O_CREAT, 0o600)
        with filler.open("wb") as out:  # leave a little room, then fill it with customers
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            out.write(b"\0" * max(0, free - 96 * 1024))
        with pytest.raises(sqlalchemy.exc.OperationalError) as full:
            for number in range(100_000):
                database.add_customer(f"7{number:06d}", "02:00:00:03:00:00")
                committed.append(f"7{number:06d}")
        assert "full" in str(full.value.orig)
        assert len(committed) > 10
        try:  # the space the rolled-back transaction gave back is taken too: nothing is left
            while True:
                os.write(reserve, b"\0" * 512)
        except OSError:
            os.close(reserve)
        result = subprocess.run([sys.executable, "-m", "telekey", "customer", "add", "--number",
                                 "8000000", "--mac", "02:00:00:04:00:00", "--db", db],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith("database: ") and "full" in result.stderr
        assert "Traceback" not in result.stderr
        assert tcp_error_code(kdc.port) == 25  # reading goes on
        filler.unlink()
        (small_disk / "reserve").unlink()
        assert {c.phone_number for c in database.list_customers()} == set(committed)
        with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        database.add_customer("8000000", "02:00:00:04:00:00")  # room again: writes work
        no_tracebacks(kdc)
    finally:
        kdc.stop()


def test_token_and_pin_file_lost_and_back(tmp_path, maker, devices, monkeypatch):
    """The KDC's signing token goes missing (its SoftHSM2 directory moved away), then its PIN
    file: logins get KDC_ERR_SVC_UNAVAILABLE with the cause logged once, the KDC tries the
    token again by itself, and logins work as soon as both are back."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from common.pki.certs import issue_kdc_certificate
    from tests.softhsm import generate_rsa_key, init_token, pin_file, softhsm_directory

    tokens = softhsm_directory(tmp_path, monkeypatch)
    init_token("kdc-token")
    pin = pin_file(tmp_path / "pin")
    public = generate_rsa_key("kdc-token")
    config, db = realm(tmp_path, maker, pkcs11_token_label="kdc-token",
                       pkcs11_pin_file=str(pin))
    pki = tmp_path / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    cert = issue_kdc_certificate(ca, load_pem_private_key((pki / "ca.key").read_bytes(), None),
                                 public, REALM, "kdc", datetime.now(UTC))
    (pki / "kdc.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (pki / "kdc.key").unlink()
    config.write_text(config.read_text().replace(f'kdc_key_file = "{pki / "kdc.key"}"\n', ""))
    kdc = start_kdc(config, tmp_path / "kdc.log")

    try:
        assert login(kdc.port, devices[0], [ca]) == f"krbtgt/{REALM}"
        tokens.rename(tmp_path / "away")
        pin.rename(tmp_path / "pin-away")
        failures = {error_code(kdc.port, devices[0], ca) for _ in range(3)}
        assert failures == {29}
        (tmp_path / "away").rename(tokens)
        time.sleep(1.2)
        assert error_code(kdc.port, devices[0], ca) == 29  # the PIN file is still missing
        (tmp_path / "pin-away").rename(pin)
        deadline = time.monotonic() + 10
        while error_code(kdc.port, devices[0], ca) != 0:
            assert time.monotonic() < deadline, "the KDC did not take its token back"
            time.sleep(0.3)
        causes = [e["cause"] for e in kdc.log_events() if e.get("event") == "service_unavailable"]
        assert causes and all("kdc-token" in c for c in causes)
        assert any("pin" in c.lower() for c in causes), causes
        assert [e for e in kdc.log_events() if e.get("event") == "service_restored"]
        no_tracebacks(kdc)
    finally:
        kdc.stop()


def error_code(port, device, ca) -> int:
    """0 for a login, else the KRB-ERROR code the KDC answered."""
    from common.messages.krb_error import decode_krb_error as decode

    mac, signer = device
    now = datetime.now(UTC)
    request = build_pkinit_as_req(cname=PrincipalName(1, ("cta", mac.replace(":", ""))),
                                  realm=REALM, sname=krbtgt(REALM), signer=signer, now=now,
                                  till=now + timedelta(hours=10), options=PkinitOptions())
    reply = kdc_exchange(f"127.0.0.1:{port}", request.data, timeout=10)
    if reply[0] == 0x7E:  # KRB-ERROR
        return decode(reply).error_code
    process_pkinit_as_rep(reply, request, realm=REALM, anchors=[ca], now=now)
    return 0
