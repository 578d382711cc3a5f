"""A network of telekey daemons on loopback, for `telekey lab` and the end-to-end tests:
telekey's KDC, signaling controllers with keytabs from `telekey principal ktadd`, devices
(SoftHSM tokens) running `telekey cta run`, and tshark capturing and decoding what they say."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import free_port
from telekey.service_process import ServiceProcess, start_service

REALM = "LAB.TEST"


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
        self.controllers: dict[str, dict] = {}

    def controller(self, name: str, **settings: object) -> ServiceProcess:
        principal = f"sigctl/{name}.lab.test"
        keytab = self.root / f"{name}.keytab"
        if name not in self.controllers:
            telekey_cmd("principal", "add", principal, "--random-key", "--db", self.db)
            telekey_cmd("principal", "ktadd", principal, "--keytab", str(keytab), "--realm",
                        REALM, "--db", self.db)
            self.controllers[name] = {"principal": principal, "km_port": free_port(),
                                      "esp_port": free_port(), "starts": 0}
        info = self.controllers[name]
        info["starts"] += 1
        lines = [f'realm = "{REALM}"', f'principal = "{principal}"',
                 f'keytab_file = "{settings.pop("keytab", keytab)}"',
                 f"km_port = {info['km_port']}", f"esp_port = {info['esp_port']}",
                 f'esp_keylog_file = "{self.root / "esp_sa"}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        config = self.root / f"{name}.toml"
        config.write_text("[sigctl]\n" + "\n".join(lines) + "\n")
        process = start_service(["sigctl", "run", "--config", str(config)],
                                self.root / f"{name}-{info['starts']}.log")
        self.processes.append(process)
        info["process"] = process
        return process

    def device(self, mac: str, controller: str, *extra: str) -> ServiceProcess:
        directory = self.root / mac.replace(":", "")
        if not directory.exists():
            result = cli("cta", "manufacture", "--mac", mac, "--dir", str(directory),
                         "--manufacturer-ca", str(self.root / "maker"), "--operator-root",
                         str(self.pki / "ca.pem"))
            assert result.returncode == 0, result.stderr
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


def manage(process: ServiceProcess, **message: object) -> dict:
    with socket.create_connection(("127.0.0.1", int(process.listening["management_port"])),
                                  timeout=60) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        return json.loads(sock.makefile("rb").readline())


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def events(process: ServiceProcess, name: str) -> list[dict]:
    return [e for e in process.log_events() if e.get("event") == name]


class Capture:
    """tshark capturing the given UDP ports on loopback into `path` (started when the
    constructor returns, stopped by `stop`)."""

    def __init__(self, path: Path, ports: list[int]) -> None:
        self.path = path
        self.process = subprocess.Popen(
            ["tshark", "-i", "lo", "-w", str(path), "-f",
             " or ".join(f"udp port {p}" for p in ports)],
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
