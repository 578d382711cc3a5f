"""The provisioning service and two head-end agents as real processes on loopback (`python -m
provisioning run`, `python -m provisioning headend run`), a throwaway PKI (provisioning/
lab_pki.py), HTTPS from this process.

- every mutual-TLS listener refuses a client without a certificate, with one from an unknown
  CA, and with one from the other listener's CA; the console takes none and needs a login;
- a new device (seed 001, FIG. 7): a controller reports it, staff enter the customer in the
  console, the billing host acknowledges, the head-end opens the MAC, the KDC gets its customer
  record (through `telekey customer`), the operator certificate and a signed seed 004 request
  are served; then de-provisioning (FIG. 8) through the command line: head-end closed, KDC
  record suspended, the certificate in the CRL the KDC reads, the number in quarantine;
- `kill -9` of the service while a head-end is unreachable: after a restart the change resumes
  and completes, each step applied once.
"""

import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from common.pki.certs import phone_id
from common.pki.chain import verify_chain
from common.pki.selfcert import verify_request
from provisioning.lab_pki import make_device, make_lab_pki, write_lab_configs
from telekey.service_process import ServiceProcess, start_service

pytestmark = pytest.mark.e2e
TIMEOUT = 10
MACS = ["00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5f", "00:1a:2b:3c:4d:60"]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("prov-pki")
    make_lab_pki(directory)
    for mac in MACS:
        make_device(directory, mac)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_headend(directory: Path, pki: Path, name: str, port: int = 0) -> ServiceProcess:
    config = directory / f"headend-{name}.toml"
    config.write_text(
        f'[headend]\nname = "{name}"\ndatabase_url = "sqlite:///{directory}/headend-{name}.db"\n'
        f'listen_port = {port}\ntls_cert_file = "{pki / "headend.pem"}"\n'
        f'tls_key_file = "{pki / "headend.key"}"\n'
        f'client_ca_files = ["{pki / "servers-ca.pem"}"]\n')
    return start_service(["provisioning", "headend", "run", "--config", str(config)],
                         directory / f"headend-{name}.log")


def configure(directory: Path, pki: Path, headend_urls: dict[str, str], **extra: Any) -> Path:
    """provisioning.toml in `directory`, using the PKI's files, ports 0."""
    for item in pki.iterdir():
        target = directory / item.name
        if not target.exists():
            target.symlink_to(item)
    write_lab_configs(directory, ports=False, headends=tuple(headend_urls),
                      headend_urls=headend_urls, quarantine_s=3600,
                      extra="task_retry_s = 0.2\ntask_poll_s = 0.2", **extra)
    return directory / "provisioning.toml"


def start_provisioning(config: Path) -> ServiceProcess:
    return start_service(["provisioning", "run", "--config", str(config)],
                         config.parent / "provisioning.log")


def port(server: ServiceProcess, name: str) -> int:
    return int(server.listening["ports"][name])


def context(pki: Path, cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki / "servers-ca.pem")
    if cert is not None:
        ctx.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return ctx


def call(port_number: int, pki: Path, cert: str | None, method: str, path: str,
         body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPSConnection("127.0.0.1", port_number, timeout=TIMEOUT,
                                             context=context(pki, cert))
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data,
                           headers={"content-type": "application/json"} if data else {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def refused(port_number: int, pki: Path, cert: str | None) -> bool:
    """True when there is no HTTP answer at all: the handshake or the first read fails."""
    try:
        status, _ = call(port_number, pki, cert, "GET", "/v1/health")
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return status is None


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                            timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def report(server: ServiceProcess, pki: Path, mac: str, address: str) -> tuple[int, Any]:
    pem = (pki / f"device-{mac.replace(':', '')}.pem").read_text()
    return call(port(server, "api"), pki, "controller", "POST", "/v1/devices/report",
                {"certificates": [pem], "address": address, "controller": "sc1"})


def ack_billing(server: ServiceProcess, pki: Path) -> list[int]:
    status, body = call(port(server, "billing"), pki, "billing", "GET", "/v1/billing/records")
    assert status == 200
    acked = []
    for record in body["records"]:
        status, ack = call(port(server, "billing"), pki, "billing", "POST",
                           f"/v1/billing/records/{record['id']}/ack")
        assert status == 200 and ack["acked_by"] == "billing@127.0.0.1"
        acked.append(record["id"])
    return acked


def customer_state(server: ServiceProcess, pki: Path, number: str) -> dict[str, Any]:
    status, body = call(port(server, "api"), pki, "controller", "GET", f"/v1/customers/{number}")
    assert status == 200, body
    return dict(body)


@pytest.fixture(scope="module")
def lab(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("prov-lab")
    headends = {name: start_headend(directory, pki, name) for name in ("A", "B")}
    urls = {name: f"https://127.0.0.1:{p.listening['port']}" for name, p in headends.items()}
    config = configure(directory, pki, urls, kdc_database_url=f"sqlite:///{directory}/kdc.db")
    server = start_provisioning(config)
    try:
        yield {"dir": directory, "config": config, "server": server, "headends": headends}
    finally:
        for process in (server, *headends.values()):
            process.stop()


class Console:
    """A staff member's browser over HTTPS (cookies, forms), with http.client."""

    def __init__(self, port_number: int, pki: Path) -> None:
        self.port = port_number
        self.pki = pki
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, Any] | None = None
                ) -> tuple[int, dict[str, str], str]:
        from urllib.parse import urlencode

        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=TIMEOUT,
                                                 context=context(self.pki, None))
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form, doseq=True)
            headers["content-type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    key, _, rest = value.partition("=")
                    self.cookies[key] = rest.split(";")[0].strip('"')
            return response.status, dict(response.getheaders()), text
        finally:
            connection.close()

    @staticmethod
    def csrf(html: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', html)
        assert match, html
        return match.group(1)


def test_listeners_refuse_the_wrong_callers(lab: dict[str, Any], pki: Path) -> None:
    server = lab["server"]
    api, billing = port(server, "api"), port(server, "billing")
    headend = lab["headends"]["A"].listening["port"]
    for listener, allowed in ((api, "controller"), (billing, "billing"),
                              (headend, "provisioning-client")):
        assert refused(listener, pki, None)
        assert refused(listener, pki, "intruder")
        assert not refused(listener, pki, allowed)
    assert refused(api, pki, "billing")  # the billing CA may not call the API
    assert refused(billing, pki, "controller")  # nor a controller the billing API
    assert refused(headend, pki, "billing")
    # The console takes no client certificate, and sends everyone to its login page.
    console = Console(port(server, "console"), pki)
    status, headers, _ = console.request("GET", "/customers")
    assert (status, headers["location"]) == (303, "/login")
    assert console.request("GET", "/login")[0] == 200
    # Plain HTTP gets no HTTP answer.
    with socket.create_connection(("127.0.0.1", port(server, "console")), TIMEOUT) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(TIMEOUT)
        try:
            answer = sock.recv(100)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"HTTP/")


def test_new_device_then_deprovisioning(lab: dict[str, Any], pki: Path) -> None:
    server, config, directory = lab["server"], lab["config"], lab["dir"]
    mac = MACS[0]
    # The controller reports the device that logged in with its factory certificate.
    assert report(server, pki, mac, "10.1.0.7") == (200, {
        "approved": True, "mac": mac, "state": "unprovisioned", "number": None})
    status, body = call(port(server, "api"), pki, "controller", "POST", "/v1/devices/report",
                        {"certificates": [(pki / "intruder.pem").read_text()]})
    assert (status, body["error"]) == (403, "UNTRUSTED_DEVICE")
    # A staff member (added on the command line) enters the customer in the console.
    password_file = directory / "alice.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    cli("provisioning", "staff", "add", "--config", str(config), "--username", "alice",
        "--password-file", str(password_file))
    console = Console(port(server, "console"), pki)
    _, _, page = console.request("GET", "/login")
    status, headers, _ = console.request("POST", "/login", {
        "username": "alice", "password": PASSWORD, "csrf": console.csrf(page)})
    assert status == 303
    _, _, page = console.request("GET", "/customers")
    assert mac in page  # calling in, unprovisioned
    _, _, page = console.request("GET", f"/customers/new?mac={mac}")
    status, headers, _ = console.request("POST", "/customers/new", {
        "csrf": console.csrf(page), "name": "Ada Lovelace", "address": "1 Engine Row",
        "mac": mac, "headend": "A", "options": ["voice", "voicemail"], "kind": "customer"})
    assert status == 303, headers
    _, _, page = console.request("GET", headers["location"])
    number = re.search(r'<td id="number">(\d+)</td>', page).group(1)
    assert number == "15551000100"
    # The billing host acknowledges; the head-end and the KDC are done by the service.
    assert ack_billing(server, pki) == [1]
    record = wait_for(lambda: (r := customer_state(server, pki, number))["state"] == "active"
                      and r, "the customer to become active")
    assert record["device"]["state"] == "provisioned"
    headend = lab["headends"]["A"].listening["port"]
    status, entry = call(headend, pki, "provisioning-client", "GET", f"/v1/access/{mac}")
    assert (status, entry["state"], entry["number"], entry["options"]) == (
        200, "open", number, ["voice", "voicemail"])
    kdc = cli("telekey", "customer", "list", "--db", f"sqlite:///{directory}/kdc.db").stdout
    assert f"{number}\t{mac}\tactive\t{phone_id(number).hex()}" in kdc
    # The operator certificate, and a signed seed 004 request the device would act on.
    status, body = call(port(server, "api"), pki, "controller", "GET",
                        f"/v1/devices/{mac}/certificate")
    assert status == 200
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    operator = x509.load_pem_x509_certificate((pki / "operator-ca.pem").read_bytes())
    verify_chain(cert, [], [operator], datetime.now(UTC))
    factory = x509.load_pem_x509_certificate(
        (pki / f"device-{mac.replace(':', '')}.pem").read_bytes())
    assert cert.public_key() == factory.public_key()
    assert cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value == (
        phone_id(number).hex())
    status, body = call(port(server, "api"), pki, "controller", "GET",
                        f"/v1/devices/{mac}/certificate-request")
    assert status == 200
    profile = verify_request(base64.b64decode(body["request"]), operator_root=operator,
                             device_mac=mac, current_not_before=None, now=datetime.now(UTC))
    assert (profile.network_id, profile.device_id) == ("LAB.TEST", mac)

    # De-provisioning from the command line.
    customer_id = str(record["id"])
    out = cli("provisioning", "customer", "terminate", "--config", str(config), "--id",
              customer_id, "--reason", "moving abroad").stdout
    assert "terminated" in out and "revoked (cessationOfOperation)" in out
    crl = x509.load_der_x509_crl((directory / "operator.crl").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert crl.is_signature_valid(operator.public_key())
    ack_billing(server, pki)
    wait_for(lambda: call(headend, pki, "provisioning-client", "GET",
                          f"/v1/access/{mac}")[1]["state"] == "closed", "the head-end to close")
    wait_for(lambda: f"{number}\t{mac}\tsuspended" in cli(
        "telekey", "customer", "list", "--db", f"sqlite:///{directory}/kdc.db").stdout,
        "the KDC record to be suspended")
    status, _ = call(port(server, "api"), pki, "controller", "GET",
                     f"/v1/devices/{mac}/certificate")
    assert status == 404
    pools = cli("provisioning", "numbers", "list", "--config", str(config)).stdout
    assert "A\t100 numbers\t0 assigned\t1 in quarantine\t99 free" in pools
    audit = cli("provisioning", "audit", "--config", str(config), "--limit", "100").stdout
    for line in ("alice\tcustomer_created", "billing@127.0.0.1\tbilling_ack",
                 "system\theadend_ack", "system\tkdc_record", "system\tcertificate_issued",
                 "api@127.0.0.1\tdevice_reported", "\tcertificate_revoked",
                 "\tnumber_released"):
        assert line in audit, line


def test_kill9_mid_flow_resumes(pki: Path, tmp_path: Path) -> None:
    """The head-end is down when the customer is entered; the service is killed with steps
    still queued; after a restart (and the head-end's) the change completes, once."""
    headend_port = free_port()
    config = configure(tmp_path, pki, {"C": f"https://127.0.0.1:{headend_port}"})
    server = start_provisioning(config)
    headend = None
    try:
        assert report(server, pki, MACS[1], "10.1.0.8")[0] == 200
        out = cli("provisioning", "customer", "add", "--config", str(config), "--name",
                  "Charles Babbage", "--address", "2 Difference Lane", "--headend", "C",
                  "--mac", MACS[1]).stdout
        number = re.search(r"number (\d+)", out).group(1)
        ack_billing(server, pki)
        wait_for(lambda: "failed" in cli("provisioning", "customer", "show", "--config",
                                         str(config), "--id", "1").stdout,
                 "a failed attempt to reach the head-end")
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(TIMEOUT)
        shown = cli("provisioning", "customer", "show", "--config", str(config), "--id",
                    "1").stdout
        assert "pending" in shown and "headend open C" in shown
        headend = start_headend(tmp_path, pki, "C", headend_port)
        server = start_provisioning(config)
        record = wait_for(lambda: (r := customer_state(server, pki, number))["state"] ==
                          "active" and r, "the change to complete after the restart")
        assert record["number"] == number
        status, body = call(headend_port, pki, "provisioning-client", "GET", "/v1/access")
        assert [(e["mac"], e["state"], e["version"]) for e in body["entries"]] == [
            (MACS[1], "open", 1)]
        # Sent again (same change id): acknowledged, not applied twice.
        status, ack = call(headend_port, pki, "provisioning-client", "PUT",
                           f"/v1/access/{MACS[1]}", {"change_id": body["entries"][0]
                                                     ["change_id"], "action": "close"})
        assert (status, ack["state"], ack["version"], ack["applied"]) == (200, "open", 1,
                                                                          False)
        assert cert_count(server, pki, MACS[1]) == 1
    finally:
        server.stop()
        if headend is not None:
            headend.stop()


def cert_count(server: ServiceProcess, pki: Path, mac: str) -> int:
    status, body = call(port(server, "api"), pki, "controller", "GET", f"/v1/devices/{mac}")
    assert status == 200
    return 1 if body["operator_serial"] else 0

