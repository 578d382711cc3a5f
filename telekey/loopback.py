"""A network of telekey daemons on loopback, for `telekey lab` and the end-to-end tests:
telekey's KDC, signaling controllers with keytabs from `telekey principal ktadd`, devices
(SoftHSM tokens) running `telekey cta run`, and tshark capturing and decoding what they say."""

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import free_port
from telekey.service_process import ServiceProcess, start_service

REALM = "LAB.TEST"


def toml_value(value: object) -> str:
    """A TOML value: inline tables for dicts (quoted keys), JSON for the rest."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, Path):
        return json.dumps(str(value))
    return json.dumps(value)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "telekey", *args], capture_output=True,
                          text=True, timeout=120)


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = f"sqlite:///{root}/kdc.db"
        self.pki = root / "pki"
        telekey_cmd("realm", "init", "--realm", REALM, "--db", self.db, "--pki-dir",
                    str(self.pki))
        telekey_cmd("cert", "ca", "--dir", str(root / "maker"), "--name", "Maker Root")
        config = write_kdc_config(root, realm=REALM, db_url=self.db, cert=self.pki / "kdc.pem",
                                  key=self.pki / "kdc.key", anchors=[self.pki / "ca.pem"],
                                  manufacturer_anchor_files=[str(root / "maker" / "ca.pem")],
                                  as_rate_per_source=0)
        self.kdc = start_kdc(config, root / "kdc.log")
        self.processes: list[ServiceProcess] = [self.kdc]
        self.controllers: dict[str, dict[str, Any]] = {}

    def reserve(self, name: str) -> dict[str, Any]:
        """The controller's principal, keytab and ports, made once (before it starts, so
        peers can name each other)."""
        if name not in self.controllers:
            principal = f"sigctl/{name}.lab.test"
            keytab = self.root / f"{name}.keytab"
            telekey_cmd("principal", "add", principal, "--random-key", "--db", self.db)
            telekey_cmd("principal", "ktadd", principal, "--keytab", str(keytab), "--realm",
                        REALM, "--db", self.db)
            self.controllers[name] = {"principal": principal, "km_port": free_port(),
                                      "esp_port": free_port(), "starts": 0, "keytab": keytab}
        return self.controllers[name]

    def address(self, name: str) -> str:
        info = self.reserve(name)
        return f"127.0.0.1:{info['km_port']}:{info['esp_port']}"

    def controller(self, name: str, **settings: object) -> ServiceProcess:
        info = self.reserve(name)
        principal, keytab = info["principal"], info["keytab"]
        info["starts"] += 1
        lines = [f'realm = "{REALM}"', f'principal = "{principal}"',
                 f'keytab_file = "{settings.pop("keytab", keytab)}"',
                 f"km_port = {info['km_port']}", f"esp_port = {info['esp_port']}",
                 f'esp_keylog_file = "{self.root / "esp_sa"}"']
        lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
        config = self.root / f"{name}.toml"
        config.write_text("[sigctl]\n" + "\n".join(lines) + "\n")
        process = start_service(["sigctl", "run", "--config", str(config)],
                                self.root / f"{name}-{info['starts']}.log")
        self.processes.append(process)
        info["process"] = process
        return process

    def manufacture(self, mac: str) -> Path:
        directory = self.root / mac.replace(":", "")
        if not directory.exists():
            result = cli("cta", "manufacture", "--mac", mac, "--dir", str(directory),
                         "--manufacturer-ca", str(self.root / "maker"), "--operator-root",
                         str(self.pki / "ca.pem"))
            assert result.returncode == 0, result.stderr
        return directory

    def provision(self, mac: str, number: str) -> Path:
        """Seed 001 flow 4: a customer record for `number`, and the operator-issued
        certificate (factory key, phone ID) installed in the device's token."""
        directory = self.manufacture(mac)
        factory, operator = directory / "factory.pem", directory / "operator.pem"
        for args in (("cta", "export-cert", "--dir", str(directory), "--label", "factory",
                      "--out", str(factory)),
                     ("provisioning", "device-cert", "--factory-cert", str(factory),
                      "--number", number, "--pki-dir", str(self.pki), "--out", str(operator)),
                     ("cta", "install-cert", "--dir", str(directory), "--cert", str(operator)),
                     ("customer", "add", "--number", number, "--mac", mac, "--db", self.db)):
            result = cli(*args)
            assert result.returncode == 0, result.stderr
        return directory

    def principal_keytab(self, principal: str) -> Path:
        """A principal with random keys and its keytab (network servers, test clients)."""
        keytab = self.root / (principal.replace("/", "_") + ".keytab")
        if not keytab.exists():
            telekey_cmd("principal", "add", principal, "--random-key", "--db", self.db)
            telekey_cmd("principal", "ktadd", principal, "--keytab", str(keytab), "--realm",
                        REALM, "--db", self.db)
        return keytab

    def echo_server(self, principal: str, controller: str, number: str) -> ServiceProcess:
        keytab = self.principal_keytab(principal)
        process = start_service(
            ["telekey", "cta", "echo-server", "--principal", principal, "--keytab",
             str(keytab), "--realm", REALM, "--kdc", f"127.0.0.1:{self.kdc.port}",
             "--service", self.controllers[controller]["principal"], "--controller",
             self.address(controller), "--number", number, "--esp-keylog",
             str(self.root / "esp_sa")], self.root / f"{principal.replace('/', '_')}.log")
        self.processes.append(process)
        return process

    def device(self, mac: str, controller: str, *extra: str) -> ServiceProcess:
        directory = self.manufacture(mac)
        info = self.controllers[controller]
        process = start_service(
            ["telekey", "cta", "run", "--dir", str(directory), "--realm", REALM, "--kdc",
             f"127.0.0.1:{self.kdc.port}", "--service", info["principal"], "--controller",
             f"127.0.0.1:{info['km_port']}:{info['esp_port']}", *extra],
            directory.with_suffix(".log"))
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.process.poll() is None:
                process.stop()


def manage(process: ServiceProcess, **message: object) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", int(process.listening["management_port"])),
                                  timeout=60) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        reply: dict[str, Any] = json.loads(sock.makefile("rb").readline())
        return reply


T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def wait_for_sa(device: ServiceProcess) -> dict[str, Any]:
    """The SA a device agent holds with its controller, once it has one."""
    sa: dict[str, Any] = wait_for(lambda: (manage(device, op="status")["link"] or {}).get("sa"))
    return sa


def events(process: ServiceProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in process.log_events() if e.get("event") == name]


class Capture:
    """tshark capturing the given UDP ports on loopback into `path` (started when the
    constructor returns, stopped by `stop`)."""

    def __init__(self, path: Path, ports: list[int]) -> None:
        self.path = path
        self.process = subprocess.Popen(
            ["tshark", "-i", "lo", "-w", str(path), "-f",
             " or ".join(f"udp port {p}" for p in ports) or "udp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "Capturing on" in line:
                return
        raise RuntimeError("tshark did not start capturing")

    def stop(self) -> None:
        time.sleep(0.5)  # let the last packets reach the file
        self.process.terminate()
        self.process.wait(timeout=10)


def decode_capture(capture: Path, *, pktc_port: int, esp_port: int, keytab: Path,
                   esp_sa: Path) -> str:
    """`tshark -V` of a capture with the key-management port as pktc, ESP in UDP, the
    controller keytab and the SA keys (Wireshark esp_sa records)."""
    uat = []
    for line in esp_sa.read_text().splitlines():
        uat += ["-o", f"uat:esp_sa:{line}"]
    out = subprocess.run(
        ["tshark", "-r", str(capture), "-d", f"udp.port=={pktc_port},pktc", "-d",
         f"udp.port=={esp_port},udpencap", "-o", "kerberos.decrypt:TRUE", "-o",
         f"kerberos.file:{keytab}", "-o", "esp.enable_encryption_decode:TRUE", "-o",
         "esp.enable_authentication_check:TRUE", *uat, "-V"],
        capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


class CallLab(Lab):
    """The calls network: escrow authority, controllers sc1 and sc2 linked to each other,
    provisioned devices A (1001, on sc1) and B (2002, on sc2), unprovisioned device U (on
    sc1), and the echo server (611, customer service, on sc1); tshark captures every UDP
    packet on loopback into calls.pcap. WAV tones a, b, u are what A, B and U play."""

    A_MAC, B_MAC, U_MAC = "00:1a:2b:3c:4d:0a", "00:1a:2b:3c:4d:0b", "00:1a:2b:3c:4d:0c"
    ECHO = "media/echo.lab.test"

    def __init__(self, root: Path, keepalive_s: float = 20.0) -> None:
        from cta.media import tone, write_wav

        super().__init__(root)
        self.keepalive_s = keepalive_s
        self.principals = {mac: "cta/" + mac.replace(":", "")
                           for mac in (self.A_MAC, self.B_MAC, self.U_MAC)}
        escrow_dir = root / "escrow"
        result = cli("escrow", "keygen", "--dir", str(escrow_dir))
        assert result.returncode == 0, result.stderr
        self.escrow_key = escrow_dir / "escrow.key"
        self.escrow_public = escrow_dir / "escrow.pub"
        self.escrow_db = f"sqlite:///{root}/sc1-escrow.db"
        self.reserve("sc1")
        self.reserve("sc2")
        self.capture = Capture(root / "calls.pcap", [])
        self.wav = {}
        for name, seconds, frequency in (("a", 1.2, 440.0), ("b", 0.6, 660.0),
                                         ("u", 0.8, 300.0)):
            self.wav[name] = root / f"{name}.wav"
            write_wav(self.wav[name], tone(seconds, frequency))
        for name in ("a", "b", "u"):
            (root / f"rec-{name}").mkdir(exist_ok=True)

    def start_controller(self, name: str, **extra: object) -> ServiceProcess:
        """Controller `name` (sc1 or sc2) of the calls network, with `extra` settings."""
        a, b, u = (self.principals[m] for m in (self.A_MAC, self.B_MAC, self.U_MAC))
        other = "sc2" if name == "sc1" else "sc1"
        common = {"kdc": f"127.0.0.1:{self.kdc.port}", "peer_keepalive_s": self.keepalive_s,
                  "peers": {self.controllers[other]["principal"]: self.address(other)},
                  **extra}
        if name == "sc1":
            return self.controller("sc1", lines={"1001": a, "1009": u, "611": self.ECHO},
                                   routes={"2": self.controllers["sc2"]["principal"]},
                                   escrow_public_key_file=self.escrow_public,
                                   escrow_database_url=self.escrow_db, **common)
        return self.controller("sc2", lines={"2002": b},
                               routes={"1": self.controllers["sc1"]["principal"],
                                       "6": self.controllers["sc1"]["principal"]}, **common)

    def start_devices(self) -> None:
        keylog = str(self.root / "esp_sa")
        self.provision(self.A_MAC, "1001")
        self.provision(self.B_MAC, "2002")
        self.manufacture(self.U_MAC)  # stays unprovisioned: factory certificate only
        common = ("--esp-keylog", keylog, "--keepalive", str(self.keepalive_s))
        self.a = self.device(self.A_MAC, "sc1", "--number", "1001", "--record-dir",
                             str(self.root / "rec-a"), *common)
        self.b = self.device(self.B_MAC, "sc2", "--number", "2002", "--record-dir",
                             str(self.root / "rec-b"), "--play", str(self.wav["b"]), *common)
        self.u = self.device(self.U_MAC, "sc1", "--record-dir", str(self.root / "rec-u"),
                             *common)
        self.echo = self.echo_server(self.ECHO, "sc1", "611")
        for device in (self.a, self.b, self.u):
            wait_for_sa(device)

    def close(self) -> None:
        super().close()
        if self.capture.process.poll() is None:
            self.capture.stop()


class Enterprise:
    """Seed 002 on top of a Lab: a key server (its own PKI; `profile` default or seed) with
    its seed set, more key servers of the same enterprise if asked for, controller settings
    that open their RAS port and fetch K_g from the first, the controller's extensions, and
    phones running `telekey phone run`."""

    SEED = bytes(range(32))

    def __init__(self, lab: Lab, profile: str = "default") -> None:
        from keyserver.pki import make_lab_pki

        self.lab = lab
        self.profile = profile
        self.root = lab.root / "enterprise"
        self.pki = self.root / "pki"
        make_lab_pki(self.pki)
        self.keyserver_config = self.root / "keyserver.toml"
        self.keyserver, self.ports, self.admin = self.add_keyserver("keyserver", 1)
        self.phones: dict[str, Path] = {}

    def add_keyserver(self, name: str, server_id: int) -> tuple[ServiceProcess,
                                                                 dict[str, int], Any]:
        """A key server of this enterprise (this PKI, its own id and database) given the
        same seed as the others: its process, its ports and an admin client."""
        from keyserver.admin_client import AdminClient

        config = self.root / f"{name}.toml"
        config.write_text(
            f'[keyserver]\nserver_id = {server_id}\nprofile = "{self.profile}"\n'
            f'database_url = "sqlite:///{self.root / name}.db"\n'
            "basic_port = 0\nadvanced_port = 0\nadmin_port = 0\n"
            f'tls_cert_file = "{self.pki / "server.pem"}"\n'
            f'tls_key_file = "{self.pki / "server.key"}"\n'
            f'advanced_client_ca_files = ["{self.pki / "ca.pem"}"]\n'
            f'admin_client_ca_files = ["{self.pki / "admin-ca.pem"}"]\n'
            "key_file_rate_per_source = 0\n")
        process = start_service(["keyserver", "run", "--config", str(config)],
                                self.root / f"{name}.log")
        self.lab.processes.append(process)
        ports: dict[str, int] = process.listening["ports"]
        admin = AdminClient(f"https://127.0.0.1:{ports['admin']}", self.pki / "admin.pem",
                            self.pki / "admin.key", self.pki / "ca.pem")
        admin.request("PUT", "/v1/seed", {"seed": self.SEED.hex()})
        return process, ports, admin

    @property
    def basic_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['basic']}"

    def rotate(self, seed: bytes) -> str:
        """A new K_m from `seed`; its CV_m."""
        reply: dict[str, Any] = self.admin.request("POST", "/v1/rotate", {"seed": seed.hex()})
        return str(reply["check_value"])

    def controller_settings(self, name: str, **extra: object) -> dict[str, object]:
        """What a controller needs to register phones (RAS on a free port)."""
        settings: dict[str, object] = {
            "keyserver_url": f"https://127.0.0.1:{self.ports['advanced']}",
            "keyserver_ca_file": self.pki / "ca.pem",
            "keyserver_client_cert_file": self.pki / "appserver.pem",
            "keyserver_client_key_file": self.pki / "appserver.key",
            "enterprise_profile": self.profile, "ras_port": 0,
            "extensions_database_url": f"sqlite:///{self.lab.root / name}-extensions.db"}
        settings.update(extra)
        return settings

    def add_extension(self, name: str, ext: str, pin: str) -> None:
        """`telekey sigctl extension add` against controller `name`'s settings file (written
        by Lab.controller, so call it after the controller started once, or write them)."""
        pin_file = self.root / f"pin-{name}-{ext}"
        pin_file.touch(mode=0o600, exist_ok=True)
        pin_file.write_text(pin + "\n")
        result = cli("sigctl", "extension", "add", ext, "--pin-file", str(pin_file),
                     "--config", str(self.lab.root / f"{name}.toml"))
        assert result.returncode == 0, result.stderr

    def phone(self, ext: str, pin: str, controller: str, *extra: str,
              ras_port: int | None = None, name: str | None = None,
              keyserver: str | None = None) -> ServiceProcess:
        """`telekey phone run` for `ext` with `pin`, registered with controller `controller`
        (its RAS port from its `listening` line unless given), its key file from the first
        key server's basic service unless `keyserver` names another's URL."""
        name = name or f"phone-{ext}"
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        pin_file = directory.with_suffix(".pin")
        pin_file.touch(mode=0o600, exist_ok=True)
        pin_file.write_text(pin + "\n")
        info = self.lab.controllers[controller]
        port = ras_port or int(info["process"].listening["ras_port"])
        process = start_service(
            ["telekey", "phone", "run", "--ext", ext, "--pin-file", str(pin_file),
             "--keyserver", keyserver or self.basic_url, "--ca", str(self.pki / "ca.pem"),
             "--controller", f"127.0.0.1:{port}", "--realm", REALM, "--dir", str(directory),
             *extra], self.root / f"{name}.log")
        self.lab.processes.append(process)
        self.phones[name] = directory
        return process
