"""A full `telekey lab` run leaves no secret where it should not be (STYLE.md §6: never log
keys).

The lab runs once (the session's run, tests/e2e/conftest.py). The test then gathers every
secret the lab made, from the files that hold them on purpose:
- every key in every keytab (the controllers', the echo server's, MIT's krbtgt export, the
  keytab telekey derives for MIT; MIT's master key stash is a keytab too);
- the session key of every credential in every credential cache;
- the ESP SA keys in the `esp_sa` key logs (Wireshark UAT records);
- the device tokens' PINs (`<device>/pin`, written by `telekey cta manufacture`) and any
  `*pin_file` a settings file names;
- every PEM private key: its DER and its private numbers (the escrow authority's X25519 key
  among them);
- telekey's master key stashes (`kdc.db.stash`: master keys and their KEKs) and, unwrapped with
  those KEKs, every principal key in the KDC databases;
- the SRTP master keys and salts of every escrowed call (the records opened with the escrow
  private key, read-only: no access is recorded);
- the password the lab gives MIT's kdb5_util for its master key.

It then searches every other file in the work directory (logs, settings, databases, WAL files,
recordings...), a dump of every SQLite database (iterdump of a copy) and the lab's captured
stdout and stderr for each secret of at least 8 bytes: raw, hex in either case, and base64
(standard and URL-safe, with and without padding, at each alignment inside a longer blob).
A PEM private key outside the artifacts is a hit by itself. Zero hits is the assertion; a hit
names the secret's origin, the form and the file, never the secret.

Not searched: the output of the commands the lab runs with their output captured and then
dropped (`telekey realm init`, `principal ktadd`, `escrow open`...): it reaches no file.
"""

import base64
import binascii
import csv
import io
import json
import shutil
import sqlite3
import tempfile
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x448
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from common.calls.escrow import open_sealed
from common.crypto.master_key import derive_kek, unwrap_key
from common.errors import KerberosError, MalformedMessage, MasterKeyIntegrityError
from common.kerberos.ccache import decode_ccache
from common.kerberos.keytab import decode_keytab

MIN_SECRET_BYTES = 8

# The lab's deliberate artifacts: files that hold secrets on purpose, so they are sources of
# secrets and are not searched. Matched (fnmatch, `*` crosses `/`) against the path relative
# to the work directory and against the file name.
ARTIFACTS: tuple[tuple[str, str], ...] = (
    ("*.keytab", "keytabs hold long-term keys by design (ktadd, kadmin ktadd, telekey's own)"),
    ("stash", "MIT's master key stash (kdb5_util create -s): a keytab holding K/M"),
    ("*.stash", "telekey's master key stash: every master key in plaintext (labs only)"),
    ("esp_sa", "the Wireshark ESP key log the lab hands to tshark to decrypt its captures"),
    ("pin", "a device token's user PIN file (mode 0600), read by the device agent"),
    ("*/tokens/*", "SoftHSM2 token objects: the device's keys, encrypted under its PIN"),
    ("*.key", "PEM private keys: CAs, the KDC, phone1, provisioning, the escrow authority"),
    ("ccache", "credential caches hold session keys by design (devices, MIT's kinit)"),
    ("*.ccache", "credential caches written by MIT's kinit and by telekey"),
    ("*.pcap", "captures: ciphertext only, which tshark decrypts on purpose with esp_sa"),
)

SQLITE_MAGIC = b"SQLite format 3\x00"
KEYTAB_MAGIC = (b"\x05\x01", b"\x05\x02")
CCACHE_MAGIC = (b"\x05\x03", b"\x05\x04")
# mit_realm.py:start_mit_realm gives it to `kdb5_util create -P`.
MIT_MASTER_PASSWORD = b"master-password"


def is_artifact(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch(relative, pattern) or fnmatch(name, pattern)
               for pattern, _ in ARTIFACTS)


@dataclass
class Secrets:
    """Each secret's bytes and where it came from (origins never contain the secret)."""

    origins: dict[bytes, list[str]] = field(default_factory=lambda: defaultdict(list))
    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    integers: set[bytes] = field(default_factory=set)

    def add(self, kind: str, value: bytes, origin: str, *, integer: bool = False) -> None:
        self.kinds[kind] += 1
        if origin not in self.origins[value]:
            self.origins[value].append(origin)
        if integer:
            self.integers.add(value)

    def searchable(self) -> dict[bytes, list[str]]:
        return {v: o for v, o in self.origins.items() if len(v) >= MIN_SECRET_BYTES}


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path.relative_to(root).as_posix(), path


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _private_numbers(key: object) -> Iterator[tuple[str, int]]:
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        yield from (("d", numbers.d), ("p", numbers.p), ("q", numbers.q),
                    ("dmp1", numbers.dmp1), ("dmq1", numbers.dmq1), ("iqmp", numbers.iqmp))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        yield "private_value", key.private_numbers().private_value


def _raw_private(key: object) -> bytes | None:
    if isinstance(key, X25519PrivateKey | x448.X448PrivateKey | ed25519.Ed25519PrivateKey |
                  ed448.Ed448PrivateKey):
        return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return None


def _sqlite_copy(path: Path, into: Path) -> sqlite3.Connection:
    """A connection to a copy of the database (with its WAL): reading never touches the lab's
    files, and the copy sees what the WAL holds."""
    target = into / path.name
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            shutil.copyfile(source, target.with_name(target.name + suffix))
    return sqlite3.connect(target)


def _blobs(conn: sqlite3.Connection) -> Iterator[tuple[str, bytes]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            for value in row:
                if isinstance(value, bytes):
                    yield table, value


def _keytab(secrets: Secrets, relative: str, data: bytes) -> None:
    try:
        entries = decode_keytab(data)
    except MalformedMessage:
        return
    for entry in entries:
        secrets.add("keytab key", entry.key, f"keytab {relative}: {entry.principal} "
                    f"kvno {entry.kvno} enctype {entry.enctype}")


def _ccache(secrets: Secrets, relative: str, data: bytes) -> None:
    try:
        credentials = decode_ccache(data).credentials
    except MalformedMessage:
        return
    for credential in credentials:
        if not credential.is_config:
            secrets.add("ccache session key", credential.key, f"session key in ccache "
                        f"{relative}: {credential.client} -> {credential.server}")


def _esp_sa(secrets: Secrets, relative: str, data: bytes) -> None:
    """Wireshark esp_sa records (common/pktc/esp.py:wireshark_esp_sa): GCM keys carry their
    4-byte salt appended."""
    for number, fields in enumerate(csv.reader(io.StringIO(data.decode())), 1):
        spi, encryption = fields[3], fields[4]
        for label, value in (("encryption key (+salt)", fields[5]), ("integrity key", fields[7])):
            if value.startswith("0x"):
                secret = bytes.fromhex(value[2:])
                origin = f"ESP SA {spi} {label} ({relative} line {number})"
                secrets.add("ESP SA key", secret, origin)
                if label.startswith("encryption") and "GCM" in encryption:
                    secrets.add("ESP SA key", secret[:-4], origin + " without salt")


def _pin(secrets: Secrets, data: bytes, origin: str) -> None:
    pin = data.strip()
    secrets.add("PIN", pin, origin)
    try:
        # cta manufacture writes secrets.token_hex(16): the 16 bytes are a secret too.
        secrets.add("PIN", bytes.fromhex(pin.decode()), origin + " (as bytes)")
    except ValueError:
        pass


def _pin_files_named(secrets: Secrets, relative: str, data: bytes) -> None:
    """PIN files a settings file names (`pkcs11_pin_file`...), wherever they are."""
    for section in tomllib.loads(data.decode()).values():
        for option, value in (section.items() if isinstance(section, dict) else ()):
            if option.endswith("pin_file") and value and Path(value).is_file():
                _pin(secrets, Path(value).read_bytes(), f"PIN file named by {option} in "
                     f"{relative}")


def _private_key(secrets: Secrets, relative: str, data: bytes) -> object:
    private = load_pem_private_key(data, None)
    kind = "escrow private key" if isinstance(private, X25519PrivateKey) else "private key"
    secrets.add(kind, private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()),
                f"{kind} {relative} (PKCS#8 DER)")
    for number, value in _private_numbers(private):
        secrets.add(kind, _int_bytes(value), f"{kind} {relative} (private number {number})",
                    integer=True)
    if (raw := _raw_private(private)) is not None:
        secrets.add(kind, raw, f"{kind} {relative} (raw private bytes)")
    return private


def _stash(secrets: Secrets, relative: str, data: bytes) -> list[tuple[str, bytes]]:
    """telekey's stash (common/crypto/master_key.py:encode_stash, JSON with base64 keys): each
    master key and its KEK; the raw bytes if it is not that format. Returns the KEKs."""
    try:
        stashed = {int(k["mkvno"]): base64.b64decode(k["key"], validate=True)
                   for k in json.loads(data)["keys"]}
    except (ValueError, KeyError, TypeError, binascii.Error):
        secrets.add("master key stash", data, f"master key stash {relative} (raw)")
        return []
    keks = []
    for mkvno, master_key in stashed.items():
        secrets.add("master key", master_key, f"master key {mkvno} in {relative}")
        kek = derive_kek(master_key)
        secrets.add("master key", kek, f"KEK of master key {mkvno} in {relative}")
        keks.append((f"{relative} mkvno {mkvno}", kek))
    return keks


def _database(secrets: Secrets, relative: str, conn: sqlite3.Connection,
              keks: list[tuple[str, bytes]], escrow_keys: list[X25519PrivateKey]) -> None:
    """Every blob that unwraps under a stash's KEK (the KDC's principal keys), and the SRTP
    keys of every escrow record the escrow private key opens."""
    for table, blob in _blobs(conn):
        for kek_origin, kek in keks:
            try:
                key = unwrap_key(kek, blob)
            except MasterKeyIntegrityError:
                continue
            secrets.add("database key", key, f"key in {relative} table {table}, unwrapped "
                        f"with {kek_origin}")
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='escrow_records'").fetchone():
        return
    for call_id, sealed in conn.execute("SELECT call_id, sealed FROM escrow_records"):
        for private in escrow_keys:
            try:
                record = json.loads(open_sealed(bytes(sealed), private, call_id))
            except KerberosError:
                continue
            for direction in ("caller_to_callee", "callee_to_caller"):
                for part in ("key", "salt"):
                    secrets.add("SRTP master key", bytes.fromhex(record[direction][part]),
                                f"SRTP master {part} {direction} of call {call_id} (escrow "
                                f"{relative})")


def collect_secrets(root: Path, scratch: Path) -> Secrets:
    """Every secret the lab made, read from its deliberate artifacts (module docstring)."""
    secrets = Secrets()
    escrow_keys: list[X25519PrivateKey] = []
    keks: list[tuple[str, bytes]] = []
    databases: list[tuple[str, Path]] = []
    for relative, path in _files(root):
        data = path.read_bytes()
        if data[:2] in KEYTAB_MAGIC:
            _keytab(secrets, relative, data)
        if data[:2] in CCACHE_MAGIC:
            _ccache(secrets, relative, data)
        if path.name == "esp_sa":
            _esp_sa(secrets, relative, data)
        if path.name == "pin":
            _pin(secrets, data, f"token PIN {relative}")
        if path.suffix == ".toml":
            _pin_files_named(secrets, relative, data)
        if b"PRIVATE KEY-----" in data:
            private = _private_key(secrets, relative, data)
            if isinstance(private, X25519PrivateKey):
                escrow_keys.append(private)
        if path.suffix == ".stash":
            keks += _stash(secrets, relative, data)
        if data.startswith(SQLITE_MAGIC):
            databases.append((relative, path))
    secrets.add("lab password", MIT_MASTER_PASSWORD, "MIT master password (mit_realm.py)")
    # The databases last: they need every stash's KEKs and the escrow private key.
    for relative, path in databases:
        with tempfile.TemporaryDirectory(dir=scratch) as into:
            conn = _sqlite_copy(path, Path(into))
            try:
                _database(secrets, relative, conn, keks, escrow_keys)
            finally:
                conn.close()
    return secrets


def _base64_forms(secret: bytes) -> Iterator[tuple[str, bytes]]:
    """The base64 forms of `secret`, also where it starts at offset 1 or 2 of a 3-byte group
    inside a longer blob (then only the characters the secret alone decides)."""
    for shift in (0, 1, 2):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            encoded = encode(b"\0" * shift + secret)
            if shift == 0:
                yield name, encoded
                yield f"{name} unpadded", encoded.rstrip(b"=")
            whole = 4 * ((shift + len(secret)) // 3)
            core = encoded[4 if shift else 0 : whole]
            if len(core) >= 8:
                yield f"{name} inside a blob (alignment {shift})", core


def forms(secret: bytes, *, integer: bool = False) -> dict[bytes, str]:
    """Every encoding searched for: pattern -> form name (first name wins on a tie)."""
    found: dict[bytes, str] = {}
    candidates = [("raw bytes", secret), ("lowercase hex", secret.hex().encode()),
                  ("uppercase hex", secret.hex().upper().encode()), *_base64_forms(secret)]
    if integer:
        candidates.append(("decimal", str(int.from_bytes(secret, "big")).encode()))
    for name, pattern in candidates:
        found.setdefault(pattern, name)
    return found


@dataclass(frozen=True)
class Leak:
    origin: str
    form: str
    where: str

    def __str__(self) -> str:
        return f"{self.origin} found as {self.form} in {self.where}"


def _place(where: str, data: bytes, pattern: bytes) -> str:
    line = data.count(b"\n", 0, data.find(pattern)) + 1
    return f"{where} line {line}"


def find_leaks(secrets: Secrets, haystacks: dict[str, bytes]) -> list[Leak]:
    """One Leak per secret and place it appears in, with every form it appears as; and one
    per place holding a PEM private key (any, not only the lab's)."""
    leaks = [Leak("a PEM private key", "PEM", _place(where, data, b"PRIVATE KEY-----"))
             for where, data in haystacks.items() if b"PRIVATE KEY-----" in data]
    for secret, origins in secrets.searchable().items():
        patterns = forms(secret, integer=secret in secrets.integers)
        for where, data in haystacks.items():
            found = [(p, form) for p, form in patterns.items() if p in data]
            if found:
                leaks.append(Leak("; ".join(origins), ", ".join(f for _, f in found),
                                  _place(where, data, found[0][0])))
    return leaks


def haystacks(root: Path, scratch: Path, captured: dict[str, Path]) -> dict[str, bytes]:
    """What is searched: every file but the deliberate artifacts, a dump of each SQLite
    database, and the captured output."""
    found = {f"captured {name}": path.read_bytes() for name, path in captured.items()}
    for relative, path in _files(root):
        if is_artifact(relative):
            continue
        data = path.read_bytes()
        found[relative] = data
        if data.startswith(SQLITE_MAGIC):
            with tempfile.TemporaryDirectory(dir=scratch) as into:
                conn = _sqlite_copy(path, Path(into))
                try:
                    found[f"{relative} (iterdump)"] = "\n".join(conn.iterdump()).encode()
                finally:
                    conn.close()
    return found


def test_scanner_finds_every_form(tmp_path):
    """The search itself: a planted secret is found in each form, and named without its
    bytes; artifacts are skipped."""
    secret = bytes(range(200, 232))
    secrets = Secrets()
    secrets.add("test", secret, "planted test secret")
    plants = dict(forms(secret))
    plants[base64.b64encode(b"prefix" + secret + b"suffix")] = "base64 inside a blob"
    plants[base64.b64encode(b"prefi" + secret + b"suffix")] = "base64 inside a blob"
    plants[base64.urlsafe_b64encode(b"pref" + secret)] = "base64url inside a blob"
    for number, pattern in enumerate(plants):
        (tmp_path / f"{number}.log").write_bytes(b"before\n" + pattern + b"\nafter")
    (tmp_path / "esp_sa").write_bytes(secret.hex().encode())
    (tmp_path / "key.log").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    leaks = find_leaks(secrets, haystacks(tmp_path, tmp_path, {}))
    assert [leak.where for leak in leaks if leak.form == "PEM"] == ["key.log line 1"]
    leaks = [leak for leak in leaks if leak.form != "PEM"]
    assert {leak.where.split()[0] for leak in leaks} == {f"{n}.log" for n in range(len(plants))}
    assert all(leak.where.endswith("line 2") for leak in leaks)
    assert not any(secret.hex() in str(leak) or secret.hex().upper() in str(leak)
                   for leak in leaks)


@pytest.mark.e2e
def test_lab_leaves_no_secret_outside_its_artifacts(lab_run, tmp_path):
    assert lab_run.returncode == 0, f"the lab failed: {lab_run.stderr[-3000:]}"
    secrets = collect_secrets(lab_run.workdir, tmp_path)
    # The sources were found (the test cannot pass by finding no secret).
    for kind, at_least in (("keytab key", 10), ("ccache session key", 8), ("ESP SA key", 20),
                           ("PIN", 6), ("private key", 8), ("escrow private key", 1),
                           ("SRTP master key", 12), ("lab password", 1)):
        assert secrets.kinds[kind] >= at_least, (kind, dict(secrets.kinds))
    if any(path.suffix == ".stash" for _, path in _files(lab_run.workdir)):
        assert secrets.kinds["master key"] and secrets.kinds["database key"], dict(secrets.kinds)
    searched = haystacks(lab_run.workdir, tmp_path, {"lab stdout": lab_run.stdout_file,
                                                      "lab stderr": lab_run.stderr_file})
    assert any(name.endswith(".log") for name in searched)
    assert any(name.endswith("(iterdump)") for name in searched)
    leaks = find_leaks(secrets, searched)
    assert not leaks, "secrets outside the lab's artifacts:\n" + "\n".join(map(str, leaks))
