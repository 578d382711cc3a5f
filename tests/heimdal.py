"""Heimdal's kinit as an independent PKINIT peer for telekey's KDC.

Debian's Heimdal packages conflict with MIT's (installed here), so Heimdal lives in a Debian
chroot made with `debootstrap --variant=minbase bookworm` from the mirror apt uses, with
`heimdal-clients` inside (../shared/platform-notes.md). The chroot is built once and kept
outside the repository (`/var/cache/telekey/heimdal-bookworm`, or TELEKEY_HEIMDAL_ROOT): a
build goes to `<root>.partial` under a lock, writes a stamp file when it is complete and is
then renamed into place, so a half-built tree is never used and two processes never build at
once. A chroot that cannot be built is an error with the reason, never a skip.

`HeimdalClient` copies a krb5.conf, the anchors and the identities into a directory of its own
under the chroot's /tmp and runs `chroot ROOT env -i KRB5_CONFIG=... kinit.heimdal` against a
KDC on the host's loopback (the chroot shares the host's network).

`python -m tests.heimdal capture [DIR]` records the AS-REQs Heimdal sends (tests/interop/heimdal
holds them; its README says how they were made).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SUITE = "bookworm"
DEFAULT_ROOT = Path("/var/cache/telekey/heimdal-bookworm")
STAMP = ".telekey-heimdal-complete"
KINIT = "/usr/bin/kinit.heimdal"
BUILD_TIMEOUT_S = 900.0


class HeimdalUnavailable(RuntimeError):
    """The Heimdal chroot could not be built or used; the message says why."""


@dataclass(frozen=True)
class HeimdalPeer:
    """A complete chroot: its root on the host and the heimdal-clients version inside."""

    root: Path
    version: str
    build_seconds: float | None = None  # None: found complete in the cache


def chroot_root() -> Path:
    return Path(os.environ.get("TELEKEY_HEIMDAL_ROOT", str(DEFAULT_ROOT)))


def debian_mirror(suite: str = SUITE) -> str:
    """The mirror apt uses for `suite`: the first enabled `deb` source naming it in
    /etc/apt/sources.list or sources.list.d (one-line or deb822 format).
    TELEKEY_DEBIAN_MIRROR overrides."""
    if override := os.environ.get("TELEKEY_DEBIAN_MIRROR"):
        return override
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found = (_deb822_mirror(text, suite) if path.suffix == ".sources"
                 else _one_line_mirror(text, suite))
        if found:
            return found
    raise HeimdalUnavailable(f"no Debian source for {suite} in /etc/apt/sources.list*; set "
                             "TELEKEY_DEBIAN_MIRROR")


def _one_line_mirror(text: str, suite: str) -> str | None:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options such as [signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and words[1] == suite:
            return words[0]
    return None


def _deb822_mirror(text: str, suite: str) -> str | None:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
        if ("deb" in fields.get("types", "").split()
                and suite in fields.get("suites", "").split()
                and fields.get("enabled", "yes").lower() != "no" and fields.get("uris")):
            return fields["uris"].split()[0]
    return None


def _complete(root: Path) -> str | None:
    """The heimdal-clients version recorded by a complete build, or None."""
    stamp = root / STAMP
    if not stamp.is_file() or not (root / KINIT.lstrip("/")).is_file():
        return None
    return str(json.loads(stamp.read_text())["heimdal_clients"])


@contextmanager
def _build_lock(path: Path, timeout: float) -> Iterator[None]:
    with path.open("a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise HeimdalUnavailable(
                        f"another process has held {path} for {timeout:.0f} s") from exc
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def _remove_tree(path: Path) -> None:
    """Delete a leftover (partial) chroot; unmount first what a killed debootstrap left
    mounted (its /proc and /sys), and refuse to delete through a mount."""
    if not path.exists():
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", point], capture_output=True, check=False, timeout=30)
    if left := _mounts_under(path):
        raise HeimdalUnavailable(f"cannot remove {path}: still mounted: {left}")
    shutil.rmtree(path)


def ensure_heimdal(root: Path | None = None) -> HeimdalPeer:
    """The Heimdal chroot, built now if the cache has no complete one (about a minute and
    ~300 MB). Raises HeimdalUnavailable with the reason if it cannot be built."""
    root = root or chroot_root()
    if version := _complete(root):
        return HeimdalPeer(root, version)
    if os.geteuid() != 0:
        raise HeimdalUnavailable("building and entering the Heimdal chroot needs root")
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None)
    if debootstrap is None:
        raise HeimdalUnavailable("debootstrap not found: install it (`make system-deps` does)")
    root.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(root.with_name(root.name + ".lock"), BUILD_TIMEOUT_S):
        if version := _complete(root):  # built by another process while we waited
            return HeimdalPeer(root, version)
        partial = root.with_name(root.name + ".partial")
        log_path = root.with_name(root.name + ".build.log")
        _remove_tree(partial)
        _remove_tree(root)  # incomplete: no stamp
        mirror = debian_mirror()
        started = time.monotonic()
        with log_path.open("wb") as log:
            try:
                result = subprocess.run(
                    [debootstrap, "--variant=minbase", "--include=heimdal-clients", SUITE,
                     str(partial), mirror], stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired as exc:
                raise HeimdalUnavailable(
                    f"debootstrap from {mirror} took over {BUILD_TIMEOUT_S:.0f} s; "
                    f"see {log_path}") from exc
        if result.returncode != 0:
            _remove_tree(partial)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise HeimdalUnavailable(f"debootstrap {SUITE} from {mirror} failed with exit "
                                     f"{result.returncode} (log {log_path}):\n{tail}")
        if not (partial / KINIT.lstrip("/")).is_file():
            raise HeimdalUnavailable(f"the chroot has no {KINIT} (log {log_path})")
        query = subprocess.run(["chroot", str(partial), "dpkg-query", "-W", "-f",
                                "${Version}", "heimdal-clients"], capture_output=True,
                               text=True, timeout=60, check=False)
        if query.returncode != 0:
            raise HeimdalUnavailable(f"dpkg-query in the chroot failed: {query.stderr}")
        seconds = time.monotonic() - started
        (partial / STAMP).write_text(json.dumps({
            "heimdal_clients": query.stdout, "suite": SUITE, "mirror": mirror,
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": round(seconds, 1)}) + "\n")
        os.rename(partial, root)
        return HeimdalPeer(root, query.stdout, seconds)


@dataclass(frozen=True)
class KinitResult:
    argv: list[str]
    returncode: int
    output: str  # stdout and stderr: Heimdal prints its errors on stderr
    seconds: float
    ccache: bytes | None  # the credential cache it wrote, if any


@dataclass
class HeimdalClient:
    """A private directory under the chroot's /tmp with krb5.conf files (one per transport)
    for `realm` at 127.0.0.1:`port`, the anchors, and the identities added."""

    peer: HeimdalPeer
    realm: str
    port: int
    inside: str  # the directory as the chroot sees it
    identities: dict[str, str] = field(default_factory=dict)

    @property
    def host_dir(self) -> Path:
        return self.peer.root / self.inside.lstrip("/")

    def add_identity(self, name: str, cert: Path, key: Path) -> str:
        """Copy a certificate and its key in; returns Heimdal's `FILE:cert,key` identity."""
        shutil.copyfile(cert, self.host_dir / f"{name}.pem")
        key_copy = self.host_dir / f"{name}.key"
        key_copy.touch(mode=0o600)
        key_copy.write_bytes(key.read_bytes())
        identity = f"FILE:{self.inside}/{name}.pem,{self.inside}/{name}.key"
        self.identities[name] = identity
        return identity

    def kinit(self, principal: str, identity: str, *, transport: str = "tcp",
              rsa: bool = False, dh_min_bits: int = 1024, timeout: float = 60.0
              ) -> KinitResult:
        """Heimdal's kinit with PKINIT: DH (the group chosen by `pkinit_dh_min_bits`: 1024
        gives group 14, 0 group 2), or RSA key transport (`--pk-use-enckey`) if `rsa`."""
        conf = f"{self.inside}/krb5-{transport}-{dh_min_bits}.conf"
        ccache = f"{self.inside}/cc-{uuid.uuid4().hex}"
        args = [KINIT, "-C", identity, *(["--pk-use-enckey"] if rsa else []), principal]
        argv = ["chroot", str(self.peer.root), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin",
                f"KRB5_CONFIG={conf}", f"KRB5CCNAME=FILE:{ccache}", *args]
        started = time.monotonic()
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=timeout, check=False)
        seconds = time.monotonic() - started
        cc_path = self.peer.root / ccache.lstrip("/")
        data = cc_path.read_bytes() if cc_path.exists() else None
        cc_path.unlink(missing_ok=True)
        return KinitResult(args, result.returncode, result.stdout + result.stderr, seconds,
                           data)


def heimdal_krb5_conf(realm: str, port: int, transport: str, anchors: list[str],
                      dh_min_bits: int = 1024) -> str:
    """A krb5.conf for Heimdal's PKINIT client. `kdc = udp/...` or `tcp/...` pins the
    transport (with only a udp/ KDC listed, Heimdal stops at KRB_ERR_RESPONSE_TOO_BIG). The
    anchors are an appdefault: Heimdal reads `pkinit_anchors` from [appdefaults], [realms]
    REALM or [libdefaults], only the first such line, and one FILE: entry takes several
    comma-separated files (docs/interop.md)."""
    return (f"[libdefaults]\n default_realm = {realm}\n dns_lookup_kdc = false\n"
            f" dns_lookup_realm = false\n pkinit_dh_min_bits = {dh_min_bits}\n"
            f" kdc_timeout = 5\n"
            f"[realms]\n {realm} = {{\n  kdc = {transport}/127.0.0.1:{port}\n"
            f"  pkinit_anchors = FILE:{','.join(anchors)}\n }}\n")


@contextmanager
def heimdal_client(peer: HeimdalPeer, *, realm: str, port: int,
                   anchors: list[Path]) -> Iterator[HeimdalClient]:
    """A HeimdalClient in a new directory of the chroot's /tmp, removed afterwards."""
    inside = f"/tmp/telekey-{uuid.uuid4().hex}"
    client = HeimdalClient(peer, realm, port, inside)
    client.host_dir.mkdir(mode=0o700)
    try:
        names = []
        for i, anchor in enumerate(anchors):
            shutil.copyfile(anchor, client.host_dir / f"anchor{i}.pem")
            names.append(f"{inside}/anchor{i}.pem")
        for transport in ("tcp", "udp"):
            for bits in (1024, 0):
                (client.host_dir / f"krb5-{transport}-{bits}.conf").write_text(
                    heimdal_krb5_conf(realm, port, transport, names, bits))
        yield client
    finally:
        shutil.rmtree(client.host_dir, ignore_errors=True)


# -- Capturing what Heimdal sends ---------------------------------------------------------


class KdcRecorder:
    """Listens on a loopback port (UDP and TCP) in place of the KDC: keeps every request
    as received (TCP without its 4-byte length) and relays it to the real KDC and back."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.requests: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._udp.bind(("127.0.0.1", 0))
        self.port = int(self._udp.getsockname()[1])
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind(("127.0.0.1", self.port))
        self._tcp.listen(8)
        for sock in (self._udp, self._tcp):
            sock.settimeout(0.2)
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._udp.recvfrom(65536)
            except TimeoutError:
                continue
            self.requests.append(("udp", data))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(10)
                up.sendto(data, self.upstream)
                try:
                    self._udp.sendto(up.recv(65536), peer)
                except TimeoutError:  # the KDC dropped it: so does the recorder
                    continue

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            try:
                self._relay_tcp(conn)
            except OSError:  # a peer closed or timed out: that connection ends
                continue

    def _relay_tcp(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream, timeout=10) as up:
            conn.settimeout(10)
            while (record := _read_record(conn)) is not None:
                self.requests.append(("tcp", record))
                up.sendall(struct.pack(">I", len(record)) + record)
                reply = _read_record(up)
                if reply is None:
                    return
                conn.sendall(struct.pack(">I", len(reply)) + reply)


def _read_record(sock: socket.socket) -> bytes | None:
    def exactly(n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    header = exactly(4)
    if header is None:
        return None
    return exactly(struct.unpack(">I", header)[0])


REALM = "LAB.TEST"
MAC = "00:1a:2b:3c:4d:5e"
PHONE = "+1 555 0100"
# name: (identity, principal, transport, RSA mode, pkinit_dh_min_bits)
CAPTURE_CASES = {
    "dh_tcp": ("phone1", f"phone1@{REALM}", "tcp", False, 1024),
    "dh_udp": ("phone1", f"phone1@{REALM}", "udp", False, 1024),
    "rsa_tcp": ("phone1", f"phone1@{REALM}", "tcp", True, 1024),
    "rsa_udp": ("phone1", f"phone1@{REALM}", "udp", True, 1024),
    "dh_group2_tcp": ("phone1", f"phone1@{REALM}", "tcp", False, 0),
    "operator_dh_tcp": ("operator", f"cta/{MAC.replace(':', '')}@{REALM}", "tcp", False, 1024),
    "factory_dh_tcp": ("factory", f"cta/{MAC.replace(':', '')}@{REALM}", "tcp", False, 1024),
}


def make_fixture_pki(out: Path, work: Path) -> None:
    """The fixture realm's certificates, made once (kept in `out` and committed): the realm
    CA and KDC certificate from `telekey realm init --pki-dir`, phone1's certificate from
    `telekey cert client`, an operator device certificate with a phone ID, and a
    manufacturer root with a factory device certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

    from common.pki.certs import build_ca, issue_device_certificate, phone_id
    from runtime.key_files import write_private_key
    from telekey.kdc_process import telekey_cmd

    pki = work / "pki"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", f"sqlite:///{work}/pki-only.db",
                "--pki-dir", str(pki), "--port", "0")
    telekey_cmd("cert", "client", "--principal", "phone1", "--realm", REALM, "--pki-dir",
                str(pki), "--out-dir", str(out), "--days", "3650")
    for name in ("ca.pem", "kdc.pem", "kdc.key"):
        shutil.copyfile(pki / name, out / name)
    now = datetime.now(UTC)
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(65537, 2048)
    cert = issue_device_certificate(ca, ca_key, key.public_key(), MAC, now,
                                    phone_id_value=phone_id(PHONE), organization=REALM)
    write_private_key(out / "operator.key", key)
    (out / "operator.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    maker_key = rsa.generate_private_key(65537, 2048)
    maker = build_ca(maker_key, "Manufacturer Root", "Manufacturer", now)
    (out / "maker.pem").write_bytes(maker.public_bytes(Encoding.PEM))
    key = rsa.generate_private_key(65537, 2048)
    cert = issue_device_certificate(maker, maker_key, key.public_key(), MAC, now)
    write_private_key(out / "factory.key", key)
    (out / "factory.pem").write_bytes(cert.public_bytes(Encoding.PEM))


def capture(out: Path, kdc_source: Path | None = None) -> dict[str, object]:
    """Run every CAPTURE_CASES login through a KdcRecorder in front of a telekey KDC that uses
    the fixture PKI in `out` (made first if absent); save each AS-REQ as asreq_<case>.der and
    what happened as capture.json. `kdc_source`: run the KDC from that source tree (e.g. an
    older commit's `git archive`) rather than this one."""
    import tempfile

    from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config

    peer = ensure_heimdal()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="telekey-heimdal-capture-") as tmp:
        work = Path(tmp)
        if not (out / "ca.pem").exists():
            make_fixture_pki(out, work)
        db = f"sqlite:///{work}/kdc.db"
        telekey_cmd("realm", "init", "--realm", REALM, "--db", db)
        telekey_cmd("principal", "add", "phone1", "--db", db)
        telekey_cmd("customer", "add", "--number", PHONE, "--mac", MAC, "--db", db)
        kdc_key = work / "kdc.key"  # the KDC refuses a key file others can read
        kdc_key.touch(mode=0o600)
        kdc_key.write_bytes((out / "kdc.key").read_bytes())
        config = write_kdc_config(work, realm=REALM, db_url=db, cert=out / "kdc.pem",
                                  key=kdc_key, anchors=[out / "ca.pem"],
                                  manufacturer_anchor_files=[str(out / "maker.pem")])
        if kdc_source is None:
            kdc = start_kdc(config, work / "kdc.log")
        else:  # `python -m` puts its working directory first on sys.path, then PYTHONPATH
            saved, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
            os.environ["PYTHONPATH"] = str(kdc_source.resolve())
            os.chdir(kdc_source)
            try:
                kdc = start_kdc(config, work / "kdc.log")
            finally:
                os.chdir(cwd)
                os.environ.pop("PYTHONPATH")
                if saved is not None:
                    os.environ["PYTHONPATH"] = saved
        recorder = KdcRecorder(kdc.port)
        cases: dict[str, object] = {}
        try:
            with heimdal_client(peer, realm=REALM, port=recorder.port,
                                anchors=[out / "ca.pem", out / "maker.pem"]) as client:
                for name in ("phone1", "operator", "factory"):
                    client.add_identity(name, out / f"{name}.pem", out / f"{name}.key")
                for case, (who, principal, transport, rsa, bits) in CAPTURE_CASES.items():
                    before = len(recorder.requests)
                    seen = len([e for e in kdc.log_events() if e.get("event") == "as_req"])
                    result = client.kinit(principal, client.identities[who],
                                          transport=transport, rsa=rsa, dh_min_bits=bits)
                    time.sleep(0.2)  # the KDC's log line follows its reply
                    sent = recorder.requests[before:]
                    files = []
                    for i, (_, data) in enumerate(sent):
                        name = f"asreq_{case}{'' if i == 0 else f'_{i + 1}'}.der"
                        (out / name).write_bytes(data)
                        files.append(name)
                    kdc_lines = [e for e in kdc.log_events()
                                 if e.get("event") == "as_req"][seen:]
                    cases[case] = {
                        "kinit": " ".join(result.argv), "identity": who,
                        "transport": transport, "mode": "RSA" if rsa else "DH",
                        "pkinit_dh_min_bits": bits, "requests": files,
                        "kinit_exit": result.returncode, "kinit_output": result.output,
                        "kdc": [{k: e.get(k) for k in ("transport", "status", "code")}
                                for e in kdc_lines]}
        finally:
            recorder.close()
            kdc.stop()
    summary: dict[str, object] = {
        "heimdal_clients": peer.version, "suite": SUITE,
        "captured": datetime.now(UTC).isoformat(timespec="seconds"),
        "kdc_source": str(kdc_source or Path(__file__).parent.parent), "cases": cases}
    (out / "capture.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.heimdal")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the chroot (or report the cached one)")
    record = commands.add_parser("capture", help="record Heimdal's AS-REQs as fixtures")
    record.add_argument("out", type=Path, nargs="?",
                        default=Path(__file__).parent / "interop" / "heimdal")
    record.add_argument("--kdc-source", type=Path, help="run the KDC from this source tree")
    args = parser.parse_args(argv)
    if args.command == "build":
        peer = ensure_heimdal()
        took = f"built in {peer.build_seconds:.0f} s" if peer.build_seconds else "cached"
        print(f"{peer.root}: heimdal-clients {peer.version} ({took})")
    else:
        print(json.dumps(capture(args.out, args.kdc_source), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
