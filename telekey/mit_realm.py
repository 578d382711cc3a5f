"""A throwaway MIT Kerberos realm on loopback, for interop tests and `telekey lab`: krb5.conf and
kdc.conf in a private directory (never /etc/krb5.conf), a database made with kdb5_util, and
krb5kdc on a free port. MIT's tools are the independent peer that judges our wire formats."""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REALM = "INTEROP.TEST"


def require_tool(name: str) -> str:
    """The tool's path; a missing MIT tool is an error, not a skip (`make` installs them)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if path is None:
        raise RuntimeError(f"{name} not found: install krb5-user and krb5-kdc (make does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MitRealm:
    directory: Path
    port: int
    env: dict[str, str]
    kdc: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(args, input=stdin, capture_output=True, text=True, env=self.env,
                                timeout=30, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def stop(self) -> None:
        if self.kdc is not None:
            self.kdc.terminate()
            self.kdc.wait(timeout=10)


def _start_krb5kdc(mit: MitRealm, realm: str) -> MitRealm:
    """Run krb5kdc in the foreground for `mit` and wait until its port accepts connections."""
    mit.kdc = subprocess.Popen([require_tool("krb5kdc"), "-n", "-r", realm], env=mit.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", mit.port)) == 0:
                return mit
        time.sleep(0.05)
    mit.stop()
    raise RuntimeError("krb5kdc did not start listening")


def make_client_config(directory: Path, port: int = 0) -> dict[str, str]:
    """Environment that points the MIT tools at a private krb5.conf."""
    kdc_line = f"  kdc = 127.0.0.1:{port}\n" if port else ""
    (directory / "krb5.conf").write_text(
        "[libdefaults]\n"
        f" default_realm = {REALM}\n"
        " dns_lookup_kdc = false\n dns_lookup_realm = false\n rdns = false\n"
        " udp_preference_limit = 1\n"
        f"[realms]\n {REALM} = {{\n{kdc_line} }}\n")
    env = dict(os.environ)
    env["KRB5_CONFIG"] = str(directory / "krb5.conf")
    env["KRB5_KDC_PROFILE"] = str(directory / "kdc.conf")
    env["KRB5CCNAME"] = f"FILE:{directory / 'ccache'}"
    return env


def start_mit_realm(directory: Path) -> MitRealm:
    """Create a realm with principal phone1 (password 'secret') and start krb5kdc."""
    port = free_port()
    env = make_client_config(directory, port)
    (directory / "kdc.conf").write_text(
        f"[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n"
        f"[realms]\n {REALM} = {{\n"
        f"  database_name = {directory}/principal\n"
        f"  key_stash_file = {directory}/stash\n"
        f"  acl_file = {directory}/kadm5.acl\n"
        "  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes256-cts-hmac-sha384-192:normal\n"
        " }\n"
        f"[logging]\n kdc = FILE:{directory}/kdc.log\n")
    realm = MitRealm(directory, port, env)
    realm.run(require_tool("kdb5_util"), "create", "-s", "-r", REALM, "-P", "master-password")
    realm.run(require_tool("kadmin.local"), "-r", REALM, "-q",
              "addprinc +requires_preauth -pw secret phone1")
    return _start_krb5kdc(realm, REALM)


def start_mit_pkinit_kdc(directory: Path, *, realm: str, identity: tuple[Path, Path],
                         anchors: list[Path], admin: list[str],
                         eku_checking: str = "kpClientAuth") -> MitRealm:
    """MIT krb5kdc with PKINIT: `identity` is its (certificate, key), `anchors` the CAs it
    trusts (its own certificate's issuer among them: MIT verifies it too), `admin` kadmin.local
    queries run after the database is created (principals, pkinit_cert_match strings)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    anchor_lines = "".join(f"  pkinit_anchors = FILE:{a}\n" for a in anchors)
    (directory / "kdc.conf").write_text(
        f"[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n"
        f"[realms]\n {realm} = {{\n  database_name = {directory}/principal\n"
        f"  key_stash_file = {directory}/stash\n"
        f"  pkinit_identity = FILE:{identity[0]},{identity[1]}\n{anchor_lines}"
        f"  pkinit_eku_checking = {eku_checking}\n }}\n"
        f"[logging]\n kdc = FILE:{directory}/kdc.log\n")
    (directory / "krb5.conf").write_text(f"[libdefaults]\n default_realm = {realm}\n")
    env = dict(os.environ)
    env["KRB5_CONFIG"] = str(directory / "krb5.conf")
    env["KRB5_KDC_PROFILE"] = str(directory / "kdc.conf")
    mit = MitRealm(directory, port, env)
    mit.run(require_tool("kdb5_util"), "create", "-s", "-r", realm, "-P", "master-password")
    for query in admin:
        mit.run(require_tool("kadmin.local"), "-r", realm, "-q", query)
    return _start_krb5kdc(mit, realm)
